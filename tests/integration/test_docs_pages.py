"""/docs and /redoc work on a host without internet access: the pages name no other
server, and everything they load (scripts, style sheet, icon) the ledger serves itself,
to a caller without a token as the pages are."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

#: What a page loads: src/href attributes, ReDoc's spec-url, Swagger UI's url: '…'.
_LOADED = re.compile(r"""(?:src|href|spec-url)="([^"]+)"|\burl: '([^']+)'""")
_ABSOLUTE = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_a_docs_page_loads_nothing_from_another_server(api: Any, page: str) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as anonymous:
        r = anonymous.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert _ABSOLUTE.findall(r.text) == [], "the page names another server"
        loaded = [a or b for a, b in _LOADED.findall(r.text)]
        scripts = [u for u in loaded if u.endswith(".js")]
        assert scripts and "/openapi.json" in loaded
        for url in loaded:
            asset = anonymous.get(url)
            assert asset.status_code == 200, url
            if url.endswith(".js"):
                assert "javascript" in asset.headers["content-type"], url
            if url.endswith(".css"):  # its images are inline (data:), none fetched
                assert re.findall(r"url\((?![\"']?data:)", asset.text) == [], url
