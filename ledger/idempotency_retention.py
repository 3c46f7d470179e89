"""How long idempotency keys are kept, and their purge.

A key (``idempotency_keys``, written in the same transaction as the events its request
appended) answers a retry of its request with the first answer for
``SSOT_IDEMPOTENCY_RETENTION_SECONDS`` (7 days) after that request committed. Then the
purger deletes it, and a request with the same key is a new request. The purger runs in
one process per database (``leadership.Leases``), every ``SSOT_IDEMPOTENCY_PURGE_EVERY_SECONDS``
(60): a key outlives its retention by up to that much, never less.

The purge never holds up writes: each batch is one short autocommit statement deleting at
most ``PURGE_BATCH`` of the oldest expired rows, found through the index on
``recorded_at`` (migration 0015). Its row locks touch only expired keys, and the table lock
a DELETE takes (ROW EXCLUSIVE) does not conflict with the writer's INSERTs, so a write goes
on while a batch runs; only a write that reuses an expired key being deleted that instant
waits, for that one batch.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from .following import Following, followed
from .leadership import retrying
from .stopping import sleep_unless_stopped

log = logging.getLogger("nexus_ssot.idempotency")

_LOCK_NAMESPACE = 0x55_0700_0005  # arbitrary, fixed: "ssot idempotency purge"
_LOCK_NAME = "idempotency-keys"
#: Most keys one statement deletes (and so the most rows it locks at once).
PURGE_BATCH = 1000

_PURGE_SQL = """
DELETE FROM idempotency_keys WHERE (actor, key) IN (
    SELECT actor, key FROM idempotency_keys
    WHERE recorded_at < now() - make_interval(secs => %(retention)s)
    ORDER BY recorded_at LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED)"""


async def purge_batch(conn: psycopg.AsyncConnection[Any], retention_seconds: float,
                      batch: int = PURGE_BATCH) -> int:
    """Delete up to ``batch`` of the keys older than ``retention_seconds`` (oldest first)
    in one statement; the number deleted. ``conn`` in autocommit: the statement is its
    own transaction."""
    cur = await conn.execute(_PURGE_SQL, {"retention": retention_seconds, "batch": batch})
    return cur.rowcount


@dataclass
class Progress:
    """What the purger has done: whether it leads, keys purged, its last error."""

    leading: bool = False
    purged: int = 0
    rounds: int = 0
    last_error: str | None = None


class IdempotencyPurger:
    """Purges expired idempotency keys, batch by batch, every ``every_seconds``, in one
    process per database (the others stand by)."""

    def __init__(self, database_url: str, *, retention_seconds: float,
                 every_seconds: float, batch: int = PURGE_BATCH,
                 poll_interval: float = 1.0) -> None:
        self.database_url = database_url
        self.retention_seconds = retention_seconds
        self.every_seconds = every_seconds
        self.batch = batch
        self.poll_interval = poll_interval
        self.progress = Progress()

    async def run(self, stop: asyncio.Event, following: Following | None = None) -> None:
        """Lead (or wait to lead) until ``stop`` is set; failures are retried. With
        ``following``, on the leases of the process's followers."""

        def failed(error: str) -> None:
            self.progress.leading = False
            self.progress.last_error = error

        async def role(following: Following) -> None:
            await retrying("idempotency purge", lambda stop: self._lead(stop, following),
                           stop, failed, log)

        await followed(self.database_url, role, following, stop, self.poll_interval,
                       tail=False)

    async def _lead(self, stop: asyncio.Event, following: Following) -> None:
        async with following.leases.lead(_LOCK_NAMESPACE, _LOCK_NAME, stop) as lease:
            if lease is None:
                return
            self.progress.leading = True
            log.info("idempotency purge leads: keys are kept %gs", self.retention_seconds)
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.database_url, autocommit=True) as conn:
                    while not stop.is_set():
                        await self.purge(conn, stop)
                        lease.check()  # still holding the lock?
                        await sleep_unless_stopped(stop, self.every_seconds)
            finally:
                self.progress.leading = False

    async def purge(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> int:
        """One round: batches until none is full (or ``stop``); the keys purged."""
        purged = 0
        while not stop.is_set():
            done = await purge_batch(conn, self.retention_seconds, self.batch)
            purged += done
            if done < self.batch:
                break
        if purged:
            log.info("purged %d idempotency keys older than %gs", purged,
                     self.retention_seconds)
        self.progress.purged += purged
        self.progress.rounds += 1
        return purged
