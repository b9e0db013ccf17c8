"""`flwd serve` keeps its data dir private: the directory 0700 and the database, its WAL
and shared-memory files and the lock file 0600, whatever the umask it was started with."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.e2e.conftest import ServerProcess


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_server_s_data_dir_is_private(api_own_server: ServerProcess) -> None:
    old_umask = os.umask(0o022)  # the server inherits it
    try:
        api_own_server.start()
    finally:
        os.umask(old_umask)
    with api_own_server.client() as http:
        run = http.post("/runs", json={"job_id": "report", "async": False})
        assert run.status_code in (200, 201), run.text
        assert run.json()["status"] == "success"
    data = api_own_server.data
    assert _mode(data) == 0o700
    for name in ("flwd.db", "flwd.db-wal", "flwd.db-shm", "engine.lock"):
        assert _mode(data / name) == 0o600, name
    assert _mode(data / "work") == 0o700
    blobs = [p for p in (data / "artifacts").rglob("*") if p.is_file()]
    assert blobs and all(_mode(p) == 0o600 for p in blobs)
