"""Validate a run's arguments against its job's `args` schema, and keep secrets secret.

Validation is JSON Schema Draft 2020-12 (`jsonschema`) in two passes: the first fills in
`default` values wherever the schema's `properties` are reached (nested objects and `$ref`
included), the second collects every error of the completed arguments. Defaults are thus
applied before `required` is checked, whatever order the schema's keywords are in. A
schema with no `default` anywhere skips the first pass.
"""

from __future__ import annotations

import copy
import json
import re
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
from jsonschema import Draft202012Validator, ValidationError, validators

from flwd.errors import ArgumentsInvalid, FieldError
from flwd.jobs.schemas import shorten_values
from flwd.models import JobSpec

SECRET_MASK = "***"


def _fill_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if isinstance(instance, dict):
        for name, sub in properties.items():
            if isinstance(sub, dict) and "default" in sub and name not in instance:
                instance[name] = copy.deepcopy(sub["default"])
    yield from Draft202012Validator.VALIDATORS["properties"](
        validator, properties, instance, schema
    )


_Defaulting = validators.extend(Draft202012Validator, {"properties": _fill_defaults})
# Validators are cheap to use but not to build; the API validates on every run.
_validators: dict[tuple[str, str], tuple[Any | None, Draft202012Validator]] = {}
_CACHE_LIMIT = 4096


def _schema_key(job: JobSpec) -> tuple[str, str]:
    return (job.id, job.digest or json.dumps(job.args, sort_keys=True))


def _validators_for(job: JobSpec) -> tuple[Any | None, Draft202012Validator]:
    """(the defaulting validator, or None for a schema without a `default` anywhere;
    the strict validator)"""
    key = _schema_key(job)
    pair = _validators.get(key)
    if pair is None:
        checker = Draft202012Validator.FORMAT_CHECKER
        # a property named "default" also matches: that only costs the first pass
        defaulting = _Defaulting(job.args) if '"default"' in json.dumps(job.args) else None
        pair = (defaulting, Draft202012Validator(job.args, format_checker=checker))
        if len(_validators) >= _CACHE_LIMIT:
            _validators.clear()
        _validators[key] = pair
    return pair


def validate_args(job: JobSpec, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments with defaults applied, or `ArgumentsInvalid` listing every error as a
    JSON Pointer (a missing required argument points at where it should be: `/target`)."""
    instance: Any = copy.deepcopy(dict(args)) if args is not None else {}
    defaulting, strict = _validators_for(job)
    if defaulting is not None:
        # this pass only fills in defaults: errors are reported by the second pass, on
        # the completed instance (the iterator is consumed and its errors dropped)
        deque(defaulting.iter_errors(instance), maxlen=0)
    errors: list[FieldError] = []
    secrets = secret_values(job, instance)
    for error in sorted(strict.iter_errors(instance), key=lambda e: list(map(str, e.path))):
        errors.extend(_field_errors(job, error, secrets))
    if errors:
        unique = list(dict.fromkeys(errors))
        count = f"{len(unique)} error{'s' if len(unique) != 1 else ''}"
        raise ArgumentsInvalid(f"Arguments for job '{job.id}' are invalid ({count})", unique)
    return dict(instance)


def _field_errors(job: JobSpec, error: ValidationError, secrets: list[str]) -> Iterator[FieldError]:
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        for name in error.validator_value:
            if name not in error.instance:
                yield FieldError(path=_pointer([*path, name]), message=f"'{name}' is required")
        return
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        for name in _additional(error.instance, schema):
            what = "an argument of this job" if not path else "a known property here"
            yield FieldError(path=_pointer([*path, name]), message=f"'{name}' is not {what}")
        return
    yield FieldError(path=_pointer(path), message=_message(job, error, path, secrets))


def _message(job: JobSpec, error: ValidationError, path: list[Any], secrets: list[str]) -> str:
    """jsonschema's message, which quotes the failing value: never let it echo a secret,
    nor more than a short prefix of a long value.
    An error at (or inside) a secret argument gets a message without its value; an error about the
    whole arguments object (`anyOf`, `maxProperties`, ...) quotes them with secrets masked;
    anything else that still contains a secret's text falls back to a generic message."""
    generic = f"the value does not satisfy '{error.validator}' of the schema"
    if is_secret_pointer(job, _pointer(path)):
        return f"must be of type {error.validator_value}" if error.validator == "type" else generic
    message = str(error.message)
    quoted = error.instance
    if not path and isinstance(error.instance, dict):
        quoted = mask_secrets(job, error.instance)
        message = message.replace(repr(error.instance), repr(quoted))
    if any(s in message or repr(s)[1:-1] in message for s in secrets):
        return generic
    return shorten_values(message, quoted)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Names `additionalProperties: false` refuses: not in `properties`, matching no
    `patternProperties` pattern (the same rule jsonschema applies)."""
    properties = schema.get("properties", {})
    patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
    return [
        name
        for name in instance
        if name not in properties and not any(p.search(name) for p in patterns)
    ]


def _pointer(path: list[Any]) -> str:
    """RFC 6901: `~` and `/` inside names are escaped."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def is_secret_pointer(job: JobSpec, pointer: str) -> bool:
    """Whether the value at `pointer` is, or lies inside, a secret argument."""
    return any(pointer == p or pointer.startswith(p + "/") for p in job.secret_args)


def _parts(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def _at(value: Any, parts: list[str]) -> tuple[Any, Any] | None:
    """(the container holding the value at `parts`, its key) when that value exists."""
    for i, part in enumerate(parts):
        key: Any = part
        if isinstance(value, list):
            if not part.isdigit() or int(part) >= len(value):
                return None
            key = int(part)
        elif not isinstance(value, dict) or part not in value:
            return None
        if i == len(parts) - 1:
            return value, key
        value = value[key]
    return None


def secret_items(job: JobSpec, args: Any) -> Iterator[Any]:
    """The values of the secret arguments present in `args` (None values left out)."""
    for pointer in job.secret_args:
        found = _at(args, _parts(pointer))
        if found is not None and found[0][found[1]] is not None:
            yield found[0][found[1]]


def mask_secrets(job: JobSpec, args: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `args` with the value of each secret (at any depth, whatever its length
    or type) replaced by `***`; a null stays null."""
    masked: dict[str, Any] = dict(args)
    if not job.secret_args:
        return masked
    masked = copy.deepcopy(masked)
    for pointer in job.secret_args:
        found = _at(masked, _parts(pointer))
        if found is not None and found[0][found[1]] is not None:
            found[0][found[1]] = SECRET_MASK
    return masked


def without_secrets(job: JobSpec, args: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `args` with each secret left out (for a restart: given again or missing)."""
    kept: dict[str, Any] = copy.deepcopy(dict(args))
    for pointer in job.secret_args:
        found = _at(kept, _parts(pointer))
        if found is not None:
            del found[0][found[1]]
    return kept


def env_text(value: Any) -> str:
    """How an argument's value is written into its `FLWD_ARG_<NAME>` variable: strings as
    they are, booleans `true`/`false`, null empty, numbers as printed, structures as
    compact JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    return msgspec.json.encode(value).decode()


def secret_values(job: JobSpec, args: Mapping[str, Any]) -> list[str]:
    """Every text form the secret values take on their way to a step, to be masked: each
    string inside a secret as it is, each number as printed, and for an array or object
    also its whole JSON (compact, spaced, with and without `\\u` escapes) and its
    environment form. Empty strings and booleans are left out (redacting every `true` in
    a log would hide nothing and ruin the log); so are null values."""
    found: dict[str, None] = {}
    for value in secret_items(job, args):
        for text in _scalar_texts(value):
            found[text] = None
        if isinstance(value, bool):
            continue
        try:
            if isinstance(value, list | dict):
                for ascii_only in (True, False):
                    for separators in ((", ", ": "), (",", ":")):
                        whole = json.dumps(value, ensure_ascii=ascii_only, separators=separators)
                        found[whole] = None
            found[env_text(value)] = None
        except (TypeError, ValueError, msgspec.EncodeError):
            continue  # not plain JSON (only before validation): its scalars are enough
    found.pop("", None)
    return list(found)


def _scalar_texts(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _scalar_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _scalar_texts(item)
    elif isinstance(value, str):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield json.dumps(value)
        yield str(value)
