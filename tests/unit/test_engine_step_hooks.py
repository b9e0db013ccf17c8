"""What a `prepare_step` hook can say besides argv and env: how the process is started
(`spawn_options`), lines for the run's log (`notes`), which failures were a limit being
hit (`limit_exceeded`), and that a step must not start (`StepRefused`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flwd.engine.service import RunService
from flwd.engine.spawn import SpawnOptions, options_supported
from flwd.engine.step_process import StepContext, StepRefused
from flwd.hookspecs import hookimpl
from flwd.jobs.registry import JobRegistry
from flwd.plugins import make_plugin_manager
from flwd.settings import JobSource, Settings
from flwd.states import FailureReason, RunStatus


class Hook:
    @hookimpl
    def prepare_step(self, context: StepContext) -> None:
        if context.job.id == "refused":
            raise StepRefused("not on this server")
        context.notes.append("prepared by the test")
        if context.job.id == "judged":
            context.limit_exceeded = lambda code: "the test's limit" if code == 3 else None
        if context.job.id == "masked":
            context.spawn_options = SpawnOptions(umask=0o077, no_new_privileges=True)


JOBS = {
    "refused": "echo never",
    "judged": "exit 3",
    "other": "exit 4",
    "masked": "umask; grep NoNewPrivs /proc/self/status",
}


async def _run(
    tmp_path: Path, job_id: str
) -> tuple[RunStatus, FailureReason | None, str, list[str]]:
    for name, command in JOBS.items():
        (tmp_path / "jobs" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "jobs" / name / "config.yaml").write_text(f"command: {command!r}\n")
    settings = Settings(
        sources=(JobSource(name="local-fs", path=str(tmp_path / "jobs")),),
        data_dir=str(tmp_path / "data"),
        watch=False,
    )
    pm = make_plugin_manager(load_entrypoints=False, extra=[Hook()])
    async with RunService(settings, JobRegistry(settings, pm), pm) as service:
        run = await service.create_run(job_id, {})
        done = await service.wait_run(run.run_id, timeout=30)
        logs = [line.message for line in await service.read_logs(run.run_id)]
    return done.status, done.reason, done.error or "", logs


async def test_a_refused_step_fails_with_its_reason_and_never_starts(tmp_path: Path) -> None:
    status, reason, error, logs = await _run(tmp_path, "refused")
    assert (status, reason) == (RunStatus.FAILED, FailureReason.ERROR)
    assert "not on this server" in error
    assert "never" not in logs


async def test_a_judged_failure_is_a_resource_limit_with_its_message(tmp_path: Path) -> None:
    status, reason, error, logs = await _run(tmp_path, "judged")
    assert (status, reason) == (RunStatus.FAILED, FailureReason.RESOURCE_LIMIT)
    assert "the test's limit (exited with code 3)" in error
    assert logs == ["[flwd: prepared by the test]"]


async def test_a_failure_the_hook_does_not_claim_stays_the_step_s(tmp_path: Path) -> None:
    status, reason, _, _ = await _run(tmp_path, "other")
    assert (status, reason) == (RunStatus.FAILED, FailureReason.EXIT_CODE)


@pytest.mark.skipif(not options_supported()["umask"], reason="needs glibc's posix_spawn")
async def test_spawn_options_reach_the_process(tmp_path: Path) -> None:
    status, _, _, logs = await _run(tmp_path, "masked")
    assert status is RunStatus.SUCCESS
    assert logs[1:] == ["0077", "NoNewPrivs:\t1"]
    server_umask = os.umask(0)
    os.umask(server_umask)
    assert server_umask != 0o077  # the server's own is untouched
