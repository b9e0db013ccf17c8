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
    An error at a secret argument gets a message without its value; an error about the
    whole arguments object (`anyOf`, `maxProperties`, ...) quotes them with secrets masked;
    anything else that still contains a secret's text falls back to a generic message."""
    generic = f"the value does not satisfy '{error.validator}' of the schema"
    if path and path[0] in job.secret_args:
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


def mask_secrets(job: JobSpec, args: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `args` with each secret argument's value replaced by `***`."""
    return {
        name: SECRET_MASK if name in job.secret_args and value is not None else value
        for name, value in args.items()
    }


def secret_values(job: JobSpec, args: Mapping[str, Any]) -> list[str]:
    """The text forms of the secret arguments' values, to redact from output. Strings as
    they are, numbers as printed, structures as JSON; empty strings and booleans are left
    out (redacting every `true` in a log would hide nothing and ruin the log)."""
    found: list[str] = []
    for name in sorted(job.secret_args):
        value = args.get(name)
        if value is None or isinstance(value, bool):
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if text and text not in found:
            found.append(text)
    return found
