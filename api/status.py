"""``GET /v1/status``: the judged lines of ``ssot status`` that the database tells (the
writer as this worker sees it, the broadcaster's and each view's lag, the digests, the last
backup and verify, the schemas' data quality), each green, amber or red with its
threshold, for the web console's health panel. The same judging as the CLI
(``projections/status_checks.py``); the action is ``metrics`` on the system, as for
``GET /metrics``, which exports the same figures."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from nexus_ssot.projections import schema_quality
from nexus_ssot.projections.log_state import read_log_state
from nexus_ssot.projections.status_checks import GREEN, RED, Check, judge, overall, schemas

from .errors import problem_responses
from .params import JSON, service_of

router = APIRouter(prefix="/v1")


@router.get("/status", summary="The ledger's health, judged line by line (ssot status)",
            responses=problem_responses(503), tags=["operations"])
async def status(request: Request) -> Response:
    service = service_of(request)
    async with service.pool.connection() as conn:
        state = await read_log_state(conn, service.settings.broadcaster_name)
        quality = schemas(await schema_quality.counts(conn))
    writer = await service.writer.reachable()
    checks = [Check("postgresql", GREEN, f"up, head {state.head}",
                    "red when unreachable or not migrated"),
              Check("writer", GREEN if writer else RED, "ok" if writer else "unreachable",
                    "red when the API cannot reach the writer"),
              *judge(state, service.settings), quality]
    worst = overall(checks)
    body: dict[str, Any] = {"status": worst, "head_position": state.head,
                            "checks": [asdict(c) for c in checks]}
    return Response(orjson.dumps(body), media_type=JSON)
