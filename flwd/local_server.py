"""`server.json`: how a running `flwd serve` tells local commands where it listens.

The server writes the file into its data dir once it is listening and removes it on a
clean stop. A command finds it with `find_local_server(data_dir)`; a file left behind by a
server that died (its pid gone, or reused by another process) counts as no server.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import datetime
from pathlib import Path

import msgspec

SERVER_FILE = "server.json"


class ServerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What `server.json` holds. `url` is the server's root (the API is below
    `flwd.API_PREFIX`); `process_start` is the pid's start time in clock ticks since
    boot where the OS tells it (Linux), to tell the server from a later process that
    reuses its pid; `token_file` is where a local client finds a token, when the server
    requires one; `tls_cert` is the certificate of an HTTPS server, which a local client
    trusts as its CA (a self-signed certificate works)."""

    url: str
    pid: int
    started_at: datetime
    version: str
    process_start: int | None = None
    token_file: str | None = None
    tls_cert: str | None = None

    def read_token(self) -> str | None:
        """The token in `token_file`, for a client of this server; None when the server
        names no token file or it cannot be read."""
        if not self.token_file:
            return None
        try:
            return Path(self.token_file).read_text().strip() or None
        except OSError:
            return None


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (Linux `/proc`), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])  # field 22 of stat(5); fields[0] is field 3
    except (IndexError, ValueError):
        return None


def _alive(info: ServerInfo) -> bool:
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if info.process_start is not None:
        current = process_start_ticks(info.pid)
        if current is not None and current != info.process_start:
            return False  # the pid now belongs to another process
    return True


def find_local_server(data_dir: str | os.PathLike[str]) -> ServerInfo | None:
    """The server running on `data_dir`, from its `server.json`; None when there is no
    file, it cannot be read or parsed, or the process that wrote it is gone."""
    try:
        raw = (Path(data_dir) / SERVER_FILE).read_bytes()
        info = msgspec.json.decode(raw, type=ServerInfo)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return info if _alive(info) else None


def write_server_file(data_dir: str | os.PathLike[str], info: ServerInfo) -> Path:
    """Write `server.json` atomically, readable by its owner only (0600)."""
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / SERVER_FILE
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".server-", suffix=".json")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.encode(info))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def remove_server_file(data_dir: str | os.PathLike[str], pid: int) -> None:
    """Remove `server.json` if it is still the one process `pid` wrote."""
    target = Path(data_dir) / SERVER_FILE
    try:
        info = msgspec.json.decode(target.read_bytes(), type=ServerInfo)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return
    if info.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
