"""One engine per data dir: an exclusive lock file, held while the engine (a server, or a
local `flwd run`) is open, because event ids and run slots are allocated in memory.
"""

from __future__ import annotations

import fcntl
import os

from flwd.errors import FlwdError
from flwd.settings import Settings
from flwd.storage.private import PRIVATE_FILE, make_private_dir, narrow


class DataDirBusy(FlwdError):
    """Another flwd engine (a server, or a local `flwd run`) is using this data dir."""


def lock_data_dir(settings: Settings) -> int:
    """Take the data dir's engine lock (held while the returned descriptor is open), or
    raise `DataDirBusy`: one engine — a server or a local `flwd run` — per data dir."""
    make_private_dir(settings.data_path)
    lock = settings.data_path / "engine.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    narrow(lock, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(
            f"another flwd process is using the data dir {settings.data_dir}; "
            "stop it, use another --data-dir, or talk to the server with --server URL"
        ) from None
    return fd
