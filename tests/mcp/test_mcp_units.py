"""The pure parts of the MCP extension: tool names, schemas, progress lines."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import jsonschema
from flwd_mcp import naming
from flwd_mcp.progress import RunProgress, parse_progress_line
from flwd_mcp.schemas import elicitation_form, input_schema, missing_required, output_schema
from mcp.shared.tool_name_validation import validate_tool_name

from flwd.models import Event


def test_tool_names_are_valid_unique_and_short() -> None:
    assert naming.tool_name("backup/daily") == "backup_daily"
    assert naming.tool_name("hello") == "hello"
    assert naming.tool_name("reports/q-1/summary") == "reports_q-1_summary"
    long_a = "a" * 40 + "/" + "b" * 40 + "/x"
    long_b = "a" * 40 + "/" + "b" * 40 + "/y"
    names = [naming.tool_name(i) for i in ("a/b-c", "a-b/c", "a/b/c", long_a, long_b)]
    assert len(set(names)) == len(names)
    for name in [*names, *naming.GENERIC]:
        assert validate_tool_name(name).is_valid
        assert len(name) <= naming.MAX_NAME
    assert re.fullmatch(r"a{40}_b{11}__[0-9a-f]{10}", naming.tool_name(long_a))
    assert all("__" in name for name in naming.GENERIC)


def test_secrets_are_write_only_at_their_place() -> None:
    args = {
        "type": "object",
        "$defs": {"cred": {"type": "object", "properties": {"token": {"type": "string"}}}},
        "properties": {
            "password": {"type": "string", "format": "secret"},
            "creds": {"$ref": "#/$defs/cred"},
            "other": {"$ref": "#/$defs/cred"},
            "name": {"type": "string"},
        },
    }
    schema = input_schema(args, ["/creds/token", "/password"])
    props = schema["properties"]
    assert props["password"]["writeOnly"] is True
    assert props["creds"]["properties"]["token"]["writeOnly"] is True
    assert "writeOnly" not in str(props["other"]) and "writeOnly" not in str(props["name"])
    assert "writeOnly" not in str(args)  # the job's own schema is left alone


def test_output_schema_accepts_outcomes_and_keeps_result_references() -> None:
    result_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {"n": {"type": "integer"}},
        "type": "object",
        "properties": {"sum": {"$ref": "#/$defs/n"}},
        "required": ["sum"],
    }
    schema = output_schema(result_schema)
    outcome = {
        "run_id": "run_1",
        "job_id": "calc/add",
        "status": "success",
        "reason": None,
        "error": None,
        "exit_code": None,
        "result": {"value": {"sum": 3}},
        "artifacts": [],
    }
    jsonschema.validate(outcome, schema)
    jsonschema.validate({**outcome, "result": None, "status": "failed"}, schema)
    bad = {**outcome, "result": {"value": {"sum": "three"}}}
    assert not jsonschema.Draft202012Validator(schema).is_valid(bad)
    jsonschema.validate(outcome, output_schema(None))


def test_elicitation_form_is_flat_and_only_for_plain_fields() -> None:
    args = {
        "type": "object",
        "properties": {
            "target": {"type": "string", "description": "where", "pattern": "^/"},
            "mode": {"enum": ["fast", "slow"]},
            "deep": {"type": "object"},
            "count": {"type": "integer", "default": 3},
        },
        "required": ["target", "mode", "deep", "count"],
    }
    assert missing_required(args, {"deep": {}}) == ["target", "mode"]
    form = elicitation_form(args, ["target", "mode"])
    assert form["required"] == ["target", "mode"]
    assert form["properties"]["target"] == {
        "type": "string",
        "description": "where",
        "title": "target",
    }
    assert form["properties"]["mode"]["enum"] == ["fast", "slow"]
    assert elicitation_form(args, ["deep"])["properties"] == {}


def _event(kind: str, **data: object) -> Event:
    return Event(id=1, type=kind, run_id="r", job_id="j", timestamp=datetime.now(UTC), data=data)


def test_progress_lines_and_steps_make_growing_percentages() -> None:
    assert parse_progress_line("::progress 40/100 copying") == (0.4, "copying")
    assert parse_progress_line("::progress 25%") == (0.25, None)
    assert parse_progress_line("progress 40/100") is None
    assert parse_progress_line("::progress 3/0") == (0.0, None)
    progress = RunProgress(steps=2)
    reports = [
        progress.update(_event("step.started", step_id="a")),
        progress.update(_event("run.output", step_id="a", message="::progress 1/2 half")),
        progress.update(_event("run.output", step_id="a", message="::progress 1/4 back")),
        progress.update(_event("step.finished", step_id="a", status="success")),
        progress.update(_event("run.output", step_id="b", message="::progress 50%")),
        progress.update(_event("step.finished", step_id="b", status="success")),
    ]
    assert reports == [
        (0.0, 100.0, "step a started"),
        (25.0, 100.0, "half"),
        None,  # lower than what was sent: never sent
        (50.0, 100.0, "step a success"),
        (75.0, 100.0, None),
        (100.0, 100.0, "step b success"),
    ]
