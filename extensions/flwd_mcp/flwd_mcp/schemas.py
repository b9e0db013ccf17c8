"""The JSON Schemas a job's tool carries, and the elicitation form for missing arguments.

- input: the job's argument schema, each secret value marked `writeOnly` at its place
  (found through `properties`, from the job's `secret_args` pointers);
- output: the shape of the `structuredContent` a call returns (`RunOutcome`), with
  `result.value` described by the job's `result_schema` when it has one;
- elicitation: a flat form (the protocol's restricted schema: top-level properties of
  primitive types) for the missing required arguments that can be asked for.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

from flwd.states import RunStatus

#: keys of a primitive property a form may carry (MCP's restricted elicitation schema)
_FORM_KEYS: Final = frozenset(
    {
        "type",
        "title",
        "description",
        "default",
        "enum",
        "enumNames",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "format",
    }
)
_FORM_TYPES: Final = frozenset({"string", "number", "integer", "boolean"})
_FORM_FORMATS: Final = frozenset({"email", "uri", "date", "date-time"})


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _resolve(node: Any, root: Mapping[str, Any]) -> Any:
    """`node`, or what its local `$ref` (`#/...`) points to (one level)."""
    if (
        isinstance(node, dict)
        and isinstance(node.get("$ref"), str)
        and node["$ref"].startswith("#")
    ):
        target: Any = root
        for token in node["$ref"][1:].split("/")[1:]:
            if not isinstance(target, Mapping):
                return node
            target = target.get(_unescape(token))
        if isinstance(target, dict):
            merged = copy.deepcopy(target)
            merged.update({k: v for k, v in node.items() if k != "$ref"})
            return merged
    return node


def input_schema(args: Mapping[str, Any], secret_args: Sequence[str]) -> dict[str, Any]:
    """The job's argument schema with `writeOnly: true` on each secret value.

    A pointer is followed through `properties` (a local `$ref` on the way is copied into
    place so that marking it does not mark the other users of the definition); a secret
    declared only inside `allOf`/`anyOf`/... keeps the job's own marking (`format:
    secret`), which flwd masks all the same."""
    schema = copy.deepcopy(dict(args))
    for pointer in secret_args:
        node: Any = schema
        for token in pointer.split("/")[1:]:
            properties = node.get("properties") if isinstance(node, dict) else None
            if not isinstance(properties, dict) or _unescape(token) not in properties:
                node = None
                break
            child = _resolve(properties[_unescape(token)], schema)
            properties[_unescape(token)] = child
            node = child
        if isinstance(node, dict):
            node["writeOnly"] = True
    return schema


def output_schema(result_schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The schema of a call's `structuredContent` (see `RunOutcome`). The job's
    `result_schema` describes `result.value`; its `$defs` (and `definitions`) are lifted
    to the root so that its local references still resolve."""
    value: dict[str, Any] = {"description": "what the run's steps wrote to $FLWD_RESULT_FILE"}
    lifted: dict[str, dict[str, Any]] = {}
    if result_schema is not None:
        value = copy.deepcopy(dict(result_schema))
        value.pop("$schema", None)
        value.pop("$id", None)
        for key in ("$defs", "definitions"):
            if isinstance(value.get(key), dict):
                lifted[key] = value.pop(key)
    nullable_text = {"type": ["string", "null"]}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "run_id": {"type": "string", "description": "the run's id (flwd://runs/{run_id})"},
            "job_id": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in RunStatus]},
            "reason": {**nullable_text, "description": "why the run failed (docs/runs.md)"},
            "error": nullable_text,
            "exit_code": {"type": ["integer", "null"]},
            "result": {
                "description": "the run's result; null when no step wrote one",
                "anyOf": [
                    {"type": "null"},
                    {"type": "object", "properties": {"value": value}, "required": ["value"]},
                ],
            },
            "artifacts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "media_type": {"type": "string"},
                        "size_bytes": {"type": "integer"},
                        "url": {"type": "string", "description": "where to download it"},
                    },
                    "required": ["id", "name", "media_type", "size_bytes", "url"],
                },
            },
        },
        "required": ["run_id", "job_id", "status", "result", "artifacts"],
    }
    schema.update(lifted)
    return schema


def missing_required(args: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """The top-level required arguments `given` lacks and that have no default."""
    required = args.get("required")
    properties = args.get("properties")
    if not isinstance(required, list):
        return []
    props = properties if isinstance(properties, Mapping) else {}
    return [
        name
        for name in required
        if isinstance(name, str)
        and name not in given
        and not (isinstance(props.get(name), Mapping) and "default" in props[name])
    ]


def form_property(args: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The elicitation form field for top-level argument `name`, or None when its
    schema is not a primitive one a form can ask for."""
    properties = args.get("properties")
    if not isinstance(properties, Mapping):
        return None
    prop = _resolve(properties.get(name), args)
    if not isinstance(prop, Mapping):
        return None
    kind = prop.get("type")
    if kind not in _FORM_TYPES:
        if "enum" in prop and all(isinstance(v, str) for v in prop["enum"]):
            kind = "string"
        else:
            return None
    field = {k: copy.deepcopy(v) for k, v in prop.items() if k in _FORM_KEYS}
    field["type"] = kind
    if "format" in field and field["format"] not in _FORM_FORMATS:
        del field["format"]
    field.setdefault("title", name)
    return field


def elicitation_form(args: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The restricted schema asking for `names` (each given by `form_property`)."""
    properties = {name: form_property(args, name) for name in names}
    return {
        "type": "object",
        "properties": {k: v for k, v in properties.items() if v is not None},
        "required": [k for k, v in properties.items() if v is not None],
    }
