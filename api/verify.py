"""``GET /v1/integrity/verify``: the log's hashes, chains, copies and digests recomputed
over a bounded range of positions (``integrity/verify/``; ``ssot verify`` does the whole
log)."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from nexus_ssot.integrity import verify
from nexus_ssot.ledger.addressing import check_namespace
from nexus_ssot.ledger.errors import InvalidInput, Unavailable
from nexus_ssot.ledger.namespace_settings import SETTINGS_NAMESPACE
from nexus_ssot.ledger.operation_runs import record_run_async, verify_detail
from nexus_ssot.ledger.redaction import redact_url

from .params import JSON, MAX_INT, READ_ERRORS, service_of

router = APIRouter(prefix="/v1")

#: Most events one call verifies.
MAX_EVENTS = 100_000
#: Problems listed in a response (``problem_count`` counts them all).
MAX_LISTED = 100


class VerifyProblem(BaseModel):
    kind: str = Field(description="One of: " + ", ".join(verify.KINDS))
    position: int | None = Field(description="Where in the log (a digest: the last "
                                 "position it covers)")
    namespace: str | None
    key: str | None
    version: int | None
    field: str | None = Field(description="What changed (event_altered, digest_*)")
    seq: int | None = Field(description="The digest's seq (digest_* kinds), the access "
                            "log row's (access_* kinds)")
    other_position: int | None = Field(description="The other event (events_reordered)")
    detail: str


class VerifyReport(BaseModel):
    ok: bool = Field(description="No problem found in the range")
    first_problem: VerifyProblem | None = Field(description="The first in log order")
    problem_count: int
    problems: list[VerifyProblem] = Field(description=f"The first {MAX_LISTED}, in log order")
    from_position: int
    to_position: int = Field(description="The last position verified")
    next_from_position: int | None = Field(
        description="from_position of the next range (null: the head was reached)")
    head: int
    events: int
    events_total: int
    streams: int
    digests_checked: int
    digested_to: int | None
    external_digests: int
    signatures_checked: int
    notes: list[str]
    seconds: float
    events_per_second: int
    resumed_from: int | None
    access_records: int | None = Field(
        description="Access log rows checked (null: the range did not reach the head, "
        "where the access log is checked)")


@functools.lru_cache(maxsize=4)
def _key(path: Path) -> Any:
    return verify.load_public_key(path)


@router.get(
    "/integrity/verify",
    summary="Verify the log's hashes, chains, copies and digests over a range of positions",
    response_model=VerifyReport,
    responses=READ_ERRORS,
    tags=["integrity"],
)
async def verify_range(
    request: Request,
    from_position: Annotated[int, Query(
        ge=0, le=MAX_INT, description="Verify the events after this position")] = 0,
    to_position: Annotated[int | None, Query(
        ge=0, le=MAX_INT,
        description=f"… up to this one; at most {MAX_EVENTS:,} events (default: the "
        f"{MAX_EVENTS:,}th event after from_position, or the head)")] = None,
    namespace: Annotated[str | None, Query(
        description="Check only this namespace's events and chains")] = None,
) -> Response:
    """Recompute each event's hash from its content and its stream's chain (each stream's
    previous event is read when the range starts mid-stream), compare the log with its
    history and current-state copies and its Merkle leaves, the digests' roots, chain and
    signatures, over ``(from_position, to_position]``, and report the first problem in log
    order. At the head, the current state and the access log's chain are checked too.

    A problem answers **200** with ``"ok": false`` (the check worked; read the body); a
    range of more than 100,000 events, a to_position before from_position or an
    invalid namespace 400; an unreachable database 503. Walk the whole log with
    ``next_from_position``, or run ``ssot verify``."""
    service = service_of(request)
    assert service.settings.database_url
    if namespace is not None and namespace != SETTINGS_NAMESPACE:
        check_namespace(namespace)
    keys = {}
    path = service.settings.signing_key_file
    if path is not None:
        try:
            keys = verify.public_keys([_key(path)])
        except InvalidInput as e:
            raise Unavailable(f"the signing key cannot be read: {e.message}",
                              code="signing_key_unreadable") from None
    options = verify.Options(namespace=namespace, from_position=from_position,
                             to_position=to_position, keys=keys, max_events=MAX_EVENTS)
    options.check()
    try:
        report = await asyncio.to_thread(verify.verify, service.settings.database_url,
                                         options)
    except psycopg.OperationalError as e:
        raise Unavailable(f"the database is unreachable: {redact_url(str(e).strip())}",
                          code="store_unavailable") from e
    async with service.pool.connection() as conn:  # for ssot status and GET /metrics
        await record_run_async(conn, "verify", report.ok,
                               {**verify_detail(report), "namespace": namespace})
    return Response(orjson.dumps(report.as_dict(MAX_LISTED)), media_type=JSON)
