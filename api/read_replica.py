"""Where a read of entries runs: on the read replica (``SSOT_READ_DATABASE_URL``) when one
is configured and has replayed what the read needs, else on the primary.

A read needs a position when it names one: ``min_position`` (read-your-writes: the
``position`` a write returned) or ``position`` (a read at that point of the log). The
replica serves it once its log holds that position, waiting up to
``SSOT_READ_REPLICA_WAIT_SECONDS``; after that, or when the replica cannot be reached,
the primary serves it. So a client that passes the position its write returned always
reads its write; a read naming no position may be served by a replica a little behind
(asynchronous replication: docs/cluster.md). Reads at a version or a time, and every
other route, read the primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from nexus_ssot.projections.runtime import head_position

from .cuts import within_head
from .service import Service

#: Longest a read waits for the replica to answer at all (paused or unreachable).
_CONNECT_TIMEOUT = 1.0


@contextlib.asynccontextmanager
async def read_connection(service: Service, needs: int | None, field: str = "min_position"
                          ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection for a read needing log position ``needs`` (None: any state). On the
    primary, a position beyond the log's head is refused (``position_beyond_head``,
    naming ``field``): no write returned it, so waiting would not help."""
    if service.read_pool is not None:
        async with contextlib.AsyncExitStack() as replica:
            conn = await _caught_up_replica(service, replica, needs)
            if conn is not None:
                yield conn
                return
    async with service.pool.connection() as conn:
        if needs is not None:
            await ensure_held(service, conn, needs, field)
        yield conn


async def ensure_held(service: Service, conn: psycopg.AsyncConnection[Any], needs: int,
                      field: str) -> None:
    """Returns once the primary's log (``conn``'s) holds position ``needs``, as known
    (``service.log_head``) or its head says; ``position_beyond_head`` (naming ``field``)
    when it does not."""
    if not service.log_head.holds(needs):
        service.log_head.saw(await within_head(conn, needs, field))


async def _caught_up_replica(service: Service, stack: contextlib.AsyncExitStack,
                             needs: int | None) -> psycopg.AsyncConnection[Any] | None:
    """A replica connection whose log holds ``needs``, or None (then the primary reads)."""
    assert service.read_pool is not None
    wait = service.settings.read_replica_wait_seconds
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT + wait):
            conn: psycopg.AsyncConnection[Any] = await stack.enter_async_context(
                service.read_pool.connection(timeout=_CONNECT_TIMEOUT))
            # The head is asked even when the read needs none: a replica that stopped
            # answering (paused, cut off) costs a read at most the timeout.
            deadline = time.monotonic() + wait
            delay = 0.002
            while (head := await head_position(conn)) < (needs or 0):
                if time.monotonic() >= deadline:
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
            service.log_head.saw(head)  # what the replica replayed, the primary committed
            return conn
    except (TimeoutError, PoolTimeout, psycopg.OperationalError):
        return None
