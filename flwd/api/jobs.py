"""`/api/v1/jobs`: the catalog of discovered jobs (job ids may contain `/`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromPath, FromQuery

from flwd.access import VIEW_JOBS
from flwd.api.access import actor_of, route_action
from flwd.api.deps import Registry
from flwd.api.openapi import ExampleOperation
from flwd.api.problems import problem_responses
from flwd.api.schemas import InvalidJobInfo, JobDetail, JobList, JobSummary
from flwd.errors import JobNotFound


class JobController(Controller):
    path = "/jobs"
    tags = ["jobs"]
    opt = route_action(VIEW_JOBS)

    @get(
        operation_id="listJobs",
        operation_class=ExampleOperation,
        responses=problem_responses(400, 401, 403, 500),
    )
    async def list_jobs(
        self,
        request: Request[Any, Any, Any],
        registry: Registry,
        source: FromQuery[str | None] = None,
        namespace: FromQuery[str | None] = None,
    ) -> JobList:
        """Every discovered job, optionally filtered; folders that failed to load are
        listed under `invalid` with their diagnostics. A caller confined to job patterns
        sees only the jobs they match."""
        catalog = registry.catalog
        actor = actor_of(request)
        invalid = [
            InvalidJobInfo.of(j)
            for j in catalog.invalid
            if (source is None or j.source == source)
            and (namespace is None or j.id.rpartition("/")[0] == namespace)
            and (actor is None or actor.sees_job(j.id))
        ]
        jobs = [
            JobSummary.of(job)
            for job in catalog.list(namespace=namespace, source=source)
            if actor is None or actor.sees_job(job.id)
        ]
        return JobList(jobs=jobs, invalid=invalid)

    @get(
        "/{job_id:path}",
        operation_id="getJob",
        operation_class=ExampleOperation,
        responses=problem_responses(400, 401, 403, 404, 422, 500),
    )
    async def get_job(
        self, request: Request[Any, Any, Any], registry: Registry, job_id: FromPath[str]
    ) -> JobDetail:
        """One job with its argument schema (`args`, JSON Schema 2020-12)."""
        job_id = job_id.strip("/")
        actor = actor_of(request)
        if actor is not None and not actor.sees_job(job_id):
            raise JobNotFound(job_id)
        return JobDetail.of(registry.catalog.get(job_id))
