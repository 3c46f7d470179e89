"""Reads of the asynchronous views, with read-your-writes: ``min_position`` waits
(bounded) until the view has applied the position a write returned."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from nexus_ssot.ledger.addressing import check_namespace
from nexus_ssot.ledger.errors import ViewBehind
from nexus_ssot.projections import namespace_stats
from nexus_ssot.projections.runtime import tracked_position

from . import http, models
from .existence import require_namespace
from .params import JSON, MAX_INT, READ_ERRORS, Namespace, service_of
from .read_replica import ensure_held
from .service import Service

router = APIRouter(prefix="/v1")

MinPosition = Annotated[int | None, Query(
    ge=0, le=MAX_INT, description="Wait (up to SSOT_VIEW_WAIT_TIMEOUT, 2 s) until the view "
    "has applied this global position — the `position` a write returned — else 503")]


def not_built(view: str, position: int) -> ViewBehind:
    """The answer for a view whose tables do not exist yet (the view runner — ssot serve,
    ssot views — makes them when it first runs)."""
    return ViewBehind(f"view {view} has not been built yet: is a view runner running?",
                      code="view_not_built", view=view, view_position=position)


async def view_at(service: Service, conn: Any, view: str, min_position: int | None) -> int:
    """The view's position, once it is at least ``min_position``; ``ViewBehind`` (503,
    with the view's position) when that takes longer than the configured wait."""
    position = await tracked_position(conn, view) or 0
    if min_position is None or position >= min_position:
        return position
    await ensure_held(service, conn, min_position, "min_position")  # else waiting would not help
    wait = service.settings.view_wait_timeout
    deadline = time.monotonic() + wait
    delay = 0.002
    while position < min_position:
        if time.monotonic() >= deadline:
            raise ViewBehind(
                f"view {view} has applied the log up to position {position}, not yet "
                f"{min_position}, after waiting {wait:g}s; retry",
                field="min_position", view=view, view_position=position,
                min_position=min_position)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
        position = await tracked_position(conn, view) or 0
    return position


@router.get(
    "/namespaces/{namespace}/stats",
    summary="A namespace's statistics (asynchronous view namespace_stats)",
    response_model=models.NamespaceStats,
    responses=READ_ERRORS,
    tags=["namespaces"],
)
async def get_stats(request: Request, namespace: Namespace,
                    min_position: MinPosition = None) -> Response:
    ns = check_namespace(namespace)
    service = service_of(request)
    async with service.pool.connection() as conn:
        position = await view_at(service, conn, namespace_stats.NAME, min_position)
        try:
            row = await namespace_stats.stats(conn, ns)
        except psycopg.errors.UndefinedTable:
            await require_namespace(conn, ns)
            raise not_built(namespace_stats.NAME, position) from None
        if row is None:  # no entry event applied yet: does the namespace exist at all?
            await require_namespace(conn, ns)
            row = {"entries": 0, "deleted": 0, "writes": 0, "last_position": None,
                   "last_recorded_at": None, "writes_by_actor": {}}
    if row["last_recorded_at"] is not None:
        row["last_recorded_at"] = http.rfc3339(row["last_recorded_at"])
    return Response(orjson.dumps({"namespace": ns, **row, "view_position": position}),
                    media_type=JSON)
