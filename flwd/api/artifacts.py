"""`/api/v1/artifacts`: files the runs wrote under `$FLWD_ARTIFACTS_DIR`."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import File

from flwd.api.deps import INT64_MAX, MAX_PAGE, Runs, paginated
from flwd.api.openapi import DownloadOperation, ExampleOperation
from flwd.api.problems import problem_responses
from flwd.api.runs import PAGE_HEADERS
from flwd.api.schemas import ArtifactList


class ArtifactController(Controller):
    path = "/artifacts"
    tags = ["artifacts"]

    @get(
        operation_id="listArtifacts",
        operation_class=ExampleOperation,
        response_headers=PAGE_HEADERS,
        responses=problem_responses(400, 500),
    )
    async def list_artifacts(
        self,
        request: Request[Any, Any, Any],
        runs: Runs,
        run_id: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=INT64_MAX)] = 0,
    ) -> Response[ArtifactList]:
        """Artifacts, newest first, optionally of one run."""
        items, total = await runs.list_artifacts(run_id=run_id, limit=limit, offset=offset)
        body = ArtifactList(artifacts=items, total=total)
        return paginated(request, body, total=total, limit=limit, offset=offset)

    @get(
        "/{artifact_id:str}",
        operation_id="downloadArtifact",
        responses=problem_responses(400, 404, 500),
        response_description="The artifact's bytes, streamed, with its media type",
        operation_class=DownloadOperation,
    )
    async def download(self, runs: Runs, artifact_id: FromPath[str]) -> File:
        """Download an artifact (`Content-Disposition: attachment`, streamed from disk)."""
        artifact, path = await runs.get_artifact(artifact_id)
        return File(
            path,
            filename=artifact.name,
            media_type=artifact.media_type,
            content_disposition_type="attachment",
            headers={"X-Checksum-SHA256": artifact.sha256},
        )
