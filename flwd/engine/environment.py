"""A step's environment: what it inherits of the server's, the job's and step's `env`, its
arguments as `FLWD_ARG_*` variables and flwd's own variables; and what must be left out of
it for the kernel to start the step at all (the rest is read from `FLWD_ARGS_FILE`).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from flwd.jobs.arguments import env_text
from flwd.models import JobSpec, StepSpec


def step_environment(
    base: dict[str, str], job: JobSpec, step: StepSpec, args: dict[str, Any], flwd: dict[str, str]
) -> dict[str, str]:
    """The step's environment: an allow-list of the server's, the job's and step's `env`,
    one `FLWD_ARG_<NAME>` per argument, then flwd's own variables (which win)."""
    env = dict(base)
    env.update(job.env)
    env.update(step.env)
    for name, value in args.items():
        key = "FLWD_ARG_" + "".join(c if c.isalnum() else "_" for c in name).upper()
        text = env_text(value)  # the form secret_values() knows, to mask it
        if "\0" not in text:
            env[key] = text
    env.update(flwd)
    env["PYTHONUNBUFFERED"] = "1"
    return env


#: Linux refuses to start a process with one environment string (`NAME=value` and its
#: NUL) longer than this: MAX_ARG_STRLEN, 32 pages of 4 KiB, fixed whatever the stack limit
MAX_ENV_STRING = 32 * 4096
#: room kept free below the kernel's limit on argv and environment together (ARG_MAX):
#: the kernel also counts pointers, the program's path and its own strings
_ARG_SPACE_MARGIN = 64 * 1024


@functools.cache
def _arg_space() -> int:
    try:
        return max(os.sysconf("SC_ARG_MAX"), 256 * 1024) - _ARG_SPACE_MARGIN
    except (ValueError, OSError):
        return 2 * 1024 * 1024 - _ARG_SPACE_MARGIN


def fit_environment(argv: list[str], env: dict[str, str]) -> list[str]:
    """Take out of `env` the argument variables (`FLWD_ARG_*`) the kernel would refuse,
    so that the step starts and reads those arguments from `FLWD_ARGS_FILE`: each one
    longer than `MAX_ENV_STRING`, then the largest ones while argv and environment
    together exceed `ARG_MAX`. The names taken out, in that order."""

    space = _arg_space()
    # every step comes here: first a bound without encoding (4 bytes per character at most)
    chars = [len(key) + len(value) + 2 for key, value in env.items()]
    argv_chars = sum(len(arg) + 1 for arg in argv)
    if max(chars, default=0) * 4 <= MAX_ENV_STRING and (
        (sum(chars) + argv_chars) * 4 + 8 * (len(chars) + len(argv)) <= space
    ):
        return []

    def size(key: str, value: str) -> int:
        return len(key.encode()) + len(value.encode(errors="surrogateescape")) + 2

    sizes = {key: size(key, value) for key, value in env.items()}
    out = [key for key in env if key.startswith("FLWD_ARG_") and sizes[key] > MAX_ENV_STRING]
    total = sum(sizes.values()) + 8 * len(env) + sum(len(a.encode()) + 9 for a in argv)
    total -= sum(sizes[key] + 8 for key in out)
    if total > space:
        candidates = sorted(
            (k for k in env if k.startswith("FLWD_ARG_") and k not in out),
            key=lambda k: -sizes[k],
        )
        for key in candidates:
            if total <= space:
                break
            out.append(key)
            total -= sizes[key] + 8
    for key in out:
        del env[key]
    return out


#: Server environment variables a step inherits; everything else (tokens, cloud keys, the
#: server's own FLWD_* settings) stays out. Security profiles may narrow this further.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
)


def inherited_environment() -> dict[str, str]:
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env
