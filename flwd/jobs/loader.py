"""Turn one job folder into a `JobSpec`, or an `InvalidJob` listing everything wrong.

Pure and synchronous: reads the folder's config and scripts, touches nothing else. Every
problem becomes a `Diagnostic` with the file, the line where it can be found and a reason
a person can act on; the loader collects as many as it can instead of stopping at one.
"""

from __future__ import annotations

import os
import re
from typing import Any

from flwd.jobs.config import STEP_KEYS, RawConfig, convert_config, unknown_keys
from flwd.jobs.folder import (
    CONFIG_NAME,
    JobFolder,
    Problems,
    env_strings,
    parse_timeout,
    pointer,
)
from flwd.jobs.ids import split_job_id
from flwd.jobs.schemas import (
    DEFAULT_ARGS_SCHEMA,
    MIN_MASKED_LENGTH,
    close_object_schemas,
    schema_issues,
    secret_pointers,
    short_secrets,
    unrunnable_issues,
)
from flwd.jobs.step_builder import build_steps
from flwd.jobs.yamlfile import ConfigUnreadable, decode_config, parse_config
from flwd.models import ConcurrencySpec, InvalidJob, JobSpec, RetentionSpec, ToolAnnotations
from flwd.settings import SettingsError, parse_duration


def load_job(folder: JobFolder) -> JobSpec | InvalidJob:
    """Load `folder`; never raises for anything the folder contains."""
    problems = Problems(config_path=os.path.join(folder.path, CONFIG_NAME))
    spec = _load(folder, problems)
    if spec is None or problems.found:
        return InvalidJob(
            id=folder.job_id or os.path.basename(folder.path),
            source=folder.source,
            path=folder.path,
            diagnostics=tuple(problems.found),
        )
    return spec


def _load(folder: JobFolder, problems: Problems) -> JobSpec | None:
    if not folder.job_id:
        problems.file(
            folder.path,
            "folder name has no letters or digits, so it cannot become a job id; rename it",
        )
    if isinstance(folder.config, OSError):
        problems.file(problems.config_path, f"cannot be read: {folder.config.strerror}")
        return None
    try:
        problems.text = decode_config(folder.config)
        data = parse_config(problems.text)
    except ConfigUnreadable as exc:
        problems.file(problems.config_path, exc.reason, exc.line)
        return None
    if data is None:  # an empty config.yaml is fine: numbered scripts may say what runs
        data = {}
    if not isinstance(data, dict):
        kinds: dict[type, str] = {list: "a list", str: "a single string"}
        kind = kinds.get(type(data), type(data).__name__)
        problems.config((), f"must be a mapping of keys such as 'command:', not {kind}")
        return None
    for path, reason in unknown_keys(data):
        problems.config(path, reason)
    raw = convert_config(_without_unknown(data))
    if isinstance(raw, tuple):
        problems.config(*raw)
        return None
    return _build(folder, raw, problems)


def _without_unknown(data: dict[Any, Any]) -> dict[str, Any]:
    """Drop unknown keys (already reported) so type checks still run on the rest."""
    known = {k: v for k, v in data.items() if k in RawConfig.__struct_fields__}
    if isinstance(known.get("steps"), list):
        known["steps"] = [
            {k: v for k, v in s.items() if k in STEP_KEYS} if isinstance(s, dict) else s
            for s in known["steps"]
        ]
    return known


def _build(folder: JobFolder, raw: RawConfig, problems: Problems) -> JobSpec | None:
    args: dict[str, Any] = DEFAULT_ARGS_SCHEMA
    if raw.args is not None:
        issues = list(schema_issues(raw.args, require_object=True))
        args = close_object_schemas(raw.args)
        if not issues:  # only a valid schema can check its defaults (closed, as runs see it)
            issues = list(unrunnable_issues(args))
        for path, reason in issues:
            problems.config(("args", *path), f"args{pointer(path)} {reason}")
    if raw.result_schema is not None:
        for path, reason in schema_issues(raw.result_schema, require_object=False):
            problems.config(("result_schema", *path), f"result_schema{pointer(path)} {reason}")
    timeout = parse_timeout(raw.timeout, ("timeout",), problems)
    env = env_strings(raw.env)
    steps = build_steps(folder, raw, env, problems)
    concurrency = _concurrency(raw, args, problems)
    retention = _retention(raw, problems)
    if problems.found or steps is None:
        return None
    secrets = secret_pointers(args)
    if secrets:
        for short in short_secrets(args):
            problems.warn(
                ("args",),
                f"secret argument {short} may be shorter than {MIN_MASKED_LENGTH} characters, "
                "and so short a value is not masked in log lines (only where it stands "
                f"alone); give it minLength: {MIN_MASKED_LENGTH}",
            )
    namespace, name = split_job_id(folder.job_id)
    return JobSpec(
        id=folder.job_id,
        name=name,
        namespace=namespace,
        source=folder.source,
        path=folder.path,
        title=raw.name,
        description=raw.description,
        version=None if raw.version is None else str(raw.version),
        tags=tuple(raw.tags),
        args=args,
        steps=steps,
        env=env,
        timeout=timeout,
        concurrency=concurrency,
        retries=raw.retries,
        security_profile=raw.security_profile,
        result_schema=raw.result_schema,
        secret_args=secrets,
        digest=folder.digest,
        retention=retention,
        annotations=_annotations(raw),
        warnings=tuple(problems.warnings),
    )


def _annotations(raw: RawConfig) -> ToolAnnotations | None:
    """`annotations: {read_only, destructive, idempotent}`: hints passed on to agents."""
    if raw.annotations is None:
        return None
    given = raw.annotations
    return ToolAnnotations(
        read_only=given.read_only, destructive=given.destructive, idempotent=given.idempotent
    )


def _retention(raw: RawConfig, problems: Problems) -> RetentionSpec | None:
    """`retention: {max_age, max_runs}`: either may be left out (the server's default)
    or be 0 (no limit of that kind)."""
    if raw.retention is None:
        return None
    max_age: float | None = None
    if raw.retention.max_age is not None:
        try:
            max_age = parse_duration(raw.retention.max_age)
        except SettingsError as exc:
            problems.config(("retention", "max_age"), f"retention.max_age: {exc}")
    return RetentionSpec(max_age=max_age, max_runs=raw.retention.max_runs)


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _concurrency(
    raw: RawConfig, args: dict[str, Any], problems: Problems
) -> ConcurrencySpec | None:
    if raw.concurrency is None:
        return None
    if isinstance(raw.concurrency, int):
        if raw.concurrency < 1:
            problems.config(("concurrency",), "concurrency: the limit must be at least 1")
            return None
        return ConcurrencySpec(limit=raw.concurrency)
    key = raw.concurrency.key
    known = args.get("properties", {})
    for name in _PLACEHOLDER.findall(key or ""):
        if name not in known:
            problems.config(
                ("concurrency", "key"),
                f"concurrency.key: '{{{name}}}' does not name an argument in args.properties",
            )
    return ConcurrencySpec(limit=raw.concurrency.limit, key=key)
