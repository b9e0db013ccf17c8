"""Who is calling and what they may touch: the vocabulary the access hooks speak.

The core never decides who may do what. For every request it asks the plugins who the
caller is (`actor_from_request`, first answer wins; `None` is an anonymous caller) and
whether that caller may perform an *action* on a *resource* (`permission_allowed`, first
answer wins; the built-in default, registered last, allows everything). The actions and
resources below are the whole vocabulary: the API, the event streams, the CLI's admin
commands and the MCP extension all speak it, so one plugin governs every door.

An `Actor` may also be *confined*: to one tenant and to job-id patterns. The core applies
a confinement itself wherever it lists or looks up runs and jobs (a run outside it answers
404 like a missing one, lists and totals leave it out), because filtering pages of results
one row at a time through a hook would break pagination and totals.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final, Literal

import msgspec

# -- actions ------------------------------------------------------------------------------

#: list the job catalogue, read a job's detail, its schema, its invalid folders
VIEW_JOBS: Final = "view-jobs"
#: start a run of a job (resource: the job, with the tenant the run would belong to)
RUN_JOB: Final = "run-job"
#: list runs, read a run, its steps, its logs, its result, its events (resource: the run)
VIEW_RUNS: Final = "view-runs"
#: cancel a run (resource: the run)
CANCEL_RUN: Final = "cancel-run"
#: restart a run as a new one (resource: the run being restarted)
RESTART_RUN: Final = "restart-run"
#: list and download a run's artifacts (resource: the run)
VIEW_ARTIFACTS: Final = "view-artifacts"
#: follow the global event stream and the catalogue-change stream
VIEW_EVENTS: Final = "view-events"
#: read `/system/info` and the metrics
VIEW_SYSTEM: Final = "view-system"
#: anything administrative: tokens, the audit log, pruning, plugins' admin routes
ADMINISTER: Final = "administer"

#: every action, in the order the documentation lists them
ACTIONS: Final = (
    VIEW_JOBS,
    RUN_JOB,
    VIEW_RUNS,
    CANCEL_RUN,
    RESTART_RUN,
    VIEW_ARTIFACTS,
    VIEW_EVENTS,
    VIEW_SYSTEM,
    ADMINISTER,
)

ResourceKind = Literal["system", "job", "run"]


class Resource(msgspec.Struct, frozen=True, kw_only=True):
    """What an action is performed on.

    - `system`: the server as a whole (events streams, system info, administration);
    - `job`: a job of the catalogue, `job_id` set (and `tenant` for `run-job`: the tenant
      the new run would belong to);
    - `run`: a stored run, `run_id`, `job_id` and `tenant` set.
    """

    kind: ResourceKind
    job_id: str | None = None
    run_id: str | None = None
    tenant: str | None = None


SYSTEM: Final = Resource(kind="system")


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """A caller identified by a plugin.

    `id` is stable and unique (for audit lines and rate limits); `name` is for people.
    `tenant` confines the actor to the runs of one tenant (`None`: every tenant).
    `job_patterns` confines it to the jobs whose id matches one of the patterns (`None`:
    every job); see `job_matches`. `scopes` and `attributes` are for the plugin that made
    the actor: the core does not read them.
    """

    id: str
    name: str
    tenant: str | None = None
    job_patterns: tuple[str, ...] | None = None
    scopes: frozenset[str] = frozenset()
    attributes: dict[str, str] = msgspec.field(default_factory=dict)

    def sees_job(self, job_id: str) -> bool:
        """Whether the actor's confinement lets it see this job (and its runs)."""
        if self.job_patterns is None:
            return True
        return any(job_matches(pattern, job_id) for pattern in self.job_patterns)

    def sees_tenant(self, tenant: str) -> bool:
        """Whether the actor's confinement lets it see runs of this tenant."""
        return self.tenant is None or self.tenant == tenant


def job_matches(pattern: str, job_id: str) -> bool:
    """Whether a job id matches a pattern: `*` stands for any characters within one path
    segment (no `/`), `**` for any characters across segments; anything else is literal.
    `backup/*` matches `backup/daily` but not `backup/db/full`; `backup/**` matches both."""
    return _compiled(pattern).fullmatch(job_id) is not None


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    parts = []
    for token in re.split(r"(\*\*|\*)", pattern):
        if token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]*")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts))
