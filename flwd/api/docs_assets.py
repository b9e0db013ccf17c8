"""The Swagger UI page of `/api/docs`, with its JavaScript, CSS and icon served by flwd.

Litestar's Swagger plugin loads Swagger UI from a CDN by default, so the page stayed blank
without internet access. The files come from the `swagger-ui-py` package instead (its
`swagger_ui/static` folder is the upstream `swagger-ui-dist` build; see docs/decisions.md)
and are served read-only under `/api/docs/assets/`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

ASSETS_PATH = "/api/docs/assets"
#: The files the page loads, all in the package's static folder.
SWAGGER_FILES = (
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "swagger-ui.css",
    "favicon-32x32.png",
)


def swagger_ui_dir() -> Path:
    """The `static` folder of the installed `swagger_ui` package, found without importing
    it (its `__init__` pulls in Jinja2 and web-framework adapters flwd does not use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def swagger_plugin(path: str = "/") -> SwaggerRenderPlugin:
    """Swagger UI whose every asset is a same-origin path under `ASSETS_PATH`."""
    return SwaggerRenderPlugin(
        path=path,
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )


def assets_router() -> Router:
    """`GET /api/docs/assets/{file}`: the Swagger UI files, cacheable for a day."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[swagger_ui_dir()],
        name="docs-assets",
        cache_control=CacheControlHeader(max_age=86400, public=True),
        include_in_schema=False,
    )
