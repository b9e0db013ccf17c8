"""The typed shape of `config.yaml` as written by people, before anything is resolved.

`flwd.jobs.loader` turns these raw structures into a `JobSpec`: durations parsed, scripts
found, interpreters chosen, step graph checked. Keeping the written form separate lets the
loader report a problem against exactly what the user typed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

import msgspec

Scalar = str | int | float | bool
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Duration = str | float


class RawConcurrency(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1)] = 1
    key: str | None = None


class RawRetention(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_age: Duration | None = None
    max_runs: NonNegative | None = None


class RawAnnotations(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None


class RawStep(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str | None = None
    run: str | None = None
    command: str | list[str] | None = None
    script: str | None = None
    interpreter: str | list[str] | None = None
    needs: str | list[str] = []
    timeout: Duration | None = None
    env: dict[str, Scalar] = {}
    retries: NonNegative | None = None


class RawConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str | None = None
    description: str | None = None
    version: str | int | None = None
    tags: list[str] = []
    args: dict[str, Any] | None = None
    command: str | list[str] | None = None
    interpreter: str | list[str] | None = None
    steps: list[RawStep] | None = None
    env: dict[str, Scalar] = {}
    timeout: Duration | None = None
    concurrency: int | RawConcurrency | None = None
    retries: NonNegative = 0
    security_profile: str | None = None
    result_schema: dict[str, Any] | None = None
    retention: RawRetention | None = None
    annotations: RawAnnotations | None = None


CONFIG_KEYS = frozenset(RawConfig.__struct_fields__)
STEP_KEYS = frozenset(RawStep.__struct_fields__)

#: A problem in the written config: the key path to the offending value and the reason.
ConfigProblem = tuple[tuple[str | int, ...], str]


def unknown_keys(data: Mapping[Any, Any]) -> Iterator[ConfigProblem]:
    """One problem per unknown key, top level and steps, with a suggestion for typos
    (`timout` -> `timeout`); unknown keys are refused so a typo cannot go unnoticed."""
    yield from _unknown(data, CONFIG_KEYS, ())
    steps = data.get("steps")
    if isinstance(steps, list):
        for index, step in enumerate(steps):
            if isinstance(step, dict):
                yield from _unknown(step, STEP_KEYS, ("steps", index))


def _unknown(
    data: Mapping[Any, Any], known: frozenset[str], at: tuple[str | int, ...]
) -> Iterator[ConfigProblem]:
    where = "in a step" if at else "at the top level"
    for key in data:
        if key in known:
            continue
        reason = f"unknown key '{key}' {where}"
        close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.7)
        if close:
            reason += f"; did you mean '{close[0]}'?"
        else:
            reason += f" (known keys: {', '.join(sorted(known))})"
        yield (*at, str(key)), reason


_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def convert_config(data: Mapping[str, Any]) -> RawConfig | ConfigProblem:
    """`data` as a `RawConfig`, or the first type problem with its key path."""
    try:
        return msgspec.convert(data, RawConfig)
    except msgspec.ValidationError as exc:
        message = str(exc)
        text, _, where = message.rpartition(" - at `$")
        if not text:
            return (), message
        path: list[str | int] = []
        for name, index in _PATH_PART.findall(where.rstrip("`")):
            if name:
                path.append(name)
            elif index != "...":
                path.append(int(index))
        where_text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        where_text = where_text.lstrip(".")
        reason = f"{where_text}: {text[0].lower()}{text[1:]}" if where_text else text
        return tuple(path), reason
