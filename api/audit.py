"""The audit trail: the log's events with their metadata, filtered by namespace, key
prefix, actor, time, correlation id or type; a page of JSON, or all of it as CSV or
NDJSON."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from nexus_ssot.ledger.addressing import check_namespace
from nexus_ssot.ledger.errors import InvalidInput
from nexus_ssot.ledger.events import EVENT_TYPE_NAMES
from nexus_ssot.projections import audit_trail, entry_at

from . import models
from .existence import require_namespace
from .guard import EventVisibility, guard_of, require_some
from .pagination import decode_cursor, page
from .params import (
    JSON,
    READ_ERRORS,
    AsOf,
    Cursor,
    KeyPrefix,
    Limit,
    one_coordinate,
    service_of,
)
from .service import Service

router = APIRouter(prefix="/v1")

#: Query text reaches SQL: a control character (NUL above all, which PostgreSQL's text
#: refuses) is a 400 here.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


@router.get(
    "/audit",
    summary="The audit trail: events with their metadata, filtered, in log order",
    response_model=models.HistoryPage,
    responses={200: {"content": {JSON: {}, "text/csv": {}, "application/x-ndjson": {}}},
               **READ_ERRORS},
    tags=["audit"],
)
async def audit(
    request: Request,
    namespace: Annotated[str | None, Query()] = None,
    key_prefix: KeyPrefix | None = None,
    actor: Annotated[str | None, Query(max_length=255, pattern=_NO_CONTROL)] = None,
    since: AsOf = None,
    until: AsOf = None,
    correlation_id: Annotated[str | None, Query(max_length=128, pattern=_NO_CONTROL)] = None,
    type: Annotated[str | None, Query(description="e.g. entry.deleted")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """``Accept: text/csv`` or ``application/x-ndjson`` streams the whole trail."""
    one_coordinate(since=since)
    one_coordinate(until=until)
    if key_prefix and namespace is None:
        raise InvalidInput("key_prefix needs namespace", code="invalid_parameter",
                           field="key_prefix")
    event_type = type.removeprefix("io.nexus.ssot.") if type else None
    if event_type is not None and event_type not in EVENT_TYPE_NAMES.values():
        raise InvalidInput(f"type must be one of {', '.join(EVENT_TYPE_NAMES.values())}",
                           code="invalid_parameter", field="type")
    if namespace is not None:  # one the caller may see none of is missing to it
        require_some(request, "history", check_namespace(namespace))
    service = service_of(request)
    async with service.pool.connection() as conn:
        if namespace is not None:
            await require_namespace(conn, namespace)
        after = await entry_at.position_at(conn, since) if since else 0
        upto = await entry_at.position_at(conn, until) if until else None
    state = decode_cursor(cursor, "after")
    where = audit_trail.AuditFilter(
        after=state["after"] if state else after, until=upto,
        namespace=check_namespace(namespace) if namespace else None, key_prefix=key_prefix,
        actor=actor, correlation_id=correlation_id, event_type=event_type)
    sees = EventVisibility(guard_of(request), "history")
    accept = request.headers.get("accept", "")
    if "text/csv" in accept or "application/x-ndjson" in accept:
        csv_out = "text/csv" in accept
        return StreamingResponse(
            _export(service, where, csv_out, sees),
            media_type="text/csv" if csv_out else "application/x-ndjson",
            headers={"Content-Disposition": "attachment; filename=audit."
                     + ("csv" if csv_out else "ndjson")} if csv_out else None)
    rows: list[tuple[int, str, str, bytes]] = []
    async with service.pool.connection() as conn:
        while len(rows) <= limit:
            batch = await audit_trail.audit_page(conn, where, limit + 1)
            rows += [r for r in batch if sees(r[1], r[2])]
            if len(batch) < limit + 1:
                break
            where = dataclasses.replace(where, after=batch[-1][0])
    return page(rows[:limit + 1], limit, lambda r: r[3], lambda r: {"after": r[0]})


async def _export(service: Service, where: audit_trail.AuditFilter,
                  csv_out: bool, sees: EventVisibility) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if csv_out:
        writer.writerow(audit_trail.CSV_COLUMNS)
        yield buffer.getvalue().encode()
    async with service.pool.connection() as conn:
        async for row in audit_trail.audit_rows(conn, where):
            if not sees(row["namespace"], row["key"]):
                continue
            # decoded (jsonb's text spaces its members); none when the event has none
            auth = row.pop("auth")
            if csv_out:
                row["auth"] = "" if auth is None else orjson.dumps(orjson.loads(auth)).decode()
                buffer.seek(0)
                buffer.truncate()
                writer.writerow(row.values())
                yield buffer.getvalue().encode()
            else:
                row["patch"] = orjson.Fragment(row["patch"])
                if auth is not None:
                    row["auth"] = orjson.loads(auth)
                yield orjson.dumps(row) + b"\n"
