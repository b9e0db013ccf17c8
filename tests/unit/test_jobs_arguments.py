"""Argument validation: defaults, every error as a JSON Pointer, secrets kept secret."""

from __future__ import annotations

from typing import Any

import pytest

from flwd.errors import ArgumentsInvalid, FieldError
from flwd.jobs.arguments import mask_secrets, secret_values, validate_args
from flwd.jobs.schemas import close_object_schemas, secret_pointers
from flwd.models import JobSpec


def make_job(args: dict[str, Any], job_id: str = "t") -> JobSpec:
    schema = close_object_schemas(args)
    return JobSpec(
        id=job_id,
        name=job_id,
        namespace="",
        source="test",
        path="/x",
        args=schema,
        secret_args=secret_pointers(schema),
        digest=str(hash(repr(schema))),
    )


BACKUP = make_job(
    {
        "type": "object",
        "properties": {
            "target": {"type": "string", "minLength": 2},
            "retries": {"type": "integer", "minimum": 0, "default": 3},
            "options": {
                "type": "object",
                "default": {},
                "properties": {
                    "compress": {"type": "boolean", "default": True},
                    "level": {"type": "integer", "maximum": 9},
                },
            },
            "password": {"type": "string", "format": "secret", "minLength": 8},
            "token": {"type": "string", "writeOnly": True},
        },
        "required": ["target"],
    },
    job_id="backup/daily",
)


def errors_of(job: JobSpec, args: dict[str, Any] | None) -> list[FieldError]:
    with pytest.raises(ArgumentsInvalid) as caught:
        validate_args(job, args)
    return caught.value.errors


def test_defaults_are_applied_also_nested() -> None:
    assert validate_args(BACKUP, {"target": "/mnt"}) == {
        "target": "/mnt",
        "retries": 3,
        "options": {"compress": True},
    }
    assert validate_args(BACKUP, {"target": "/mnt", "options": {"level": 1}})["options"] == {
        "level": 1,
        "compress": True,
    }


def test_defaults_are_fresh_copies_for_every_run() -> None:
    job = make_job(
        {
            "type": "object",
            "properties": {
                "target": {"type": "string"},
                "options": {"type": "object", "default": {"level": 1}},
            },
        },
        job_id="repeat",
    )
    first = validate_args(job, {"target": "/mnt"})
    first["options"]["level"] = 99  # the caller's copy is its own
    assert validate_args(job, {"target": "/mnt"}) == {"target": "/mnt", "options": {"level": 1}}
    assert errors_of(job, {"target": 5})
    assert errors_of(job, {"target": 5})


def test_input_is_not_modified() -> None:
    given = {"target": "/mnt", "options": {}}
    validate_args(BACKUP, given)
    assert given == {"target": "/mnt", "options": {}}


def test_missing_required_points_at_the_property() -> None:
    assert errors_of(BACKUP, None) == [FieldError(path="/target", message="'target' is required")]


def test_every_error_is_reported() -> None:
    errors = errors_of(
        BACKUP,
        {"retries": -1, "options": {"level": 10, "colour": "red"}, "extra": 1},
    )
    paths = sorted(e.path for e in errors)
    assert paths == ["/extra", "/options/colour", "/options/level", "/retries", "/target"]
    messages = {e.path: e.message for e in errors}
    assert messages["/extra"] == "'extra' is not an argument of this job"
    assert "10 is greater than the maximum of 9" in messages["/options/level"]


def test_error_detail_counts_errors() -> None:
    with pytest.raises(ArgumentsInvalid) as caught:
        validate_args(BACKUP, {"target": 5, "zzz": 1})
    assert caught.value.detail == "Arguments for job 'backup/daily' are invalid (2 errors)"


def test_pointer_escaping() -> None:
    job = make_job({"type": "object", "properties": {}})
    (error,) = errors_of(job, {"a/b~c": 1})
    assert error.path == "/a~1b~0c"


def test_schema_may_allow_unknown_properties() -> None:
    job = make_job({"type": "object", "additionalProperties": True})
    assert validate_args(job, {"anything": 1}) == {"anything": 1}
    patterned = make_job(
        {"type": "object", "patternProperties": {"^x_": {}}, "additionalProperties": False}
    )
    assert validate_args(patterned, {"x_1": 1}) == {"x_1": 1}
    assert [e.path for e in errors_of(patterned, {"x_1": 1, "y": 2})] == ["/y"]


def test_default_job_takes_no_arguments() -> None:
    job = make_job({"type": "object", "properties": {}, "additionalProperties": False})
    assert validate_args(job, {}) == {}
    assert validate_args(job, None) == {}
    assert errors_of(job, {"x": 1})[0].path == "/x"


def test_formats_are_checked() -> None:
    job = make_job(
        {"type": "object", "properties": {"mail": {"type": "string", "format": "email"}}}
    )
    assert errors_of(job, {"mail": "nope"})[0].path == "/mail"


def test_secret_values_never_appear_in_errors() -> None:
    errors = errors_of(BACKUP, {"target": "/m", "password": "hunter2", "token": 12345})
    text = repr(errors)
    assert "hunter2" not in text and "12345" not in text
    messages = {e.path: e.message for e in errors}
    assert messages["/token"] == "must be of type string"
    assert "minLength" in messages["/password"]


def test_errors_about_the_whole_arguments_object_mask_secrets() -> None:
    secret = "it's-a\nsecret"  # repr() escapes both the quote and the newline
    job = make_job(
        {
            "type": "object",
            "properties": {"key": {"type": "string", "writeOnly": True}, "a": {}, "b": {}},
            "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
            "minProperties": 2,
            "not": {"required": ["key"]},
        }
    )
    errors = errors_of(job, {"key": secret})
    messages = {e.message for e in errors}
    assert all(e.path == "" for e in errors) and len(messages) == 3
    assert "{'key': '***'} is not valid under any of the given schemas" in messages
    text = repr(errors)
    assert secret not in text and repr(secret)[1:-1] not in text and "secret" not in text


def test_secret_args_are_flagged_and_masked() -> None:
    assert BACKUP.secret_args == ("/password", "/token")
    args = {"target": "/m", "password": "s3cr3t-pass", "token": None}
    assert mask_secrets(BACKUP, args) == {"target": "/m", "password": "***", "token": None}
    assert secret_values(BACKUP, args) == ["s3cr3t-pass"]
    # a structure: each scalar, its JSON spaced and compact, and its environment form
    assert set(secret_values(BACKUP, {"password": "", "token": {"k": 1}})) == {
        "1",
        '{"k": 1}',
        '{"k":1}',
    }


def test_an_error_about_a_huge_value_quotes_only_its_start() -> None:
    job = make_job(
        {
            "type": "object",
            "properties": {"blob": {"type": "string", "maxLength": 10}},
            "maxProperties": 1,
        }
    )
    huge = "x" * 200_000
    with pytest.raises(ArgumentsInvalid) as caught:
        validate_args(job, {"blob": huge})
    (error,) = caught.value.errors
    assert error.path == "/blob"
    assert len(error.message) < 200
    assert error.message.startswith("'xxxxxxxx") and "(200,002 characters)" in error.message
    assert error.message.endswith("is too long")
    with pytest.raises(ArgumentsInvalid) as caught:
        validate_args(job, {"blob": "short", "other": huge})
    messages = [e.message for e in caught.value.errors]
    assert messages and all(len(m) < 200 for m in messages), messages
