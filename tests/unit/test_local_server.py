"""`server.json`: written 0600 and atomically, found while its process lives, ignored
when that process is gone or its pid now belongs to another process."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flwd.client import ServerInfo, find_local_server
from flwd.local_server import (
    SERVER_FILE,
    process_start_ticks,
    remove_server_file,
    write_server_file,
)


def info(pid: int, **extra: object) -> ServerInfo:
    return ServerInfo(
        url="http://127.0.0.1:8080",
        pid=pid,
        started_at=datetime.now(UTC),
        version="0.1.0",
        **extra,  # type: ignore[arg-type]
    )


def test_written_owner_only_and_found_while_the_process_lives(tmp_path: Path) -> None:
    me = info(os.getpid(), process_start=process_start_ticks(os.getpid()))
    path = write_server_file(tmp_path / "data", me)
    assert path == tmp_path / "data" / SERVER_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == [SERVER_FILE]  # no temp file left
    assert find_local_server(tmp_path / "data") == me
    remove_server_file(tmp_path / "data", pid=os.getpid() + 1)  # not ours: kept
    assert path.exists()
    remove_server_file(tmp_path / "data", pid=os.getpid())
    assert not path.exists() and find_local_server(tmp_path / "data") is None


def test_a_dead_pid_is_no_server(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process now
    write_server_file(tmp_path, info(child.pid))
    assert find_local_server(tmp_path) is None


@pytest.mark.skipif(process_start_ticks(os.getpid()) is None, reason="needs /proc")
def test_a_reused_pid_is_no_server(tmp_path: Path) -> None:
    ticks = process_start_ticks(os.getpid())
    assert ticks is not None
    write_server_file(tmp_path, info(os.getpid(), process_start=ticks + 1))
    assert find_local_server(tmp_path) is None


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"url": "x"}', b"[]"])
def test_an_unreadable_file_is_no_server(tmp_path: Path, content: bytes) -> None:
    (tmp_path / SERVER_FILE).write_bytes(content)
    assert find_local_server(tmp_path) is None
    assert find_local_server(tmp_path / "missing") is None


def test_the_token_file_is_read_when_named(tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("s3cr3t\n")
    assert info(os.getpid(), token_file=str(token)).read_token() == "s3cr3t"
    assert info(os.getpid(), token_file=str(tmp_path / "gone")).read_token() is None
    assert info(os.getpid()).read_token() is None
