"""Extension points take effect: built-ins are plugins, hooks reach the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flwd.engine.service import RunService
from flwd.engine.step_process import StepContext
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


def _installed_extension(root: Path) -> Path:
    """An extension as pip would install it: a module plus a dist-info whose
    entry_points.txt names it in the `flwd` group; it adds a `flwd hello` command."""
    (root / "flwd_hello_ext.py").write_text(
        "import click\n"
        "from flwd.hookspecs import hookimpl\n\n"
        "@click.command('hello')\n"
        "def hello() -> None:\n"
        "    click.echo('hello from an extension')\n\n"
        "@hookimpl\n"
        "def register_commands(cli):\n"
        "    cli.add_command(hello)\n"
    )
    info = root / "flwd_hello_ext-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flwd-hello-ext\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[flwd]\nhello = flwd_hello_ext\n")
    return root


def test_an_installed_extension_is_loaded_from_the_entry_point_group(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(_installed_extension(tmp_path))}
    listed = subprocess.run(
        [sys.executable, "-m", "flwd", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["hello"] == {"name": "hello", "builtin": False, "hooks": ["register_commands"]}
    hello = subprocess.run(
        [sys.executable, "-m", "flwd", "hello"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (hello.returncode, hello.stdout) == (0, "hello from an extension\n")
