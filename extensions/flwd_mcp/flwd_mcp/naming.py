"""Tool names: one per job, derived from its id, and the names of the generic tools.

A job id is made of segments of `a-z`, `0-9` and `-` joined by `/` (`flwd.jobs.ids`), and
a tool name may hold `A-Z a-z 0-9 _ - .` (the SDK's tool-name rule, SEP-986). The job's
tool name is its id with each `/` written `_`: `backup/daily` is `backup_daily`. Since no
job id contains `_`, two jobs never get the same name and the id can be read back.

Names are kept within 64 characters, the shortest limit agents' model APIs put on tool
names. A longer one keeps its first 52 characters and ends with `__` and 10 hexadecimal
digits of the SHA-256 of the id. A double underscore never comes from a job id (a segment
is never empty), so these names cannot collide with a short one, and the generic tools,
all named `flwd__...`, cannot collide with any job's.
"""

from __future__ import annotations

import hashlib
from typing import Final

MAX_NAME: Final = 64
_KEEP: Final = MAX_NAME - 12

#: the generic tools (docs/mcp.md): a `__` marks them as not a job's
LIST_JOBS: Final = "flwd__list_jobs"
LIST_RUNS: Final = "flwd__list_runs"
GET_RUN: Final = "flwd__get_run"
READ_LOG: Final = "flwd__read_log"
CANCEL_RUN: Final = "flwd__cancel_run"
RESTART_RUN: Final = "flwd__restart_run"
GENERIC: Final = (LIST_JOBS, LIST_RUNS, GET_RUN, READ_LOG, CANCEL_RUN, RESTART_RUN)


def tool_name(job_id: str) -> str:
    """The tool name of job `job_id`: `backup/daily` -> `backup_daily`."""
    name = job_id.replace("/", "_")
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
    return f"{name[:_KEEP]}__{digest}"
