"""Unknown query parameters are refused: `?limt=5` is a 400 problem naming `limt`, not a
silently ignored typo (JSON bodies already refuse unknown fields).

The parameters a route accepts are the ones its OpenAPI operation declares: the same
names (aliases included) that Litestar validates, read once per route from the app's
generated schema. Routes outside the schema (the docs pages, `GET /`) are not checked."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request

from flwd.api.problems import InvalidField, ProblemError

_TYPED_PARAM = re.compile(r"\{([^}:]+):[^}]+\}")
_allowed: dict[tuple[int, str, str], frozenset[str] | None] = {}


def _declared(request: Request[Any, Any, Any]) -> frozenset[str] | None:
    """The query parameter names of the request's operation (None: not in the schema)."""
    template = str(request.scope.get("path_template") or "")
    method = request.method.lower()
    key = (id(request.app), template, method)
    if key not in _allowed:
        path = _TYPED_PARAM.sub(r"{\1}", template)
        item = (request.app.openapi_schema.paths or {}).get(path)
        operation = getattr(item, method, None) if item is not None else None
        if operation is None:
            _allowed[key] = None
        else:
            _allowed[key] = frozenset(
                p.name
                for p in operation.parameters or ()
                if getattr(p, "param_in", None) == "query"
            )
    return _allowed[key]


async def refuse_unknown_query(request: Request[Any, Any, Any]) -> None:
    """`before_request` hook: a 400 `validation-error` naming each unknown parameter."""
    if not request.query_params:
        return
    declared = _declared(request)
    if declared is None:
        return
    unknown = sorted({name for name in request.query_params if name not in declared})
    if unknown:
        names = ", ".join(f"`{n}`" for n in unknown)
        accepted = ", ".join(sorted(declared)) or "none"
        raise ProblemError(
            "validation-error",
            f"unknown query parameter {names} (this route accepts: {accepted})",
            errors=[
                InvalidField(path=f"/{n}", message="unknown query parameter", in_="query")
                for n in unknown
            ],
        )
