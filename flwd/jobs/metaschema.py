"""Check a schema against the JSON Schema 2020-12 meta-schema, fast.

`jsonschema`'s own check takes about 1.4 ms per small schema because the 2020-12
meta-schema is split into vocabularies joined by `$dynamicRef`; 10,000 jobs would spend
14 s there. So the common case goes through a validator that `fastjsonschema` compiles
from a *flattened* copy of the same meta-schema (every vocabulary merged into one object,
`$dynamicRef: "#meta"` turned into `$ref: "#"`), about 30 µs per schema. Only when that
fast check rejects a schema does `jsonschema` run the official meta-schema, which is the
authority on the verdict and writes the message. A test checks that the fast path never
accepts what `jsonschema` rejects.

Results are cached by the schema's canonical JSON, as many jobs share schemas.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import fastjsonschema
import msgspec
from jsonschema import Draft202012Validator, ValidationError
from jsonschema_specifications import REGISTRY

_BASE = "https://json-schema.org/draft/2020-12/"

#: A schema problem: the path inside the checked schema (keys and indexes) and a message.
SchemaProblem = tuple[tuple[str | int, ...], str]


def _rewrite(node: Any) -> Any:
    """Point every vocabulary-relative reference at the flattened document itself."""
    if isinstance(node, dict):
        if node.get("$dynamicRef") == "#meta":
            return {"$ref": "#"}
        out = {}
        for key, value in node.items():
            # `format` other than `regex` is not asserted by jsonschema's checker either;
            # keeping it would make the fast path stricter for no benefit.
            # (A string value is the keyword; a mapping is the definition of the
            # `format` property itself, which must stay.)
            if key == "format" and isinstance(value, str) and value != "regex":
                continue
            if key == "$ref" and isinstance(value, str) and value.startswith("meta/"):
                value = "#" + value.partition("#")[2]
            out[key] = _rewrite(value)
        return out
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    return node


def flat_meta_schema() -> dict[str, Any]:
    """The 2020-12 meta-schema with all vocabularies merged into one recursive schema."""
    root = REGISTRY.contents(_BASE + "schema")
    parts = [root] + [REGISTRY.contents(_BASE + ref["$ref"]) for ref in root["allOf"]]
    flat: dict[str, Any] = {"type": ["object", "boolean"], "properties": {}, "$defs": {}}
    for part in parts:
        flat["properties"].update(_rewrite(part.get("properties", {})))
        flat["$defs"].update(_rewrite(part.get("$defs", {})))
    return flat


@cache
def _fast_validator() -> Callable[[Any], Any]:
    # Compiled lazily: 40 ms that a CLI command which never loads a schema should not pay.
    return fastjsonschema.compile(flat_meta_schema(), use_default=False)


_OFFICIAL = Draft202012Validator(
    Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
)
_cache: dict[bytes, tuple[SchemaProblem, ...]] = {}
_CACHE_LIMIT = 50_000


_TYPES = "array, boolean, integer, null, number, object, string"


def _message(error: ValidationError) -> str:
    """jsonschema's message, made actionable for the most common mistake (a bad type)."""
    path = list(error.absolute_path)
    if path and path[-1] == "type" and error.validator == "anyOf":
        return f"{error.instance!r} is not a JSON Schema type; use one of: {_TYPES}"
    return str(error.message)


def canonical_json(schema: Any) -> bytes:
    """Sorted-key compact JSON (msgspec: 10x faster than `json.dumps`); raises
    `TypeError` for values JSON cannot hold."""
    return msgspec.json.encode(schema, order="sorted")


def check_schema(schema: Any) -> tuple[SchemaProblem, ...]:
    """Every problem that makes `schema` invalid under the 2020-12 meta-schema (empty when
    valid). Raises `TypeError`/`ValueError` when `schema` is not plain JSON data."""
    key = canonical_json(schema)
    found = _cache.get(key)
    if found is not None:
        return found
    try:
        _fast_validator()(schema)
        problems: tuple[SchemaProblem, ...] = ()
    except fastjsonschema.JsonSchemaException:
        problems = tuple(
            (tuple(error.absolute_path), _message(error))
            for error in sorted(_OFFICIAL.iter_errors(schema), key=lambda e: e.json_path)
        )
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[key] = problems
    return problems
