"""The documentation names every extension point and every CLI command."""

from __future__ import annotations

import inspect
from pathlib import Path

from flwd import hookspecs
from flwd.cli import build_cli

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _hook_names() -> list[str]:
    return [
        name
        for name, value in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(value, "flwd_spec")
    ]


def test_every_hook_is_documented_in_plugins_md() -> None:
    text = (DOCS / "plugins.md").read_text()
    names = _hook_names()
    assert "prepare_step" in names and "run_event" in names
    missing = [name for name in names if f"`{name}(" not in text]
    assert missing == [], f"hooks missing from docs/plugins.md: {missing}"


def test_every_cli_command_is_documented_in_cli_md() -> None:
    text = (DOCS / "cli.md").read_text()
    commands = sorted(build_cli().commands)
    assert {"run", "runs", "logs", "cancel", "artifacts", "jobs", "validate"} <= set(commands)
    missing = [name for name in commands if f"flwd {name}" not in text]
    assert missing == [], f"commands missing from docs/cli.md: {missing}"
