"""The log's CloudEvents for HTTP clients: catch-up pages after a position, and the live
feed as Server-Sent Events, resumable with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated

import psycopg
from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from nexus_ssot.ledger.addressing import check_key, check_namespace
from nexus_ssot.ledger.errors import InvalidInput
from nexus_ssot.projections import event_feed

from . import models
from .guard import EventVisibility, Guard, guard_of
from .pagination import decode_cursor, page
from .params import MAX_INT, READ_ERRORS, Cursor, Limit, service_of

router = APIRouter(prefix="/v1")

_POSITION = re.compile(r"^[0-9]{1,19}$")


@router.get(
    "/events",
    summary="Catch-up: the CloudEvents of the log after a position",
    response_model=models.EventPage,
    responses=READ_ERRORS,
    tags=["events"],
)
async def list_events(
    request: Request,
    after: Annotated[int, Query(ge=0, le=MAX_INT,
                                description="Global position to start after")] = 0,
    namespace: Annotated[str | None, Query(description="Only this namespace")] = None,
    key: Annotated[str | None, Query(description="Only this key (with namespace)")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    ns, k = _feed_filter(namespace, key)
    position = decode_cursor(cursor, "after", ns=ns, k=k)
    start = position["after"] if position else after
    service = service_of(request)
    sees = EventVisibility(guard_of(request), "read")
    async with service.pool.connection() as conn:
        rows: list[event_feed.FeedEvent] = []
        while len(rows) <= limit:
            batch = await event_feed.events_after(conn, start, limit=limit + 1, namespace=ns,
                                                  key=k)
            rows += [r for r in batch if sees(r.namespace, r.key)]
            if len(batch) < limit + 1:
                break
            start = batch[-1].position
    # The cursor is the last shown event's position: it tells nothing of hidden ones.
    return page(rows[:limit + 1], limit, lambda r: r.body,
                lambda r: {"after": r.position, "ns": ns, "k": k})


@router.get(
    "/events/stream",
    summary="Live feed: the log's CloudEvents as Server-Sent Events (resumable)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **READ_ERRORS},
    tags=["events"],
)
async def stream_events(
    request: Request,
    after: Annotated[int | None, Query(ge=0, le=MAX_INT, description="Start after this position "
                                       "(default: the head, i.e. new events only)")] = None,
    namespace: Annotated[str | None, Query(description="Only this namespace")] = None,
    key: Annotated[str | None, Query(description="Only this key (with namespace)")] = None,
) -> Response:
    ns, k = _feed_filter(namespace, key)
    service = service_of(request)
    guard = guard_of(request)
    identity = guard.identity
    last_event_id = request.headers.get("last-event-id")
    if last_event_id is not None:
        if not _POSITION.match(last_event_id) or int(last_event_id) > MAX_INT:
            raise InvalidInput("Last-Event-ID must be a position (a whole number)",
                               code="invalid_last_event_id", field="Last-Event-ID")
        start = int(last_event_id)
    elif after is not None:
        start = after
    else:
        async with service.pool.connection() as conn:
            start = await event_feed.head_position(conn)

    async def events() -> AsyncIterator[bytes]:
        position, quiet_since = start, time.monotonic()
        # The id of where the stream starts: a client that has seen no event yet resumes
        # from there too (Last-Event-ID), and misses nothing written while it was away.
        yield b": nexus-ssot event stream\nid: %d\n\n" % start
        notifier = service.notifier
        while not notifier.ending and not await request.is_disconnected():
            try:
                async with service.pool.connection() as conn:
                    batch = await event_feed.events_after(conn, position, limit=500,
                                                          namespace=ns, key=k)
                # The policy and the token as they are now (re-read if they changed): a
                # change committed before these events applies to them.
                await service.access.refresh()
            except psycopg.OperationalError:
                # The store is restarting: keep the stream (and the client's place in the
                # log) and ask again; the comment keeps proxies from timing it out.
                yield b": the event store is unavailable; retrying\n\n"
                await asyncio.sleep(SSE_RETRY_SECONDS)
                continue
            if not service.access.still_valid(identity):
                yield b": the token was revoked or expired; the stream ends\n\n"
                return
            sees = EventVisibility(Guard(identity, service.access.policies), "read")
            for event in batch:
                if sees(event.namespace, event.key):
                    yield b"id: %d\ndata: %s\n\n" % (event.position, event.body)
            if batch:
                position = batch[-1].position
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since > SSE_KEEPALIVE_SECONDS:
                yield b": keepalive\n\n"
                quiet_since = time.monotonic()
            await notifier.wait(0.5)
        if notifier.ending:  # the server is stopping; the chunked response ends cleanly
            yield b": the server is stopping; reconnect with Last-Event-ID to resume\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


SSE_KEEPALIVE_SECONDS = 15.0
SSE_RETRY_SECONDS = 0.5


def _feed_filter(namespace: str | None, key: str | None) -> tuple[str | None, str | None]:
    if key is not None and namespace is None:
        raise InvalidInput("key needs namespace", code="invalid_parameter", field="key")
    return (check_namespace(namespace) if namespace is not None else None,
            check_key(key) if key is not None else None)
