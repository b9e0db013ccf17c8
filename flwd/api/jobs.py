"""`/api/v1/jobs`: the catalog of discovered jobs (job ids may contain `/`)."""

from __future__ import annotations

from litestar import Controller, get
from litestar.params import FromPath, FromQuery

from flwd.api.deps import Registry
from flwd.api.openapi import ExampleOperation
from flwd.api.problems import problem_responses
from flwd.api.schemas import InvalidJobInfo, JobDetail, JobList, JobSummary


class JobController(Controller):
    path = "/jobs"
    tags = ["jobs"]

    @get(
        operation_id="listJobs",
        operation_class=ExampleOperation,
        responses=problem_responses(400, 500),
    )
    async def list_jobs(
        self,
        registry: Registry,
        source: FromQuery[str | None] = None,
        namespace: FromQuery[str | None] = None,
    ) -> JobList:
        """Every discovered job, optionally filtered; folders that failed to load are
        listed under `invalid` with their diagnostics."""
        catalog = registry.catalog
        invalid = [
            InvalidJobInfo.of(j)
            for j in catalog.invalid
            if (source is None or j.source == source)
            and (namespace is None or j.id.rpartition("/")[0] == namespace)
        ]
        jobs = [JobSummary.of(job) for job in catalog.list(namespace=namespace, source=source)]
        return JobList(jobs=jobs, invalid=invalid)

    @get(
        "/{job_id:path}",
        operation_id="getJob",
        operation_class=ExampleOperation,
        responses=problem_responses(400, 404, 422, 500),
    )
    async def get_job(self, registry: Registry, job_id: FromPath[str]) -> JobDetail:
        """One job with its argument schema (`args`, JSON Schema 2020-12)."""
        return JobDetail.of(registry.catalog.get(job_id.strip("/")))
