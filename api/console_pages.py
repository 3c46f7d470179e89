"""The web console at ``/ui``: plain HTML, JavaScript modules and CSS served from the
package (``api/console/``; no CDN, no build step), so it works on hosts without internet
access.

Every page URL under ``/ui`` (``/ui/namespaces/{ns}``, ``/ui/namespaces/{ns}/entries/{key}``
…) answers the same HTML shell, which routes in the browser; the assets are under
``/ui/assets/``. None of it holds data: like ``/docs`` it is open to every caller, and the
console signs in with a bearer token the user pastes (kept in the tab's sessionStorage,
never in a URL) and reads and writes only through the API, under the same authorization
as any other client (with ``SSOT_AUTH=off`` it needs no token and says auth is off, as
the API needs none). Every answer carries a strict Content-Security-Policy: scripts,
styles and connections from this origin only, no inline script or style, no framing."""

from __future__ import annotations

import html
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Where the console is served.
PREFIX = "/ui"
#: The shell's placeholder for the path the console is served under (a proxy's root path).
_BASE = "{{BASE}}"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    # The shell and assets change with the package: revalidate (the assets carry ETags).
    (b"cache-control", b"no-cache"),
]


def is_console(path: str) -> bool:
    """Whether ``path`` is one of the console's (open to every caller, as /docs is)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def assets_folder() -> Path:
    return Path(str(files("nexus_ssot.api") / "console"))


class SecurityHeaders:
    """Adds the console's security headers to every answer of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in _HEADERS}
                message["headers"] = [*(h for h in message.get("headers", [])
                                        if h[0].lower() not in names), *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def console_app() -> ASGIApp:
    """The ASGI app mounted at ``/ui``: the assets, and the shell for every other path."""
    folder = assets_folder()
    shell = (folder / "index.html").read_text("utf-8")

    async def page(request: Request) -> Response:
        base = html.escape(request.scope.get("root_path", ""), quote=True)
        return HTMLResponse(shell.replace(_BASE, base))

    router = Router([
        Mount("/assets", app=StaticFiles(directory=folder), name="console-assets"),
        Route("/{page:path}", page, methods=["GET", "HEAD"]),
    ])
    return SecurityHeaders(router)


def mount(app: FastAPI) -> None:
    """Serve the console on ``app`` under ``/ui``."""
    app.mount(PREFIX, console_app(), name="console")
