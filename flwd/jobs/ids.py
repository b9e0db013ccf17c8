"""Job ids: a job folder's path relative to its source root, normalised segment by segment.

`Backup/Daily_Full` and `backup/daily-full` are the same id, so ids are stable across
operating systems and safe in URLs; two folders that normalise to the same id are a
conflict the scanner reports (it never picks one silently).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def normalise_segment(segment: str) -> str:
    """Lower-case `segment`, turn each run of other characters into `-`, trim the ends.

    Returns "" when nothing usable is left (for example `"__"`); callers report that.
    """
    return _NOT_ALNUM.sub("-", segment.lower()).strip("-")


def job_id_from_parts(parts: Sequence[str]) -> str:
    """The id of the job folder at relative path `parts` (`["Backup", "Daily"]` ->
    `"backup/daily"`); "" when any segment normalises to nothing."""
    normalised = [normalise_segment(part) for part in parts]
    if not normalised or not all(normalised):
        return ""
    return "/".join(normalised)


def split_job_id(job_id: str) -> tuple[str, str]:
    """`(namespace, name)`: `"backup/daily"` -> `("backup", "daily")`; a top-level job
    has the empty namespace: `"hello"` -> `("", "hello")`."""
    namespace, _, name = job_id.rpartition("/")
    return namespace, name


def env_var_for_arg(name: str) -> str:
    """The variable a step reads an argument from: `FLWD_ARG_` + upper-cased name with
    every non-alphanumeric character replaced by `_` (`dry-run` -> `FLWD_ARG_DRY_RUN`)."""
    return "FLWD_ARG_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
