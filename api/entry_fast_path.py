"""The two requests most callers make — read one entry (``GET``) and write one entry
(``PUT``) — taken straight to their route functions, past the framework's router and
dependency injection, which cost several times what the route itself does.

An ASGI middleware, the innermost: identity, rate limit and correlation id are settled
before it (``app.py``). It takes a request only when its answer is sure to be the one
the framework would give:

- the method is GET or PUT and the path is ``/v1/namespaces/{namespace}/entries/{key}``,
  whose key's last segment is not an entry's sub-resource (``…/history`` and the others
  are routed elsewhere);
- a PUT has no query string; a GET has none, or one coordinate alone, spelt plainly and
  valid (``params.read_coordinate``: a past one, ``version=5``, ``position=7`` or
  ``as_of=2026-12-01T08:00:00Z``, or the position the read must include,
  ``min_position=7``); any other query string is the framework's to validate;
- the caller is authenticated and the policies allow the route's action at once
  (``guard.passes``): a refusal, its fresh policy read and its access-log record stay
  with ``guard.authorize``.

Anything else goes on, untouched, to the framework. A request taken runs what the route
would: a PUT, the route function itself (``entries.put_entry``) with the path's namespace
and key; a GET with a coordinate, the content negotiation of ``negotiation.check`` and
then the route function (``entries.get_entry``) with the coordinate; a GET of the current
state (also one whose ``min_position`` the primary's log is known to hold:
``entries.of_the_current_state``), the content negotiation and the pieces of
``entries.get_entry`` that read the current state (``entries.read_current``,
``entries.current_answer``), its answer sent as the framework's response object would
send it, without making one. An exception either raises is answered by the handler the
app registered for it, as the framework's exception middleware would, and one without a
handler goes on up to the server-error middleware."""

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
from .params import JSON, address, read_coordinate
from .service import Service

_JSON = JSON.encode("latin-1")

#: The path of one entry, as the framework matches ``…/{namespace}/entries/{key:path}``
#: (a key that is empty is not taken here).
_ENTRY_PATH = re.compile(r"^/v1/namespaces/(?P<namespace>[^/]+)/entries/(?P<key>.+)$")
#: Last key segments that name an entry's sub-resource, routed elsewhere or refused.
_SUB_RESOURCES = frozenset({"history", "diff", "proof", "revert", "restore"})

Endpoint = Callable[..., Awaitable[Response]]
#: A GET's coordinate, as keyword arguments of ``entries.get_entry`` (empty: the current
#: state, from ``entries.read_current``).
Coordinate = dict[str, Any]


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
        (route, endpoint, offered), params, service, coordinate = taken
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        if offered is not None and entries.of_the_current_state(service, **coordinate):
            await self._read(scope, receive, send, offered, params, service,
                             coordinate.get("min_position"))
            return
        request = Request(scope, receive, send)
        try:
            if offered is not None:
                negotiation.check(_first(scope, b"accept"), offered)
            response = await endpoint(request, params["namespace"], params["key"],
                                      **coordinate)
        except Exception as exc:
            response = await _answer_to(request, exc)
        await response(scope, receive, send)

    async def _read(self, scope: Scope, receive: Receive, send: Send,
                    offered: set[tuple[str, str]], params: dict[str, str],
                    service: Service, needs: int | None) -> None:
        """A GET of the entry's current state (no query string), answered as
        ``entries.get_entry`` answers it, from the request's raw parts and
        straight into the two messages of the answer: no request or response object of
        the framework's, which were a tenth of such a read's Python calls."""
        try:
            negotiation.check(_first(scope, b"accept"), offered)
            ns, k = address(params["namespace"], params["key"])
            current = await entries.read_current(service, ns, k, needs)
            status, tag, body = entries.current_answer(_first(scope, b"if-none-match"), ns,
                                                       k, current)
        except Exception as exc:
            response = await _answer_to(Request(scope, receive, send), exc)
            await response(scope, receive, send)
            return
        # the fields and order of starlette's Response(body, media_type=JSON, headers=…)
        headers = [(b"etag", tag.encode("latin-1"))]
        if status != 304:
            headers += [(b"content-length", b"%d" % len(body)), (b"content-type", _JSON)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _takes(self, scope: Scope) -> tuple[tuple[APIRoute, Endpoint, Any],
                                            dict[str, str], Service, Coordinate] | None:
        """The route, path parameters, service and coordinate (a GET's, or none) of a
        request this path takes, else None."""
        if scope["type"] != "http" or scope.get("root_path"):
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
        query = scope.get("query_string")
        coordinate: Coordinate = {}
        if query:  # (read only for an entry's path: a listing's query is not parsed here)
            taken = read_coordinate(query) if scope["method"] == "GET" else None
            if taken is None:
                return None
            coordinate = taken
        identity = scope.get("state", {}).get("identity")
        service = getattr(scope["app"].state, "service", None)
        if identity is None or service is None or not guard.passes(
                identity, service.access.policies, scope["method"], guard.ENTRY_TEMPLATE,
                params):
            return None
        return chosen, params, service, coordinate



def _first(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as ``request.headers.get`` gives it."""
    for key, value in scope["headers"]:
        if key == name:
            found: str = value.decode("latin-1")
            return found
    return None


async def _answer_to(request: Request, exc: Exception) -> Response:
    """The answer of the handler the app registered for ``exc``, as the framework's
    exception middleware would give it; ``exc`` raised again when there is none."""
    handler = _handler(request.scope["app"], exc)
    if handler is None:
        raise exc
    answer = handler(request, exc)
    response: Response = await answer if inspect.isawaitable(answer) else answer
    return response


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
