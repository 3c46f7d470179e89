"""``GET /v1/namespaces/{namespace}/quality``: a namespace's data quality from the
asynchronous view ``schema_quality`` (with read-your-writes through ``min_position``),
and the count of writes refused for schema reasons, which the HTTP workers record as
they answer them."""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
import psycopg
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from nexus_ssot.ledger.addressing import check_namespace
from nexus_ssot.ledger.errors import SchemaViolation
from nexus_ssot.projections import schema_quality

from . import errors, http
from .existence import require_namespace
from .pagination import decode_cursor, encode_cursor
from .params import JSON, READ_ERRORS, Cursor, Limit, Namespace, service_of
from .views import MinPosition, not_built, view_at

router = APIRouter(prefix="/v1")

#: The refusals being recorded (a task must be referenced until it is done).
_recording: set[asyncio.Task[None]] = set()


@router.get(
    "/namespaces/{namespace}/quality",
    summary="A namespace's data quality against its schema (asynchronous view "
            "schema_quality)",
    responses=READ_ERRORS,
    tags=["schemas"],
)
async def get_quality(
    request: Request, namespace: Namespace, min_position: MinPosition = None,
    stale_days: Annotated[int, Query(ge=0, le=36500, description="Entries unchanged for "
                                     "longer than this many days are counted as stale")] = 90,
    limit: Limit = 100, cursor: Cursor = None,
) -> Response:
    ns = check_namespace(namespace)
    after = (decode_cursor(cursor, "k") or {}).get("k") or ""
    service = service_of(request)
    async with service.pool.connection() as conn:
        position = await view_at(service, conn, schema_quality.NAME, min_position)
        try:
            body = await schema_quality.quality(conn, ns, stale_days=stale_days,
                                                after=after, limit=limit)
        except psycopg.errors.UndefinedTable:
            await require_namespace(conn, ns)
            raise not_built(schema_quality.NAME, position) from None
        if body["last_position"] is None and not body["entries"]:
            await require_namespace(conn, ns)
    items = body["violations"]
    body["next_cursor"] = (encode_cursor({"k": items[limit - 1]["key"]})
                           if len(items) > limit else None)
    body["violations"] = items[:limit]
    body["validated_position"] = position  # the view has applied the log up to here
    return Response(orjson.dumps(body), media_type=JSON)


async def schema_violation_handler(request: Request, exc: Exception) -> Response:
    """Answer a ``SchemaViolation`` as any ledger error, and count it for the quality view
    (in the background: the answer never waits for it, nor fails with it)."""
    assert isinstance(exc, SchemaViolation)
    namespace = exc.extra.get("namespace")
    if isinstance(namespace, str):
        task = asyncio.create_task(_record(request, namespace))
        _recording.add(task)
        task.add_done_callback(_recording.discard)
    return await errors.ledger_error_handler(request, exc)


async def _record(request: Request, namespace: str) -> None:
    try:
        async with service_of(request).pool.connection(timeout=2.0) as conn:
            await schema_quality.record_refusal(conn, namespace, http.utc_now())
    except (psycopg.Error, TimeoutError):  # a count lost; the refusal was answered
        pass
