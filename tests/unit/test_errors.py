"""The problem table: every domain error names its problem type, the server renders it
from the class, and the client maps the rendered problem back to the same class."""

from __future__ import annotations

import inspect

import msgspec
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from flwd import errors
from flwd.api.problems import EXCEPTION_HANDLERS, HTTP_PROBLEMS, PROBLEM_TYPES
from flwd.client import ClientError, problem_to_error


def domain_classes() -> list[type[errors.FlwdError]]:
    return [
        value
        for _, value in inspect.getmembers(errors, inspect.isclass)
        if issubclass(value, errors.FlwdError)
    ]


def test_every_domain_error_has_a_problem_type_in_the_table() -> None:
    for cls in domain_classes():
        assert PROBLEM_TYPES[cls.slug] == (cls.status, cls.title), cls
    # a slug is a domain error's or an HTTP-level refusal's, never both
    assert not set(HTTP_PROBLEMS) & set(errors.problem_classes())
    assert set(PROBLEM_TYPES) == set(HTTP_PROBLEMS) | set(errors.problem_classes())


def test_shared_slugs_map_back_to_the_most_specific_class() -> None:
    assert errors.problem_class("validation-error") is errors.ArgumentsInvalid
    assert errors.problem_class("not-found") is errors.NotFound
    assert errors.problem_class("job-not-found") is errors.JobNotFound
    assert errors.problem_class("unsupported-media-type") is None


CASES: list[errors.FlwdError] = [
    errors.JobNotFound("backup/daily"),
    errors.RunNotFound("run_1"),
    errors.ArtifactNotFound("artifact_1"),
    errors.ArgumentsInvalid(
        "bad", [errors.FieldError(path="/target", message="'target' is required")]
    ),
    errors.JobNotRunnable("backup/daily", ["config.yaml:3: invalid YAML"]),
    errors.RunNotCancellable("run_1", "success"),
    errors.IdempotencyKeyReused("k1"),
    errors.QueueFull(12, 7),
    errors.PermissionDenied("runs:write is required"),
    errors.StorageError("disk gone"),
    errors.Conflict("busy"),
    errors.NotFound("nothing here"),
]


@pytest.mark.parametrize("error", CASES, ids=lambda e: type(e).__name__)
async def test_a_rendered_error_maps_back_to_its_class(error: errors.FlwdError) -> None:
    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise error

    app = Litestar([boom], exception_handlers=EXCEPTION_HANDLERS)
    async with AsyncTestClient(app) as http:
        response = await http.get("/boom")
    assert response.status_code == error.status
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = msgspec.json.decode(response.content)
    assert problem["type"] == errors.PROBLEM_BASE + error.slug
    assert problem["title"] == error.title and problem["detail"] == error.detail
    context = {"job_id": "backup/daily", "run_id": "run_1", "artifact_id": "artifact_1"}
    back = problem_to_error(problem, response.status_code, {**context, "key": "k1"})
    assert type(back) is type(error)
    assert back.detail == error.detail
    # the problem does not carry the run's status, only the wording does
    lost = {"run_status", "depth"}
    assert {k: v for k, v in vars(back).items() if k not in lost} == {
        k: v for k, v in vars(error).items() if k not in lost
    }


async def test_http_level_problems_become_client_errors_with_their_slug() -> None:
    problem = {
        "type": errors.PROBLEM_BASE + "unsupported-media-type",
        "title": "Unsupported Media Type",
        "status": 415,
        "detail": "send JSON",
    }
    error = problem_to_error(problem, 415)
    assert isinstance(error, ClientError)
    assert (error.slug, error.status, error.detail) == ("unsupported-media-type", 415, "send JSON")
    internal = problem_to_error({"type": errors.PROBLEM_BASE + "internal-error"}, 500)
    assert isinstance(internal, ClientError) and internal.status == 500
    foreign = problem_to_error({"type": "about:blank", "detail": "?"}, 418)
    assert isinstance(foreign, ClientError) and foreign.slug == ""
