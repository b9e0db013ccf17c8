"""The `args` and `result_schema` JSON Schemas of a job, checked and prepared at discovery.

The args schema a job publishes (and that arguments are validated against) is the
*effective* one: object schemas that do not say whether extra properties are allowed are
closed, because DESIGN section 3 makes unknown arguments an error unless the schema
allows them. A typo in an argument name must fail the run, not be silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

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
