"""Finding, signalling and reaping the processes of a run.

A step runs as the leader of its own session and process group, so one `killpg` reaches
everything it spawned. Processes that left the group (a `setsid` daemon) still carry the
run's `FLWD_RUN_ID` in their environment, which is how they are found afterwards and after
a crash. "Gone" means no process that is not a zombie: zombies hold no resources and are
reaped by their parent (init, or `tini` in the container image).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)
_PROC = Path("/proc")


def _stat_fields(pid: str) -> tuple[str, int] | None:
    """(state, pgrp) of a process from /proc, or None if it vanished."""
    try:
        raw = (_PROC / pid / "stat").read_bytes()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    rest = raw[raw.rfind(b")") + 2 :].split()
    return rest[0].decode(), int(rest[2])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    members = []
    for entry in os.listdir(_PROC):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and fields[1] == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def run_processes(run_id: str) -> list[int]:
    """Live processes whose environment carries `FLWD_RUN_ID=<run_id>`."""
    needle = f"FLWD_RUN_ID={run_id}\0".encode()
    found = []
    me = os.getpid()
    for entry in os.listdir(_PROC):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            environ = (_PROC / entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ:
            fields = _stat_fields(entry)
            if fields is not None and fields[0] != "Z":
                found.append(int(entry))
    return found


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


async def _wait_until(probe: _Probe, deadline: float) -> bool:
    delay = 0.005
    while True:
        if not probe():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


class _Probe:
    def __init__(self, pgid: int | None, run_id: str | None) -> None:
        self.pgid = pgid
        self.run_id = run_id

    def __call__(self) -> list[int]:
        pids = group_members(self.pgid) if self.pgid is not None else []
        if self.run_id is not None:
            pids = sorted(set(pids) | set(run_processes(self.run_id)))
        return pids


async def terminate(pgid: int | None, *, run_id: str | None = None, grace: float) -> bool:
    """SIGTERM the group (and stray processes of `run_id`), wait up to `grace` seconds,
    then SIGKILL whatever is left and wait until nothing is. True if everything is gone."""
    probe = _Probe(pgid, run_id)
    pids = probe()
    if not pids:
        return True
    if pgid is not None:
        _signal_group(pgid, signal.SIGTERM)
    _signal_pids(pids, signal.SIGTERM)
    if await _wait_until(probe, time.monotonic() + grace):
        return True
    for _ in range(3):  # a fork between probe and kill can add a process: repeat
        left = probe()
        if pgid is not None:
            _signal_group(pgid, signal.SIGKILL)
        _signal_pids(left, signal.SIGKILL)
        if await _wait_until(probe, time.monotonic() + 2.0):
            return True
    survivors = probe()
    log.error("processes %s of run %s survived SIGKILL", survivors, run_id)
    return not survivors
