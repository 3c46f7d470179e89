"""``GET /v1/audit/access``: the access log (``access/log.py``) — authentication failures,
authorisation denials and uses of admin actions — filtered by decision, subject and time,
in seq order, a page at a time. Each row as stored: its seq, commit time, record and hash
chain links, so a reader can recompute the chain (docs/integrity.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from starlette.responses import Response

from nexus_ssot.access.log import AccessRow, read

from .pagination import decode_cursor, page
from .params import (
    READ_ERRORS,
    Cursor,
    Limit,
    in_range,
    one_coordinate,
    rfc3339_only,
    service_of,
)

router = APIRouter(prefix="/v1")

#: Query text reaches SQL: a control character (NUL above all) is a 400 here.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


class AccessRecordBody(BaseModel):
    """A record of the access log: a decision, or (``summary``) a count of the records a
    flood bound suppressed or a full queue dropped."""

    time: str | None = Field(None, description="When it was decided, RFC 3339 UTC")
    decision: Literal["allow", "deny"] | None = None
    status: int | None = Field(None, description="401, 403, 404 or 429 for a denial")
    reason: str | None = Field(None, description="Why: for a 401 missing, duplicate, "
                               "unsupported_scheme, malformed, expired, not_yet_valid, "
                               "bad_signature, wrong_issuer, wrong_audience, unknown_key, "
                               "algorithm_not_allowed, jwks_unavailable, unknown_token or "
                               "revoked; untrusted_proxy (403); policy (403/404); "
                               "rate_limited; queue_full (a summary)")
    subject: str | None = Field(None, description="Who (null: not authenticated)")
    method: str | None = None
    path: str | None = Field(None, description="The route template")
    action: str | None = None
    namespace: str | None = None
    key: str | None = None
    policy: str | None = Field(None, description="The policy that decided")
    rule: int | str | None = Field(None, description="Its rule, or default")
    correlation_id: str | None = None
    source: str | None = Field(None, description="The client address")
    auth_method: str | None = None
    summary: bool | None = Field(None, description="A summary of records not stored")
    suppressed: int | None = Field(None, description="How many records it stands for")
    from_: str | None = Field(None, alias="from",
                              description="The first of them was decided then")
    to: str | None = Field(None, description="The last of them was decided then")


class AccessLogRow(BaseModel):
    seq: int = Field(description="1, 2, 3… without gaps")
    recorded_at: str = Field(description="When it was appended, RFC 3339 UTC")
    record: AccessRecordBody = Field(description="The record, as stored (canonical JSON)")
    prev_hash: str | None = Field(description="The previous row's hash (null for seq 1)")
    hash: str = Field(description='SHA-256 of canonical {"prev_hash", "record", '
                      '"recorded_at", "seq"}')


class AccessLogPage(BaseModel):
    items: list[AccessLogRow]
    next_cursor: str | None


Since = Annotated[datetime | None, BeforeValidator(rfc3339_only), AfterValidator(in_range),
                  Query(description="RFC 3339 time: only rows appended at or after it")]


@router.get(
    "/audit/access",
    summary="The access log: denials and admin actions, filtered, in seq order",
    response_model=AccessLogPage,
    responses=READ_ERRORS,
    tags=["audit"],
)
async def access_log(
    request: Request,
    decision: Annotated[Literal["allow", "deny"] | None, Query(
        description="deny (401, 403, 404 by policy, 429) or allow (admin actions)")] = None,
    subject: Annotated[str | None, Query(
        max_length=1024, pattern=_NO_CONTROL,
        description="Only this caller's records")] = None,
    since: Since = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """Rows oldest first; follow ``next_cursor`` for the next page."""
    one_coordinate(since=since)
    state = decode_cursor(cursor, "after")
    service = service_of(request)
    async with service.pool.connection() as conn:
        rows = await read(conn, decision=decision, subject=subject, since=since,
                          after_seq=state["after"] if state else None, limit=limit + 1)
    return page(rows, limit, AccessRow.as_json, lambda r: {"after": r.seq})
