"""``GET /v1/live``: liveness, the process answers (whatever its database does);
``GET /v1/health``: readiness, whether the store answers, and how far the broadcaster and
the asynchronous views lag behind the log's head."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from nexus_ssot.ledger.redaction import redact_url
from nexus_ssot.projections import schema_quality
from nexus_ssot.projections.views import VIEW_NAMES

from .errors import problem, problem_responses
from .params import JSON, service_of

router = APIRouter(prefix="/v1")


@router.get("/live", summary="Liveness: the process answers requests",
            tags=["operations"])
async def live() -> Response:
    """200 while the process serves requests, even while its database cannot be reached
    (then ``/v1/health`` answers 503): restarting the process would not bring the
    database back. An orchestrator's liveness probe; ``/v1/health`` is its readiness."""
    return Response(_ALIVE, media_type=JSON)


_ALIVE = orjson.dumps({"status": "alive"})


@router.get("/health", summary="Readiness: the store answers, and the followers' lag",
            responses=problem_responses(503), tags=["operations"])
async def health(request: Request) -> Response:
    service = service_of(request)
    try:
        async with service.pool.connection(timeout=2.0) as conn:
            cur = await conn.execute(_HEALTH, (service.settings.broadcaster_name,),
                                     prepare=True)
            row = await cur.fetchone()
            cur = await conn.execute(_VIEWS_HEALTH, (list(VIEW_NAMES),), prepare=True)
            views = await cur.fetchall()
            schemas = await schema_quality.summary(conn)
    except Exception as e:  # any failure to reach the store is "unavailable"
        return problem(request, 503, "store_unavailable",
                       f"the event store is unreachable: {redact_url(str(e))}")
    assert row is not None
    head, position, oldest_unpublished, now = row
    body: dict[str, Any] = {"status": "ok", "head_position": head or 0, "broadcaster": None}
    body["views"] = {
        name: {"position": view_position, "lag_events": max(0, (head or 0) - view_position),
               "lag_seconds": round((now - oldest).total_seconds(), 3)
               if oldest is not None else 0.0}
        for name, view_position, oldest in views
    }
    if position is not None:
        body["broadcaster"] = {
            "name": service.settings.broadcaster_name,
            "position": position,
            "lag_events": max(0, (head or 0) - position),
            "lag_seconds": round((now - oldest_unpublished).total_seconds(), 3)
            if oldest_unpublished is not None else 0.0,
        }
    body["schemas"] = schemas
    body["writer"] = "ok" if await service.writer.reachable() else "unreachable"
    return Response(orjson.dumps(body), media_type=JSON)


_HEALTH = (
    "SELECT (SELECT max(notification_id) FROM ssot_events), b.position,"
    " (SELECT min(recorded_at) FROM entry_history WHERE position > b.position),"
    " clock_timestamp()"
    " FROM (SELECT 1) AS one LEFT JOIN broadcaster_positions b ON b.name = %s"
)

# Each asynchronous view's position and the commit time of the oldest event it has not
# applied yet (its lag in seconds).
_VIEWS_HEALTH = (
    "SELECT t.application_name, t.notification_id, (SELECT recorded_at FROM ssot_events"
    "  WHERE notification_id > t.notification_id ORDER BY notification_id LIMIT 1)"
    " FROM projection_tracking t WHERE t.application_name = ANY(%s)"
    " ORDER BY t.application_name"
)
