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
from nexus_ssot.projections.log_state import Follower, read_log_state

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
            state = await read_log_state(conn, service.settings.broadcaster_name)
            schemas = await schema_quality.summary(conn)
    except Exception as e:  # any failure to reach the store is "unavailable"
        return problem(request, 503, "store_unavailable",
                       f"the event store is unreachable: {redact_url(str(e))}")
    body: dict[str, Any] = {"status": "ok", "head_position": state.head, "broadcaster": None}
    body["views"] = {view.name: _lag(view) for view in state.views}
    if state.broadcaster is not None:
        body["broadcaster"] = {"name": state.broadcaster.name, **_lag(state.broadcaster)}
    body["schemas"] = schemas
    body["writer"] = "ok" if await service.writer.reachable() else "unreachable"
    return Response(orjson.dumps(body), media_type=JSON)


def _lag(follower: Follower) -> dict[str, Any]:
    return {"position": follower.position, "lag_events": follower.lag_events,
            "lag_seconds": follower.lag_seconds}
