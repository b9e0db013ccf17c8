"""Secrets of every shape: found in a schema by JSON Pointer, masked in stored arguments,
known in every text form they take, and masked in parsed results without corrupting them."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from flwd.engine.output import Redactor
from flwd.jobs.arguments import (
    env_text,
    mask_secrets,
    secret_values,
    validate_args,
    without_secrets,
)
from flwd.jobs.schemas import close_object_schemas, secret_pointers, short_secrets
from flwd.models import JobSpec


def make_job(args: dict[str, Any]) -> JobSpec:
    schema = close_object_schemas(args)
    return JobSpec(
        id="t",
        name="t",
        namespace="",
        source="test",
        path="/x",
        args=schema,
        secret_args=secret_pointers(schema),
        digest=json.dumps(schema, sort_keys=True),
    )


SHAPES: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "secret": {"type": "string", "format": "secret"},
        "hidden": {"writeOnly": True},
        "login": {
            "type": "object",
            "properties": {"user": {"type": "string"}, "pass": {"$ref": "#/$defs/secret"}},
        },
    },
    "definitions": {"old": {"type": "string", "format": "secret"}},
    "properties": {
        "plain": {"type": "string"},
        "direct": {"type": "string", "format": "secret"},
        "write_only": {"type": "integer", "writeOnly": True},
        "by_ref": {"$ref": "#/$defs/secret"},
        "by_old_ref": {"$ref": "#/definitions/old"},
        "by_all_of": {"allOf": [{"type": "string"}, {"$ref": "#/$defs/hidden"}]},
        "by_any_of": {"anyOf": [{"type": "null"}, {"type": "string", "format": "secret"}]},
        "tokens": {"type": "array", "items": {"$ref": "#/$defs/secret"}},
        "servers": {
            "type": "array",
            "items": {"type": "object", "properties": {"password": {"writeOnly": True}}},
        },
        "creds": {
            "type": "object",
            "properties": {
                "token": {"type": "string", "format": "secret"},
                "login": {"$ref": "#/$defs/login"},
                "a/b~c": {"format": "secret"},
            },
        },
        "whole": {"type": "object", "format": "secret"},
    },
}


def test_secrets_are_found_through_refs_compositions_nesting_and_items() -> None:
    assert make_job(SHAPES).secret_args == (
        "/by_all_of",
        "/by_any_of",
        "/by_old_ref",
        "/by_ref",
        "/creds/a~1b~0c",
        "/creds/login/pass",
        "/creds/token",
        "/direct",
        "/servers",  # a secret inside array items makes the array secret
        "/tokens",
        "/whole",
        "/write_only",
    )


def test_ref_cycles_end_and_nothing_below_a_secret_is_listed() -> None:
    schema = {
        "type": "object",
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "key": {"type": "string", "format": "secret"},
                    "child": {"$ref": "#/$defs/node"},
                },
            },
        },
        "properties": {
            "tree": {"$ref": "#/$defs/node"},
            "box": {
                "format": "secret",
                "properties": {"inner": {"format": "secret"}},
            },
            "loop": {"$ref": "#/properties/loop"},
            "nowhere": {"$ref": "#/$defs/missing"},
        },
    }
    pointers = secret_pointers(schema)
    # a recursive definition: where it starts again, the whole value is secret
    assert "/tree/key" in pointers and "/tree/child" in pointers
    assert "/box" in pointers and "/box/inner" not in pointers
    assert not any(p.startswith(("/loop", "/nowhere")) for p in pointers)


def test_stored_arguments_mask_every_secret_whatever_its_length_or_shape() -> None:
    job = make_job(SHAPES)
    args = validate_args(
        job,
        {
            "plain": "visible",
            "direct": "ab",
            "write_only": 7,
            "tokens": ["tokA-111", "tokB-222"],
            "servers": [{"password": "x"}],
            "creds": {"token": "t", "login": {"user": "bob", "pass": "p"}},
            "whole": {"k": [1, 2]},
            "by_any_of": None,
        },
    )
    assert mask_secrets(job, args) == {
        "plain": "visible",
        "direct": "***",
        "write_only": "***",
        "tokens": "***",
        "servers": "***",
        "creds": {"token": "***", "login": {"user": "bob", "pass": "***"}},
        "whole": "***",
        "by_any_of": None,  # a null reveals nothing
    }
    # a restart drops them (to be given again), keeping the rest
    assert without_secrets(job, mask_secrets(job, args)) == {
        "plain": "visible",
        "creds": {"login": {"user": "bob"}},
    }


def test_every_text_form_of_a_secret_is_known() -> None:
    job = make_job(SHAPES)
    tokens = ["tokA-111", "tokB-222", 12345, 1.5, True, {"ü": "naïve-secret"}]
    texts = set(secret_values(job, {"tokens": tokens, "write_only": 98765}))
    assert {"tokA-111", "tokB-222", "12345", "1.5", "naïve-secret", "98765"} <= texts
    assert json.dumps(tokens) in texts  # spaced, \u-escaped: Python's default
    assert json.dumps(tokens, separators=(",", ":"), ensure_ascii=False) in texts
    assert env_text(tokens) in texts  # what $FLWD_ARG_TOKENS holds
    assert env_text(tokens) == msgspec.json.encode(tokens).decode()
    # booleans are not text to mask: "true" would be masked everywhere
    assert "true" not in texts


def test_result_masking_works_on_parsed_values_and_keeps_them_valid_json() -> None:
    redactor = Redactor(["12345", "tokA-111", "ab", "true"])
    value = {
        "n": 12345,
        "f": 12345.5,
        "s": "tokA-111",
        "short": "ab",
        "inside": "key=tokA-111;",
        "short_inside": "abc",  # shorter than 4: never masked inside text
        "ok": True,
        "no": False,
        "tokA-111": [12345, "x"],
    }
    masked = redactor.value(value)
    assert masked == {
        "n": "***",
        "f": 12345.5,
        "s": "***",
        "short": "***",
        "inside": "key=***;",
        "short_inside": "abc",
        "ok": "***",  # the secret "true" is a boolean's JSON text
        "no": False,
        "***": ["***", "x"],
    }
    assert json.loads(json.dumps(masked)) == masked
    # free text masks only forms of 4 characters or more
    assert redactor.mask_text("ab 12345 true") == "ab *** ***"


def test_the_issue_case_masks_without_breaking_json() -> None:
    redactor = Redactor(["12345"])
    assert redactor.value(msgspec.json.decode(b'{"n": 12345}')) == {"n": "***"}


def test_validate_knows_which_secrets_may_be_too_short_to_mask_in_text() -> None:
    schema = {
        "type": "object",
        "$defs": {"key": {"type": "string", "format": "secret", "minLength": 8}},
        "properties": {
            "bare": {"type": "string", "format": "secret"},
            "short": {"type": "string", "format": "secret", "minLength": 3},
            "by_ref": {"$ref": "#/$defs/key"},
            "items": {"type": "array", "items": {"writeOnly": True, "minLength": 5}},
            "pin": {"type": "integer", "format": "secret", "minimum": 1000},
            "both": {"allOf": [{"minLength": 4}, {"writeOnly": True}]},
            "choice": {"format": "secret", "enum": ["alpha-1", "beta-22"]},
            "nested": {"properties": {"token": {"format": "secret"}}},
        },
    }
    assert short_secrets(schema) == ["/bare", "/nested/token", "/short"]
