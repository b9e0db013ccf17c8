"""The `args` and `result_schema` JSON Schemas of a job, checked and prepared at discovery.

The args schema a job publishes (and that arguments are validated against) is the
*effective* one: object schemas that do not say whether extra properties are allowed are
closed, because DESIGN section 3 makes unknown arguments an error unless the schema
allows them. A typo in an argument name must fail the run, not be silently ignored.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec
from jsonschema import Draft202012Validator

from flwd.jobs.metaschema import check_schema

DEFAULT_ARGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {},
    "additionalProperties": False,
}
_OPEN_KEYWORDS = ("additionalProperties", "unevaluatedProperties", "patternProperties")
# With these, sibling properties are defined elsewhere, which `additionalProperties`
# cannot see; `unevaluatedProperties` (2020-12) can.
_COMPOSITION = ("allOf", "anyOf", "oneOf", "$ref", "$dynamicRef", "if", "dependentSchemas")

#: (key path inside the schema, reason)
SchemaIssue = tuple[tuple[str | int, ...], str]


def schema_issues(schema: Any, *, require_object: bool) -> Iterator[SchemaIssue]:
    """Problems with a job's schema: not JSON data, not valid under the 2020-12
    meta-schema, or (for `args`) not an object schema."""
    try:
        problems = check_schema(schema)
    except (TypeError, ValueError) as exc:
        yield (), f"is not plain JSON data ({exc}); quote dates and other special values"
        return
    for path, message in problems:
        yield path, f"is not a valid JSON Schema (2020-12): {message}"
    if require_object and isinstance(schema, Mapping):
        declared = schema.get("type", "object")
        if declared != "object" and not (isinstance(declared, list) and "object" in declared):
            yield ("type",), "must describe an object (type: object): arguments are named"


def close_object_schemas(schema: dict[str, Any], *, top: bool = True) -> dict[str, Any]:
    """A copy of `schema` where object schemas that are silent about extra properties
    refuse them (the top level always, nested levels when they list `properties`)."""
    out = dict(schema)
    if (top or "properties" in out) and not any(k in out for k in _OPEN_KEYWORDS):
        key = (
            "unevaluatedProperties"
            if any(k in out for k in _COMPOSITION)
            else "additionalProperties"
        )
        out[key] = False
    properties = out.get("properties")
    if isinstance(properties, dict):
        out["properties"] = {
            name: close_object_schemas(sub, top=False) if isinstance(sub, dict) else sub
            for name, sub in properties.items()
        }
    return out


def is_secret(property_schema: Any) -> bool:
    """`format: secret` or `writeOnly: true` marks an argument whose value must never be
    shown again (responses, events, logs, results)."""
    return isinstance(property_schema, Mapping) and (
        property_schema.get("format") == "secret" or property_schema.get("writeOnly") is True
    )


def secret_arg_names(schema: Mapping[str, Any]) -> frozenset[str]:
    """Names of the top-level arguments that are secret."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return frozenset()
    return frozenset(name for name, sub in properties.items() if is_secret(sub))


def unrunnable_issues(schema: Mapping[str, Any]) -> Iterator[SchemaIssue]:
    """Mistakes in a (meta-schema valid) `args` schema that make some or every run fail:
    a `default` its own property's schema refuses (a run relying on it fails validation),
    and a `required` name that no property declares (a run can never pass it where extra
    arguments are refused). Object schemas are checked wherever `properties` nest; a
    `required` name is only judged where the schema composes nothing (`allOf`, `$ref` ...
    may declare it) and refuses other names (`additionalProperties` absent or false,
    no `patternProperties` matching it)."""
    root: list[Draft202012Validator] = []  # built for the first default only: discovery

    def checker() -> Draft202012Validator:  # of thousands of jobs must stay quick
        if not root:
            formats = Draft202012Validator.FORMAT_CHECKER
            root.append(Draft202012Validator(dict(schema), format_checker=formats))
        return root[0]

    yield from _object_issues(checker, schema, ())


def _object_issues(
    checker: Callable[[], Draft202012Validator],
    schema: Mapping[str, Any],
    at: tuple[str | int, ...],
) -> Iterator[SchemaIssue]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for name, sub in properties.items():
        if not isinstance(sub, dict):
            continue
        if "default" in sub:
            message = _default_problem(checker, sub)
            if message is not None:
                yield (
                    (*at, "properties", name, "default"),
                    f"is a default its own property's schema refuses ({message}): a run "
                    "leaving this argument out would fail validation; fix the default or "
                    "the schema",
                )
        yield from _object_issues(checker, sub, (*at, "properties", name))
    required = schema.get("required")
    if not isinstance(required, list) or any(k in schema for k in _COMPOSITION):
        return
    if schema.get("additionalProperties", False) is not False:
        return
    patterns = [p for p in schema.get("patternProperties", {}) if isinstance(p, str)]
    for index, name in enumerate(required):
        if name in properties or any(re.search(p, str(name)) for p in patterns):
            continue
        yield (
            (*at, "required", index),
            f"names '{name}', which is not a property here (properties: "
            f"{', '.join(map(str, properties)) or 'none'}): no run could pass it; declare "
            "it under properties or remove it from required",
        )


def _default_problem(
    checker: Callable[[], Draft202012Validator], sub: Mapping[str, Any]
) -> str | None:
    """Why `sub`'s own `default` does not match `sub`, or None. A property schema that
    refers to nothing (no `$ref`) is checked on its own, remembered by its JSON text:
    discovery meets the same few property schemas in thousands of jobs."""
    text = msgspec.json.encode(sub, order="sorted")
    if b'"$ref"' not in text and b'"$dynamicRef"' not in text:
        return _self_contained_default_problem(text)
    errors = list(checker().evolve(schema=sub).iter_errors(sub["default"]))
    return shorten_values(str(errors[0].message), errors[0].instance) if errors else None


@functools.lru_cache(maxsize=4096)
def _self_contained_default_problem(text: bytes) -> str | None:
    sub = msgspec.json.decode(text)
    validator = Draft202012Validator(sub, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = list(validator.iter_errors(sub["default"]))
    return shorten_values(str(errors[0].message), errors[0].instance) if errors else None


#: how much of a value an error message may quote
SHORT_VALUE = 60


def short_repr(value: Any) -> str:
    """`repr(value)`, cut to `SHORT_VALUE` characters plus `…` and its full length."""
    text = repr(value)
    if len(text) <= SHORT_VALUE:
        return text
    return f"{text[:SHORT_VALUE]}… ({len(text):,} characters)"


def shorten_values(message: str, value: Any) -> str:
    """`message` (jsonschema's, which quotes the failing value) with that value cut short:
    a 200 KB argument must not come back in every error about it."""
    full = repr(value)
    if len(full) <= SHORT_VALUE:
        return message
    return message.replace(full, short_repr(value))
