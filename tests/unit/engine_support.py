"""Helpers of the engine's tests; the fixtures are in `conftest_engine.py`.

Everything here is real: job folders written to `tmp_path` and loaded by the real
`JobRegistry`, a real `RunService` over a SQLite data dir, real processes. The only
processes a test ever signals are ones it started: job processes are recognised by the
`FLWD_RUN_DIR` in their environment, which points inside the test's own data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flwd.engine.service import RunService
from flwd.jobs.registry import JobRegistry
from flwd.models import Event, Run
from flwd.plugins import make_plugin_manager
from flwd.settings import JobSource, Settings
from flwd.states import TERMINAL_RUN

PROC = Path("/proc")


def process_state(pid: int) -> str | None:
    """The one-letter state of `pid` from /proc, or None when it no longer exists."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()[0].decode()


def pgid_of(pid: int) -> int | None:
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    return int(raw[raw.rfind(b")") + 2 :].split()[2])


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie holds nothing and runs nothing)."""
    state = process_state(pid)
    return state is not None and state != "Z"


def environ_of(pid: int) -> bytes:
    try:
        return (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return b""


def processes_with_env(needle: str) -> list[int]:
    """Live processes (not this one) whose environment contains `needle` (`NAME=value`)."""
    wanted = needle.encode()
    found = []
    for entry in os.listdir(PROC):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        environ = environ_of(int(entry))
        if any(item.startswith(wanted) for item in environ.split(b"\0")) and alive(int(entry)):
            found.append(int(entry))
    return found


def run_processes(run_id: str) -> list[int]:
    """Live processes of a run, found the way an operator would: by `FLWD_RUN_ID`."""
    return [
        pid
        for pid in processes_with_env("FLWD_RUN_ID=")
        if f"FLWD_RUN_ID={run_id}".encode() in environ_of(pid).split(b"\0")
    ]


async def wait_for(
    probe: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `probe` (sync or async) until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or probe}")
        await asyncio.sleep(interval)


async def read_pids(path: Path, count: int = 1, *, timeout: float = 5.0) -> list[int]:
    """PIDs a job wrote to `path`, one per line, once `count` of them are there."""

    def probe() -> list[int] | None:
        try:
            lines = path.read_text().split()
        except FileNotFoundError:
            return None
        pids = [int(x) for x in lines if x.strip().isdigit()]
        return pids if len(pids) >= count else None

    return list(await wait_for(probe, timeout=timeout, what=f"{count} pids in {path}"))


class EngineWorld:
    """A job source directory and a data dir under one test's `tmp_path`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs_dir = root / "jobs"
        self.data_dir = root / "data"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.pm = make_plugin_manager(load_entrypoints=False)

    def job(
        self, job_id: str, config: dict[str, Any], files: dict[str, str | bytes] | None = None
    ) -> Path:
        """Write a job folder: `config.yaml` from `config`, plus executable `files`."""
        folder = self.jobs_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        for name, content in (files or {}).items():
            path = folder / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
            path.chmod(0o755)
        return folder

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "sources": (JobSource(name="local-fs", path=str(self.jobs_dir)),),
            "kill_grace": 0.5,
            "watch": False,
        }
        values.update(overrides)
        return Settings(**values)

    def registry(self, settings: Settings) -> JobRegistry:
        registry = JobRegistry(settings, self.pm)
        if registry.catalog.invalid:
            reasons = [(i.id, [d.reason for d in i.diagnostics]) for i in registry.catalog.invalid]
            raise AssertionError(f"test job folders are invalid: {reasons}")
        return registry

    def service(self, **overrides: Any) -> RunService:
        settings = self.settings(**overrides)
        return RunService(settings, self.registry(settings), self.pm)

    @contextlib.asynccontextmanager
    async def open(self, **overrides: Any) -> AsyncIterator[RunService]:
        async with self.service(**overrides) as service:
            yield service

    def processes(self) -> list[int]:
        """Every live job process this test started (their run dir is in our data dir)."""
        return processes_with_env(f"FLWD_RUN_DIR={self.data_dir}")

    def kill_leftovers(self) -> list[int]:
        left = self.processes()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return left

    def data_files(self) -> Iterator[Path]:
        for path in sorted(self.data_dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield path


async def finish(service: RunService, run: Run | str, timeout: float = 8.0) -> Run:
    """Wait for a run to be terminal (failing the test, not hanging, if it never is)."""
    run_id = run if isinstance(run, str) else run.run_id
    done = await service.wait_run(run_id, timeout)
    assert done.status in TERMINAL_RUN, f"run {run_id} still {done.status} after {timeout}s"
    return done


async def run_job(
    service: RunService, job_id: str, args: dict[str, Any] | None = None, timeout: float = 8.0
) -> Run:
    return await finish(service, await service.create_run(job_id, args), timeout)


async def events_of(service: RunService, run_id: str) -> list[Event]:
    return await service.journal.read(run_id=run_id, limit=1_000_000)


def output_lines(events: list[Event]) -> list[str]:
    return [e.data["message"] for e in events if e.type == "run.output"]
