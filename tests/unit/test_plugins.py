"""Extension points take effect: built-ins are plugins, hooks reach the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flwd.engine.executor import StepContext
from flwd.engine.service import RunService
from flwd.hookspecs import hookimpl
from flwd.jobs.registry import JobRegistry
from flwd.models import Event
from flwd.plugins import BUILTIN_PLUGINS, extension_names, make_plugin_manager
from flwd.settings import JobSource, Settings
from flwd.states import RunStatus


class Recorder:
    """An extension that wraps every step and records every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.contexts: list[StepContext] = []

    @hookimpl
    def prepare_step(self, context: StepContext) -> None:
        self.contexts.append(context)
        context.env["WRAPPED_BY"] = "recorder"
        context.argv[:0] = ["/usr/bin/env", "EXTRA=from-argv"]

    @hookimpl
    def run_event(self, event: Event) -> None:
        self.events.append(event)


def test_builtins_are_registered_and_not_reported_as_extensions() -> None:
    pm = make_plugin_manager(load_entrypoints=False, extra=[Recorder()])
    names = {name for name, _ in pm.list_name_plugin()}
    assert set(BUILTIN_PLUGINS) <= names
    assert len(extension_names(pm)) == 1


def test_misspelled_hook_fails_at_start_up() -> None:
    class Typo:
        @hookimpl
        def run_evnt(self, event: Any) -> None:
            pass

    with pytest.raises(Exception, match="run_evnt"):
        make_plugin_manager(load_entrypoints=False, extra=[Typo()])


async def test_prepare_step_and_run_event_reach_the_engine(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "probe"
    job.mkdir(parents=True)
    (job / "config.yaml").write_text('command: echo "$WRAPPED_BY $EXTRA"\n')
    settings = Settings(
        sources=(JobSource(name="local-fs", path=str(tmp_path / "jobs")),),
        data_dir=str(tmp_path / "data"),
        watch=False,
    )
    recorder = Recorder()
    pm = make_plugin_manager(load_entrypoints=False, extra=[recorder])
    async with RunService(settings, JobRegistry(settings, pm), pm) as service:
        run = await service.create_run("probe", {})
        finished = await service.wait_run(run.run_id, timeout=20)
        logs = await service.read_logs(run.run_id)
    assert finished.status is RunStatus.SUCCESS
    assert [line.message for line in logs] == ["recorder from-argv"]
    assert recorder.contexts[0].job.id == "probe" and recorder.contexts[0].attempt == 0
    types = [e.type for e in recorder.events]
    assert types[0] == "run.created" and types[-1] == "run.finished"
    assert "run.output" in types and "step.finished" in types
    ids = [e.id for e in recorder.events]
    assert ids == sorted(set(ids)), "run_event must see every event once, in id order"
