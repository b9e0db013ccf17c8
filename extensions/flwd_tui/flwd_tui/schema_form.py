"""From a job's argument JSON Schema to the fields of its run form, and back from what the
user typed to the `args` object of a run.

Pure logic, no widgets: `form_fields(schema, secret_pointers)` maps each property to a
`FormField` of one `FieldKind`; `parse_value(field, text)` turns the text of one field into
its JSON value (or raises `FieldError`), checked against the field's own sub-schema with
`jsonschema` so the form says what is wrong before the server does. What the form cannot
map to one widget (`anyOf`, `oneOf`, `allOf`, a `$ref` to a `$ref`, arrays of objects,
objects without properties) becomes a `JSON` field: a JSON editor validated as typed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

__all__ = [
    "FieldError",
    "FieldKind",
    "FormField",
    "assemble_args",
    "form_fields",
    "parse_value",
    "pointer_escape",
]

#: Nesting of objects the form shows as nested fields; deeper ones get a JSON editor.
MAX_DEPTH = 4


class FieldKind(enum.StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    ENUM = "enum"
    ARRAY = "array"  # of scalars: one item per line
    OBJECT = "object"  # nested fields
    JSON = "json"  # anything else: a JSON editor


class FieldError(ValueError):
    """What the user typed in one field is not a valid value for it."""


@dataclass(frozen=True)
class FormField:
    """One field of a run form. `pointer` is its JSON Pointer in the arguments (what the
    server's validation errors name); `schema` its sub-schema (a `$ref` resolved)."""

    pointer: str
    name: str
    kind: FieldKind
    schema: Mapping[str, Any]
    required: bool = False
    secret: bool = False
    default: Any = None
    has_default: bool = False
    description: str = ""
    options: tuple[Any, ...] = ()
    item_kind: FieldKind | None = None
    children: tuple[FormField, ...] = ()

    @property
    def bounds(self) -> str:
        """The schema's limits in words (`1..10`, `≤ 64 chars`, `format: email`)."""
        s = self.schema
        parts: list[str] = []
        low = s.get("minimum", s.get("exclusiveMinimum"))
        high = s.get("maximum", s.get("exclusiveMaximum"))
        if low is not None or high is not None:
            lo = "" if low is None else ("(" if "exclusiveMinimum" in s else "[") + str(low)
            hi = "" if high is None else str(high) + (")" if "exclusiveMaximum" in s else "]")
            parts.append(f"{lo or '(-∞'}, {hi or '∞)'}")
        for label, low_key, high_key in (
            ("length", "minLength", "maxLength"),
            ("items", "minItems", "maxItems"),
        ):
            if low_key in s and high_key in s:
                parts.append(f"{label} {s[low_key]}..{s[high_key]}")
            elif low_key in s:
                parts.append(f"{label} ≥ {s[low_key]}")
            elif high_key in s:
                parts.append(f"{label} ≤ {s[high_key]}")
        if "pattern" in s:
            parts.append(f"pattern {s['pattern']}")
        fmt = s.get("format")
        if fmt and fmt != "secret":
            parts.append(f"format {fmt}")
        return "; ".join(parts)

    def initial_text(self) -> str:
        """What the field shows before the user types: the default, as text."""
        if not self.has_default or self.secret:
            return ""
        value = self.default
        if self.kind is FieldKind.JSON:
            return json.dumps(value, indent=2)
        if self.kind is FieldKind.ARRAY:
            items = value if isinstance(value, list) else []
            return "\n".join(str(item) for item in items)
        if self.kind is FieldKind.BOOLEAN:
            return "true" if value else "false"
        return "" if value is None else str(value)


def pointer_escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """`schema` with one local `$ref` followed; None for anything deeper (a ref to a ref,
    a remote ref, a ref with siblings other than annotations)."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return None
    target: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, Mapping) or part not in target:
            return None
        target = target[part]
    if not isinstance(target, Mapping) or "$ref" in target:
        return None
    merged = dict(target)
    merged.update({k: v for k, v in schema.items() if k != "$ref"})
    return merged


def _is_secret(schema: Mapping[str, Any]) -> bool:
    return schema.get("format") == "secret" or schema.get("writeOnly") is True


_SCALARS = {
    "string": FieldKind.STRING,
    "integer": FieldKind.INTEGER,
    "number": FieldKind.NUMBER,
    "boolean": FieldKind.BOOLEAN,
}


def _kind(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> FieldKind:
    if any(key in schema for key in ("anyOf", "oneOf", "allOf", "not", "if")):
        return FieldKind.JSON
    if schema.get("enum"):
        return FieldKind.ENUM
    if "const" in schema:
        return FieldKind.ENUM
    kind = schema.get("type")
    if isinstance(kind, list):
        return FieldKind.JSON
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, Mapping):
            resolved = _resolve(items, root)
            if (
                resolved is not None
                and resolved.get("type") in ("string", "integer", "number")
                and not any(k in resolved for k in ("anyOf", "oneOf", "enum"))
            ):
                return FieldKind.ARRAY
        return FieldKind.JSON
    if kind == "object" or "properties" in schema:
        if schema.get("properties") and depth < MAX_DEPTH:
            return FieldKind.OBJECT
        return FieldKind.JSON
    return FieldKind.JSON  # no type: anything goes


def _walk(
    schema: Mapping[str, Any],
    root: Mapping[str, Any],
    prefix: str,
    secrets: frozenset[str],
    depth: int,
) -> Iterator[FormField]:
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    for name, raw in properties.items():
        if not isinstance(raw, Mapping):
            raw = {}
        pointer = f"{prefix}/{pointer_escape(name)}"
        resolved = _resolve(raw, root)
        sub: Mapping[str, Any] = resolved if resolved is not None else raw
        kind = FieldKind.JSON if resolved is None else _kind(sub, root, depth)
        secret = pointer in secrets or _is_secret(sub)
        item_kind: FieldKind | None = None
        children: tuple[FormField, ...] = ()
        if kind is FieldKind.ARRAY:
            items = _resolve(sub.get("items") or {}, root) or {}
            item_kind = _SCALARS.get(str(items.get("type")), FieldKind.STRING)
            secret = secret or _is_secret(items)
        elif kind is FieldKind.OBJECT:
            children = tuple(_walk(sub, root, pointer, secrets, depth + 1))
        options: tuple[Any, ...] = ()
        if kind is FieldKind.ENUM:
            options = tuple(sub["enum"]) if "enum" in sub else (sub["const"],)
        yield FormField(
            pointer=pointer,
            name=name,
            kind=kind,
            schema=sub,
            required=name in required,
            secret=secret,
            default=sub.get("default"),
            has_default="default" in sub,
            description=str(sub.get("description") or sub.get("title") or ""),
            options=options,
            item_kind=item_kind,
            children=children,
        )


def form_fields(
    schema: Mapping[str, Any] | None, secret_pointers: list[str] | None = None
) -> list[FormField]:
    """The fields of the run form of a job whose `args` schema is `schema` (none for a job
    without arguments). `secret_pointers` are the job's `secret_args`."""
    if secret_pointers is None:
        secret_pointers = []
    if not schema or not isinstance(schema, Mapping):
        return []
    return list(_walk(schema, schema, "", frozenset(secret_pointers), 0))


def _scalar(kind: FieldKind, text: str) -> Any:
    if kind is FieldKind.INTEGER:
        try:
            return int(text.strip())
        except ValueError:
            raise FieldError(f"{text.strip()!r} is not an integer") from None
    if kind is FieldKind.NUMBER:
        try:
            number = float(text.strip())
        except ValueError:
            raise FieldError(f"{text.strip()!r} is not a number") from None
        return int(number) if number.is_integer() and "." not in text else number
    if kind is FieldKind.BOOLEAN:
        lowered = text.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise FieldError(f"{text.strip()!r} is not true or false")
    return text


_MISSING = object()


def parse_value(form_field: FormField, text: str, root: Mapping[str, Any] | None = None) -> Any:
    """The JSON value of `form_field` from its text, checked against its sub-schema;
    `_MISSING` (left out of the args) when the text is empty and the field is not a
    string the user may leave empty on purpose. Raises `FieldError` with a short reason."""
    kind = form_field.kind
    if kind is FieldKind.OBJECT:
        raise FieldError("an object field has no text of its own")
    if text.strip() == "" and kind is not FieldKind.STRING:
        return _MISSING
    if text == "" and kind is FieldKind.STRING:
        return _MISSING
    if kind is FieldKind.JSON:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FieldError(f"not JSON: {exc.msg} (line {exc.lineno})") from None
    elif kind is FieldKind.ENUM:
        matches = [option for option in form_field.options if json.dumps(option) == text]
        if not matches:
            matches = [option for option in form_field.options if str(option) == text]
        if not matches:
            raise FieldError(f"{text!r} is not one of the choices")
        value = matches[0]
    elif kind is FieldKind.ARRAY:
        item_kind = form_field.item_kind or FieldKind.STRING
        value = [_scalar(item_kind, line) for line in text.splitlines() if line.strip()]
    else:
        value = _scalar(kind, text)
    check(form_field, value, root)
    return value


def check(form_field: FormField, value: Any, root: Mapping[str, Any] | None = None) -> None:
    """Raise `FieldError` when `value` breaks the field's own schema (local `$ref`s are
    resolved against `root`, the job's whole schema)."""
    schema = dict(form_field.schema)
    if root is not None:
        schema = {**{k: v for k, v in root.items() if k in ("$defs", "definitions")}, **schema}
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "".join(f"/{part}" for part in error.absolute_path)
        raise FieldError(f"{where + ': ' if where else ''}{error.message}")


def is_missing(value: Any) -> bool:
    return value is _MISSING


def assemble_args(values: Mapping[str, Any]) -> dict[str, Any]:
    """The args object from `{pointer: value}` of the fields that have a value, nesting
    `/a/b` under `a`."""
    args: dict[str, Any] = {}
    for pointer, value in values.items():
        if value is _MISSING:
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
        target = args
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return args
