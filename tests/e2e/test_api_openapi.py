"""The API documentation as a real server serves it: the Swagger UI page loads every asset
from flwd itself (no CDN), and the OpenAPI document carries realistic examples that
validate against their own schemas, plus links from `POST /runs` to the run's routes."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e


class AssetRefs(HTMLParser):
    """Every `<script src>` and `<link href>` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.refs.append((tag, str(found["src"])))
        if tag == "link" and found.get("href"):
            self.refs.append((f"link rel={found.get('rel')}", str(found["href"])))


EXPECTED_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


def test_swagger_ui_assets_are_served_by_flwd(api_server: ServerProcess) -> None:
    with httpx.Client(base_url=api_server.url, timeout=30.0) as http:
        page = http.get("/api/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        parser = AssetRefs()
        parser.feed(page.text)
        refs = parser.refs
        kinds = {kind for kind, _ in refs}
        assert "script" in kinds and "link rel=stylesheet" in kinds, refs
        assert len([r for r in refs if r[0] == "script"]) == 2, refs
        for _, ref in refs:
            parts = urlsplit(ref)
            # same origin: a path, no scheme or host (so nothing loads from the internet)
            assert not parts.scheme and not parts.netloc, ref
            assert ref.startswith("/api/docs/assets/"), ref
            asset = http.get(ref)
            assert asset.status_code == 200, ref
            suffix = ref[ref.rfind(".") :]
            media = asset.headers["content-type"].split(";")[0].strip()
            assert media in EXPECTED_TYPES[suffix], (ref, media)
            assert len(asset.content) > 500, ref
            if suffix == ".js":
                assert b"SwaggerUI" in asset.content
        # the page's script uses what the bundle defines
        assert "SwaggerUIBundle(" in page.text
        assert http.get("/api/docs/assets/no-such-file.js").status_code == 404
