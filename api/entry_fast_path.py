"""The two requests most callers make — read one entry (``GET``) and write one entry
(``PUT``) — taken straight to their route functions, past the framework's router and
dependency injection, which cost several times what the route itself does.

An ASGI middleware, the innermost: identity, rate limit and correlation id are settled
before it (``app.py``). It takes a request only when its answer is sure to be the one
the framework would give:

- the method is GET or PUT and the path is ``/v1/namespaces/{namespace}/entries/{key}``
  with no query string (a read's ``version``, ``as_of`` and ``position`` are the
  framework's to validate), whose key's last segment is not an entry's sub-resource
  (``…/history`` and the others are routed elsewhere);
- the caller is authenticated and the policies allow the route's action at once
  (``guard.passes``): a refusal, its fresh policy read and its access-log record stay
  with ``guard.authorize``.

Anything else goes on, untouched, to the framework. A request taken runs what the route
would: the content negotiation of ``negotiation.acceptable``, then the route function
itself (``entries.get_entry``, ``entries.put_entry``) with the path's namespace and key;
an exception it raises is answered by the handler the app registered for it, as the
framework's exception middleware would, and one without a handler goes on up to the
server-error middleware."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from . import entries, guard, negotiation

#: The path of one entry, as the framework matches ``…/{namespace}/entries/{key:path}``
#: (a key that is empty is not taken here).
_ENTRY_PATH = re.compile(r"^/v1/namespaces/(?P<namespace>[^/]+)/entries/(?P<key>.+)$")
#: Last key segments that name an entry's sub-resource, routed elsewhere or refused.
_SUB_RESOURCES = frozenset({"history", "diff", "proof", "revert", "restore"})

Endpoint = Callable[..., Awaitable[Response]]


def _route(router: Any, method: str) -> APIRoute:
    """The framework's route of ``method`` on one entry (what ``scope["route"]`` names)."""
    for route in router.routes:
        if isinstance(route, APIRoute) and method in (route.methods or ()) \
                and route.path == guard.ENTRY_TEMPLATE:
            return route
    raise LookupError(f"no {method} {guard.ENTRY_TEMPLATE} route")


class EntryFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        read, write = _route(entries.reads, "GET"), _route(entries.writes, "PUT")
        #: method → (route, its function, the media types a GET may be answered in)
        self.routes: dict[str, tuple[APIRoute, Endpoint, set[tuple[str, str]] | None]] = {
            "GET": (read, entries.get_entry, negotiation.offered_by(read)),
            "PUT": (write, entries.put_entry, None),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        taken = self._takes(scope)
        if taken is None:
            await self.app(scope, receive, send)
            return
        (route, endpoint, offered), params = taken
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive, send)
        try:
            if offered is not None:
                negotiation.check(request.headers.get("accept"), offered)
            response = await endpoint(request, params["namespace"], params["key"])
        except Exception as exc:
            handler = _handler(scope["app"], exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _takes(self, scope: Scope) -> tuple[tuple[APIRoute, Endpoint, Any],
                                            dict[str, str]] | None:
        """The route and path parameters of a request this path takes, else None."""
        if scope["type"] != "http" or scope.get("query_string") or scope.get("root_path"):
            return None
        chosen = self.routes.get(scope["method"])
        if chosen is None:
            return None
        match = _ENTRY_PATH.match(scope["path"])
        if match is None:
            return None
        params = match.groupdict()
        if params["key"].rpartition("/")[2] in _SUB_RESOURCES:
            return None
        identity = scope.get("state", {}).get("identity")
        service = getattr(scope["app"].state, "service", None)
        if identity is None or service is None or not guard.passes(
                identity, service.access.policies, scope["method"], guard.ENTRY_TEMPLATE,
                params):
            return None
        return chosen, params


def _handler(app: FastAPI, exc: Exception) -> Callable[..., Any] | None:
    """The handler the app's exception middleware would answer ``exc`` with (None: the
    server-error middleware's, for ``Exception``)."""
    handlers = app.exception_handlers
    if isinstance(exc, StarletteHTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
