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
    """`format: secret` or `writeOnly: true` on this schema itself (see `secret_pointers`
    for the marks reached through `$ref` and composition)."""
    return isinstance(property_schema, Mapping) and (
        property_schema.get("format") == "secret" or property_schema.get("writeOnly") is True
    )


#: keywords whose subschemas describe the same value as their parent
_SAME_VALUE = ("allOf", "anyOf", "oneOf")
_SAME_VALUE_ONE = ("then", "else")
#: keywords whose subschemas describe values whose names or positions are not known in
#: advance: a secret in one makes the whole object or array secret
_UNNAMED_PARTS = ("items", "prefixItems", "additionalProperties", "patternProperties", "contains")


def secret_pointers(schema: Mapping[str, Any]) -> tuple[str, ...]:
    """JSON Pointers (RFC 6901, sorted) of the secret values of arguments valid under
    `schema`, e.g. `("/creds/token", "/password")`.

    A value is secret when its schema says `format: secret` or `writeOnly: true`,
    directly, through a local `$ref` (into `$defs`, `definitions` or anywhere in the
    schema; cycles are followed once), or in a branch of `allOf`/`anyOf`/`oneOf`/`then`/
    `else`. Nested `properties` give nested pointers. A secret anywhere under `items`,
    `prefixItems`, `contains`, `additionalProperties` or `patternProperties` makes the
    whole array or object secret: its elements have no fixed name, so the pointer is the
    array's or object's own (`/tokens`). The root itself is never a secret (arguments
    are named); a pointer below another is left out."""
    found: dict[str, Any] = {}
    _collect(schema, "", schema, found, frozenset(), top=True)
    pointers = sorted(found)
    return tuple(p for p in pointers if not any(p.startswith(q + "/") for q in pointers if q != p))


def _collect(
    node: Any,
    pointer: str,
    root: Mapping[str, Any],
    found: dict[str, Any],
    seen: frozenset[int],
    *,
    top: bool = False,
    probing: bool = False,
    owner: Any = None,
) -> None:
    """Add to `found` each secret pointer, with `owner`: the schema of the property
    that introduced the pointer (for `short_secrets`)."""
    if not isinstance(node, Mapping):
        return
    if id(node) in seen:
        # a recursive schema (a tree of nodes, each with a secret): the pointers would
        # never end, so the value where the recursion starts again is secret as a whole
        if not probing:
            inner: dict[str, Any] = {}
            _collect(node, pointer, root, inner, frozenset(), probing=True)
            if inner:
                found.setdefault(pointer, owner)
        return
    seen = seen | {id(node)}
    if not top and is_secret(node):
        found.setdefault(pointer, owner)
        return
    target = _resolve(root, node.get("$ref"))
    if target is not None:
        _collect(target, pointer, root, found, seen, top=top, probing=probing, owner=owner)
    for key in _SAME_VALUE:
        branches = node.get(key)
        if isinstance(branches, list):
            for branch in branches:
                _collect(branch, pointer, root, found, seen, top=top, probing=probing, owner=owner)
    for key in _SAME_VALUE_ONE:
        _collect(node.get(key), pointer, root, found, seen, top=top, probing=probing, owner=owner)
    properties = node.get("properties")
    if isinstance(properties, Mapping):
        for name, sub in properties.items():
            escaped = str(name).replace("~", "~0").replace("/", "~1")
            _collect(sub, f"{pointer}/{escaped}", root, found, seen, probing=probing, owner=sub)
    if top:
        return  # the arguments object as a whole is never one secret
    for key in _UNNAMED_PARTS:
        value = node.get(key)
        if isinstance(value, Mapping) and key == "patternProperties":
            parts: list[Any] = list(value.values())
        else:
            parts = value if isinstance(value, list) else [value]
        parts_found: dict[str, Any] = {}
        for part in parts:
            _collect(part, pointer, root, parts_found, seen, probing=probing, owner=owner)
        if parts_found:
            found.setdefault(pointer, owner)
            return


#: secrets shorter than this are not masked in free text (see flwd.engine.output)
MIN_MASKED_LENGTH = 4


def short_secrets(schema: Mapping[str, Any]) -> list[str]:
    """Pointers of the secrets whose schema lets a value be shorter than
    `MIN_MASKED_LENGTH` characters: such a value is still `***` in stored arguments and
    wherever it stands alone in a result, but not masked inside log lines. A secret is
    long enough when its schema (with its `$ref` and `allOf` parts) says `minLength` of
    at least 4, a `minimum` of at least 1000, or a `const`/`enum` of long values; an
    array when its `items` are."""
    found: dict[str, Any] = {}
    _collect(schema, "", schema, found, frozenset(), top=True)
    keep = secret_pointers(schema)
    return [p for p in keep if not _long_enough(found.get(p), schema, frozenset())]


def _long_enough(node: Any, root: Mapping[str, Any], seen: frozenset[int]) -> bool:
    if not isinstance(node, Mapping) or id(node) in seen:
        return False
    seen = seen | {id(node)}
    length = node.get("minLength")
    minimum = node.get("minimum", node.get("exclusiveMinimum"))
    choices = [node["const"]] if "const" in node else node.get("enum")
    if (
        (isinstance(length, int) and length >= MIN_MASKED_LENGTH)
        or (isinstance(minimum, int | float) and minimum >= 10 ** (MIN_MASKED_LENGTH - 1))
        or (
            isinstance(choices, list)
            and bool(choices)
            and all(len(str(c)) >= MIN_MASKED_LENGTH for c in choices)
        )
    ):
        return True
    if "items" in node:
        return _long_enough(node["items"], root, seen)
    parts = [_resolve(root, node.get("$ref")), *(node.get("allOf") or [])]
    return any(_long_enough(part, root, seen) for part in parts)


def _resolve(root: Mapping[str, Any], ref: Any) -> Any:
    """The subschema a local `$ref` (`#/$defs/name`, any `#/...` pointer) names, or None."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node: Any = root
    for raw in ref[1:].split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


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
