"""The API's browsable documentation, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with
every script, style sheet and icon served by the ledger itself: ledgers run on hosts
without internet access, where pages loading their scripts from a CDN stay blank.

The assets are the ones the ``fastapi-offline`` package ships (pinned in pyproject.toml);
the pages are FastAPI's own, pointed at them. They are plain routes, outside the app's
dependencies (authorization, content negotiation) as FastAPI's built-in pages are.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

DOCS, REDOC, OAUTH2_REDIRECT = "/docs", "/redoc", "/docs/oauth2-redirect"
#: Where the pages' assets are served: open to every caller, as the pages are.
ASSETS = "/docs/assets"


def mount(app: FastAPI) -> None:
    """Serve the two pages and their assets on ``app`` (made with docs_url=None,
    redoc_url=None, so FastAPI adds no pages of its own)."""
    static = Path(str(files("fastapi_offline") / "static"))
    app.mount(ASSETS, StaticFiles(directory=static), name="docs-assets")

    def at(request: Request, path: str) -> str:
        return f"{request.scope.get('root_path', '')}{path}"

    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=at(request, app.openapi_url or "/openapi.json"),
            title=f"{app.title} - Swagger UI", oauth2_redirect_url=at(request, OAUTH2_REDIRECT),
            swagger_js_url=at(request, f"{ASSETS}/swagger-ui-bundle.js"),
            swagger_css_url=at(request, f"{ASSETS}/swagger-ui.css"),
            swagger_favicon_url=at(request, f"{ASSETS}/favicon.png"))

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=at(request, app.openapi_url or "/openapi.json"),
            title=f"{app.title} - ReDoc",
            redoc_js_url=at(request, f"{ASSETS}/redoc.standalone.js"),
            redoc_favicon_url=at(request, f"{ASSETS}/favicon.png"),
            with_google_fonts=False)  # its fonts come from Google: the system's instead

    app.add_route(DOCS, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT, oauth2_redirect, include_in_schema=False)
    app.add_route(REDOC, redoc, include_in_schema=False)
