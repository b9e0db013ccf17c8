"""Modes of what the server keeps: the data dir is `0700`, and every file in it that holds
state or secrets (the database and its WAL and shared-memory files, the engine lock,
tokens) is `0600`, so only the server's user can read them.

Modes are given explicitly rather than by setting the process's umask, which the steps'
processes would inherit. A data dir or database made by an older flwd, or by hand, with
wider modes is narrowed at start-up when the server's user owns it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private_dir(path: Path) -> None:
    """Create the directory `path` (missing parents with the usual modes) as `0700`, or
    narrow an existing one to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=PRIVATE_DIR)
    narrow(path, PRIVATE_DIR)


def make_private_file(path: Path) -> None:
    """Create the file `path` as `0600` if it does not exist, or narrow it to that."""
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))
    narrow(path, PRIVATE_FILE)


def narrow(path: Path, mode: int) -> None:
    """Take away the permission bits of `path` that `mode` does not have, if it exists and
    the server's user owns it (another owner's file is the operator's business)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    current = stat.S_IMODE(info.st_mode)
    if info.st_uid == os.geteuid() and current & ~mode:
        os.chmod(path, current & mode)
