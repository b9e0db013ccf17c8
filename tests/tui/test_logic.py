"""The TUI's pure logic: the form from a JSON Schema, the bounded log window, the DAG
layout, and how `flwd tui` picks its server and token."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from flwd_tui.command import pick_server
from flwd_tui.logwindow import LogWindow, is_marker
from flwd_tui.schema_form import (
    FieldError,
    FieldKind,
    assemble_args,
    form_fields,
    is_missing,
    parse_value,
)
from flwd_tui.screens.run_form import flatten
from flwd_tui.widgets.dag import render_dag, step_depths

from flwd.cli import CliError
from flwd.local_server import ServerInfo
from flwd.models import LogLine, Step
from flwd.states import StepStatus
from tests.tui.fake_api import DEPLOY_SCHEMA

T = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_every_kind_of_property_gets_its_field() -> None:
    fields = {f.pointer: f for f in form_fields(DEPLOY_SCHEMA, ["/password"])}
    assert fields["/target"].kind is FieldKind.STRING and fields["/target"].required
    assert fields["/replicas"].kind is FieldKind.INTEGER
    assert fields["/replicas"].bounds == "[1, 10]" and fields["/replicas"].initial_text() == "2"
    assert fields["/ratio"].bounds == "(0, 1]"
    assert fields["/dry_run"].kind is FieldKind.BOOLEAN and fields["/dry_run"].default is True
    assert fields["/mode"].kind is FieldKind.ENUM
    assert fields["/mode"].options == ("rolling", "blue-green", "recreate")
    assert fields["/tags"].kind is FieldKind.ARRAY and fields["/tags"].initial_text() == "web\neu"
    db = fields["/db"]
    assert db.kind is FieldKind.OBJECT
    assert [(c.pointer, c.required) for c in db.children] == [
        ("/db/host", True),
        ("/db/port", False),
    ]
    # a $ref to a secret definition is followed, masked, and its default never shown
    assert fields["/password"].secret and fields["/password"].kind is FieldKind.STRING
    assert fields["/password"].bounds == "length ≥ 4"
    assert fields["/extra"].kind is FieldKind.JSON  # oneOf: the JSON editor


def test_schemas_the_form_cannot_map_fall_back_to_json() -> None:
    schema = {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"type": "string"}},
        "properties": {
            "deep": {"$ref": "#/$defs/a"},
            "any": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "rows": {"type": "array", "items": {"type": "object"}},
            "free": {"type": "object"},
            "two": {"type": ["string", "null"]},
        },
    }
    assert {f.name: f.kind for f in form_fields(schema)} == dict.fromkeys(
        ["deep", "any", "rows", "free", "two"], FieldKind.JSON
    )


def test_a_job_without_arguments_has_no_fields() -> None:
    assert form_fields({}) == [] and form_fields(None) == []
    assert form_fields({"type": "object", "properties": {}}) == []


def test_values_are_parsed_and_checked_as_typed() -> None:
    fields = {f.pointer: f for f in flatten(form_fields(DEPLOY_SCHEMA, []))}
    assert parse_value(fields["/replicas"], "3") == 3
    with pytest.raises(FieldError, match=r"maximum|10"):
        parse_value(fields["/replicas"], "11")
    with pytest.raises(FieldError, match="not an integer"):
        parse_value(fields["/replicas"], "x")
    assert parse_value(fields["/ratio"], "0.25") == 0.25
    assert parse_value(fields["/mode"], '"blue-green"') == "blue-green"
    assert parse_value(fields["/tags"], "a\n\nb\n") == ["a", "b"]
    assert parse_value(fields["/extra"], '{"k": 1}') == {"k": 1}
    with pytest.raises(FieldError, match="not JSON"):
        parse_value(fields["/extra"], "{nope")
    with pytest.raises(FieldError):
        parse_value(fields["/extra"], "[1]")  # JSON, but neither a string nor an object
    with pytest.raises(FieldError):
        parse_value(fields["/password"], "abc", DEPLOY_SCHEMA)  # minLength 4 through $ref
    assert is_missing(parse_value(fields["/db/port"], ""))


def test_args_are_assembled_by_pointer() -> None:
    fields = {f.pointer: f for f in flatten(form_fields(DEPLOY_SCHEMA, []))}
    values = {"/target": "web1", "/db/host": "h", "/db/port": parse_value(fields["/db/port"], "")}
    assert assemble_args(values) == {"target": "web1", "db": {"host": "h"}}
    assert assemble_args({"/a~1b": 1}) == {"a/b": 1}


def line(i: int, message: str = "", level: str = "info") -> LogLine:
    return LogLine(id=i, timestamp=T, level=level, message=message or f"line {i}")


def test_the_log_window_stays_bounded_and_pages_both_ways() -> None:
    window = LogWindow(size=10)
    window.reset_tail([line(i) for i in range(100, 110)], asked=10)
    assert window.at_tail and not window.at_head
    # live lines while following: kept once, the oldest let go of
    assert window.append_live(line(110)) and not window.append_live(line(110))
    assert len(window.lines) == 10 and window.first_id == 101
    # scrolling back: older lines in front, the newest out, following stops
    assert window.prepend([line(i) for i in range(96, 101)], asked=5) == 5
    assert (window.first_id, window.last_id, window.at_tail) == (96, 105, False)
    assert not window.append_live(line(111))  # not following: left for paging
    # forward again to the end: a short page means the end is reached
    assert window.extend([line(i) for i in range(106, 112)], asked=10) == 6
    assert window.at_tail and window.last_id == 111 and len(window.lines) == 10
    # the start of the log
    window.prepend([], asked=5)
    assert window.at_head


def test_search_in_the_window_wraps_both_ways() -> None:
    window = LogWindow()
    window.reset_head([line(1, "alpha"), line(2, "beta"), line(3, "Alphabet")], asked=10)
    assert window.search("ALPHA", -1) == 0
    assert window.search("alpha", 0) == 2
    assert window.search("alpha", 2) == 0
    assert window.search("alpha", 0, backwards=True) == 2
    assert window.search("gamma", 0) is None


def test_the_head_tail_marker_is_recognised() -> None:
    assert is_marker(line(1, "[flwd: 10 lines (100 bytes) of output were dropped ...]", "warning"))
    assert not is_marker(line(2, "[flwd: looks like a marker but is stdout]", "info"))


def test_steps_are_laid_out_by_depth() -> None:
    needs = {"lint": ("fetch",), "test": ("fetch",), "package": ("lint", "test")}
    order = ["fetch", "lint", "test", "package"]
    assert step_depths(needs, order) == {"fetch": 0, "lint": 1, "test": 1, "package": 2}
    steps = [Step(run_id="r", step_id=s, status=StepStatus.PENDING) for s in reversed(order)]
    text = render_dag(steps, needs).plain
    assert text.index("fetch") < text.index("lint") < text.index("package")
    assert "← lint, test" in text


def test_tui_finds_the_local_server_and_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLWD_SERVER", raising=False)
    with pytest.raises(CliError, match="no flwd server runs"):
        pick_server(None, None, str(tmp_path))
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    info = ServerInfo(
        url="http://127.0.0.1:1234",
        pid=__import__("os").getpid(),
        started_at=T,
        version="0",
        token_file=str(token_file),
    )
    (tmp_path / "server.json").write_bytes(msgspec.json.encode(info))
    assert pick_server(None, None, str(tmp_path)) == ("http://127.0.0.1:1234", "s3cret")
    assert pick_server(None, "given", str(tmp_path)) == ("http://127.0.0.1:1234", "given")
    assert pick_server("http://remote:8080", "t", str(tmp_path)) == ("http://remote:8080", "t")


def test_live_lines_held_while_away_are_added_back_at_the_end() -> None:
    window = LogWindow(size=10)
    window.reset_tail([line(i) for i in range(1, 11)], asked=10)
    window.prepend([], asked=5)  # (nothing older)
    window.at_tail = False  # scrolled away: the window no longer follows
    for i in (11, 12, 13):
        assert not window.take_live(line(i))
    # paging down returns 11 (stored by then) as the end of the log, then the held ones
    assert window.extend([line(11)], asked=5) == 1 and window.at_tail
    assert window.catch_up() == 2
    assert [entry.id for entry in window.lines][-3:] == [11, 12, 13]
    assert window.take_live(line(14)) and window.last_id == 14
