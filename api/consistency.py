"""``GET /v1/health/consistency``: every view recomputed from the log and compared with
the stored one (projections/consistency.py), as JSON."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import orjson
import psycopg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from nexus_ssot.ledger.errors import Unavailable
from nexus_ssot.ledger.redaction import redact_url
from nexus_ssot.projections import consistency

from .params import JSON, READ_ERRORS, service_of

router = APIRouter(prefix="/v1")


class RowDrift(BaseModel):
    table: str
    namespace: str | None
    key: dict[str, str] = Field(description="The row's primary key without the namespace")
    kind: Literal["missing", "extra", "differs"] = Field(
        description="missing: in the log, not in the view; extra: in the view, not in the "
        "log; differs: in both, with other values")
    stored: dict[str, str | None] = Field(description="Differing columns, the view's text")
    log: dict[str, str | None] = Field(description="Differing columns, the log's fold")


class NamespaceCheck(BaseModel):
    table: str
    namespace: str | None
    stored_rows: int
    log_rows: int
    stored_hash: str = Field(description="Order-independent hash of the stored rows")
    log_hash: str = Field(description="The same of the rows recomputed from the log")
    drifting_rows: int | None = Field(description="Rows that differ (when drilled into)")
    consistent: bool


class ViewCheck(BaseModel):
    view: str
    inline: bool
    position: int | None = Field(
        description="Log position compared at: the head for inline views, the tracked "
        "position for asynchronous ones (null: never run, not checked)")
    consistent: bool
    skipped: str | None = Field(
        description="Why the view was not checked (never run; its service not configured)")
    seconds: float
    namespaces: list[NamespaceCheck]
    drifts: list[RowDrift] = Field(description="Examples of drifting rows, by key")
    problems: list[str]
    external: Any = Field(description="The view's own reconcile report (`external`)")


class ConsistencyReport(BaseModel):
    consistent: bool
    head: int = Field(description="The log's head in the check's snapshot")
    seconds: float
    views: list[ViewCheck]


@router.get(
    "/health/consistency",
    summary="Every view recomputed from the log and compared with the stored one",
    response_model=ConsistencyReport,
    responses=READ_ERRORS,
    tags=["operations"],
)
async def get_consistency(
    request: Request,
    view: Annotated[list[str], Query(
        default_factory=list, description="Only this view (repeatable; default every view)")],
    namespace: Annotated[list[str], Query(
        default_factory=list,
        description="Compare only this namespace's rows (repeatable; default all)")],
    examples: Annotated[int, Query(ge=1, le=1000,
                                   description="Rows named per drifting namespace")] = 10,
    external: Annotated[bool, Query(
        description="Also compare views' outside copies (the KV buckets) with the stored "
        "state; they are live, not in the snapshot: a running mirror's lag shows")] = False,
) -> Response:
    """Recompute each view from the log in one snapshot (inline views up to the head,
    asynchronous views up to their tracked position) and compare per namespace: row
    counts, an order-independent hash, and the keys of drifting rows.

    Drift answers **200** with ``"consistent": false`` (the check itself worked; monitors
    read the body), an unknown ``view`` or invalid ``namespace`` 400, an unreachable
    database 503. The check takes
    seconds on a large log, locks nothing a writer waits for, and concurrent requests for
    the same views share one run."""
    service = service_of(request)
    assert service.settings.database_url
    names = tuple(view) if view else None
    consistency.check_view_names(names)
    only = tuple(namespace) if namespace else None
    consistency.check_namespaces(only)
    state = request.app.state
    if not hasattr(state, "consistency_checks"):
        state.consistency_checks = {}
    running: dict[Any, asyncio.Task[consistency.ConsistencyReport]] = \
        state.consistency_checks
    key = (names, only, examples, external)
    task = running.get(key)
    if task is None:
        task = asyncio.create_task(consistency.check(
            service.settings.database_url, names, settings=service.settings,
            namespaces=only, examples=examples, external=external))
        running[key] = task
        task.add_done_callback(lambda _t: running.pop(key, None))
    try:
        report = await asyncio.shield(task)
    except psycopg.OperationalError as e:
        raise Unavailable(f"the database is unreachable: {redact_url(str(e).strip())}",
                          code="store_unavailable") from e
    return Response(orjson.dumps(report.as_dict()), media_type=JSON)
