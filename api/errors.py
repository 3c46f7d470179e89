"""The one mapping from ledger errors to HTTP: RFC 9457 ``application/problem+json``.

Every error body has ``type``, ``title``, ``status``, ``detail`` (the human message, which
names the field), ``code`` (stable, machine-readable), ``field`` when one field is at
fault, and the request's ``correlation_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from nexus_ssot.ledger.errors import (
    DocumentTooLarge,
    EditConflict,
    Forbidden,
    InvalidInput,
    InvalidUnicode,
    LedgerError,
    NotAcceptable,
    NotFound,
    PreconditionFailed,
    SchemaViolations,
    Unauthenticated,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    capped,
)
from nexus_ssot.ledger.metrics import metrics

from .models import Problem

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://nexus-ssot.dev/problems/"
PROBLEM_JSON = "application/problem+json"

_STATUS: list[tuple[type[LedgerError], int]] = [
    (DocumentTooLarge, 413),
    (UnsupportedMediaType, 415),
    (NotAcceptable, 406),
    (InvalidUnicode, 400),
    (InvalidInput, 400),
    (Unprocessable, 422),
    (PreconditionFailed, 412),
    (EditConflict, 409),
    (SchemaViolations, 409),
    (NotFound, 404),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (Unavailable, 503),
]

_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests",
           404: "Not Found", 405: "Method Not Allowed",
           406: "Not Acceptable", 412:
           "Precondition Failed", 413: "Content Too Large", 415: "Unsupported Media Type",
           409: "Conflict", 422: "Unprocessable Content",
           500: "Internal Server Error",
           503: "Service Unavailable"}


MEANINGS = {400: "Invalid input", 401: "Not authenticated (a bearer token is needed)",
            403: "Forbidden by the access policy", 404: "Not found",
            405: "Method not allowed (a sub-resource of an entry: see Allow)",
            406: "Not acceptable (Accept)",
            409: "Edit conflict", 412: "Precondition failed", 413: "Too large",
            415: "Unsupported media type",
            422: "Cannot be applied",
            429: "Rate limited; retry (Retry-After, RateLimit-* headers)",
            503: "Store unavailable; retry (Retry-After)"}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for the error statuses it can answer."""
    return {s: {"model": Problem, "description": MEANINGS[s]} for s in statuses}


#: The longest path an error body names as its ``instance``: every path of a resource is
#: shorter (a namespace has at most 63 characters, a key 512), and a longer one is a
#: caller's input that ``detail`` already quotes (capped), not to be echoed again whole.
MAX_INSTANCE = 1024


def instance_of(path: str) -> str | None:
    """The ``instance`` of a problem about a request to ``path`` (None: not named)."""
    return path if len(path) <= MAX_INSTANCE else None


def status_of(error: LedgerError) -> int:
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def problem(
    request: Request | None,
    status: int,
    code: str,
    detail: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    metrics().http_errors.labels(str(status), code).inc()
    correlation_id = getattr(request.state, "correlation_id", None) if request else None
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if field is not None:
        body["field"] = field
    if request is not None and (instance := instance_of(request.url.path)) is not None:
        body["instance"] = instance
    body["correlation_id"] = correlation_id
    body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON,
        headers=headers,
    )


async def ledger_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LedgerError)
    status = status_of(exc)
    headers = ({"Retry-After": "1"} if status == 503 else
               {"WWW-Authenticate": 'Bearer realm="nexus-ssot"'} if status == 401 else None)
    return problem(request, status, exc.code, exc.message, field=exc.field, headers=headers,
                   **exc.extra)


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "header", "body")]
    field = capped(".".join(loc)) or None
    return problem(request, 400, "invalid_parameter", f"{field}: {first.get('msg')}",
                   field=field)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return problem(request, exc.status_code, code, str(exc.detail), headers=exc.headers)


async def store_unreachable_handler(request: Request, exc: Exception) -> Response:
    """The database (or its pool) did not answer: 503, retry; not a server fault."""
    return problem(request, 503, "store_unavailable",
                   f"the event store is unreachable: {str(exc).strip() or type(exc).__name__}",
                   headers={"Retry-After": "1"})


async def client_disconnect_handler(request: Request, exc: Exception) -> Response:
    """The connection closed before the request body arrived (the client hung up, or took
    longer than SSOT_HTTP_BODY_TIMEOUT_SECONDS to send it): nothing was written and nobody
    is left to answer, so it is no error of ours."""
    log.info("%s %s: the request body did not arrive: the client disconnected, or was "
             "slower than SSOT_HTTP_BODY_TIMEOUT_SECONDS (correlation id %s)",
             request.method, request.url.path,
             getattr(request.state, "correlation_id", None))
    return problem(request, 400, "request_incomplete",
                   "the connection closed before the request body was complete; nothing "
                   "was written")


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    correlation_id = getattr(request.state, "correlation_id", None)
    log.error("%s %s failed (correlation id %s)", request.method, request.url.path,
              correlation_id, exc_info=exc)
    return problem(request, 500, "internal_error",
                   "the server failed unexpectedly; the write, if any, did not happen unless "
                   "its history shows it (quote the correlation id when reporting this)")
