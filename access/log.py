"""The access log: every authentication failure, authorisation denial and use of an admin
action appended to ``access_log`` (migration 0012), a hash chain (``ledger/access_chain``)
that ``ssot verify`` checks, exports carry and ``GET /v1/audit/access`` reads.

``AccessLog`` is each HTTP worker's writer. ``record(entry)`` never blocks and never
raises: it puts the record in a bounded in-memory queue (``access_log_queue``; beyond it
records are dropped and counted) unless the flood bound suppresses it
(``access_log_max_per_second`` per decision, client address and reason, in this process;
a summary record stands for the suppressed ones). A background task appends the queue
every ``interval`` (0.1 s) or as soon as ``batch_size`` (500) records wait (with nothing
queued and no summary to come it sleeps until a record arrives: an idle worker does no
work for its access log), in one
transaction per batch that takes ``pg_advisory_xact_lock(access_chain.LOCK_ID)``, reads
the head (last seq and hash) and inserts the rows chained from it: workers in several
processes append one unbroken chain. While PostgreSQL is down the records stay queued
(bounded) and the append is retried with backoff; ``stop()`` appends what it still can.

``read`` is the page of rows behind the route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from nexus_ssot.ledger import access_chain
from nexus_ssot.ledger.chain import timestamp
from nexus_ssot.ledger.settings import Settings

from .flood import Clock, Drops, FloodBound
from .records import AccessRecord

__all__ = ["AccessLog", "AccessRecord", "AccessRow", "read"]

log = logging.getLogger(__name__)

#: Most rows appended in one transaction.
BATCH_SIZE = 500
#: Seconds between appends while records wait.
INTERVAL = 0.1
#: Longest wait between retries while PostgreSQL cannot be reached.
MAX_BACKOFF = 5.0
#: Longest one append may take before it counts as failed (and is retried).
APPEND_TIMEOUT = 30.0

_HEAD_SQL = (
    "SELECT clock_timestamp(), h.seq, h.hash, h.recorded_at FROM (SELECT 1) AS one"
    " LEFT JOIN LATERAL (SELECT seq, hash, recorded_at FROM access_log"
    " ORDER BY seq DESC LIMIT 1) AS h ON true")
_INSERT_SQL = (
    "INSERT INTO access_log (seq, recorded_at, record, prev_hash, hash)"
    " SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[],"
    " %s::text[])")


class AccessLog:
    """One process's access log writer (see the module docstring). ``clock`` (monotonic
    seconds) times the flood bound's seconds; tests give their own."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, max_per_second: int = 50,
                 queue_size: int = 10_000, interval: float = INTERVAL,
                 batch_size: int = BATCH_SIZE, clock: Clock = time.monotonic) -> None:
        self.pool = pool
        self.queue_size = queue_size
        self.interval = interval
        self.batch_size = batch_size
        self.clock = clock
        self.flood = FloodBound(max_per_second, clock)
        self.drops = Drops()
        self._queue: deque[dict[str, Any]] = deque()
        self._retry: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._signalled = False
        #: The task sleeps until a record arrives (nothing queued, no summary to come).
        self._idle = False
        self._last_drop_summary = float("-inf")
        self._failing = False
        #: Rows appended by this writer, and records it could not append at stop.
        self.appended = 0
        self.lost = 0

    @classmethod
    def from_settings(cls, pool: AsyncConnectionPool[Any], settings: Settings) -> AccessLog:
        return cls(pool, max_per_second=settings.access_log_max_per_second,
                   queue_size=settings.access_log_queue)

    # --- the request path -----------------------------------------------------------

    def record(self, entry: AccessRecord) -> None:
        """Queue ``entry`` to be appended (or count it, see the module docstring). Never
        blocks, never raises; callable from any thread."""
        try:
            with self._lock:
                if not self.flood.admit(entry):
                    return
                if len(self._queue) >= self.queue_size:
                    self.drops.drop(entry)
                    return
                self._queue.append(entry.as_json())
                wake = ((len(self._queue) >= self.batch_size or self._idle)
                        and not self._signalled)
                if wake:
                    self._signalled = True
                    self._idle = False
            if wake:
                self._signal()
        except Exception:  # the request goes on; the record is lost, and said so
            log.exception("access log: a record could not be queued")

    def _signal(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    @property
    def pending(self) -> int:
        """Records waiting to be appended."""
        with self._lock:
            return len(self._queue) + len(self._retry)

    @property
    def suppressed(self) -> int:
        """Records the flood bound suppressed so far (their summaries are stored)."""
        return self.flood.suppressed_total

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full so far (summaries are stored)."""
        return self.drops.total

    # --- the background task --------------------------------------------------------

    async def start(self) -> None:
        """Start appending in the background (on the running event loop)."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="ssot-access-log")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the background task and append what is queued, trying for at most
        ``timeout`` seconds; what could not be appended is counted in ``lost``."""
        deadline = time.monotonic() + timeout
        task, self._task = self._task, None
        if task is not None:
            assert self._stopping is not None and self._wake is not None
            self._stopping.set()
            self._wake.set()
            # an append under way may finish (or is cancelled: its batch stays queued)
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        backoff = 0.05
        while True:
            try:
                await self._drain(final=True, deadline=deadline)
                return
            except Exception as e:
                if time.monotonic() + backoff >= deadline:
                    lost = self.pending
                    self.lost += lost
                    with self._lock:
                        self._queue.clear()
                        self._retry = []
                    log.error("access log: %d records could not be appended at stop: %s",
                              lost, e)
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def flush(self) -> None:
        """Append everything queued now, the summaries due included (raises what the
        append raises; the records then stay queued)."""
        await self._drain(final=False)

    async def _run(self) -> None:
        assert self._wake is not None and self._stopping is not None
        wake, stopping = self._wake, self._stopping
        backoff = 0.0
        while not stopping.is_set():
            if backoff:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), backoff)
                if stopping.is_set():
                    return
            else:
                with self._lock:
                    self._idle = self._nothing_due()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), None if self._idle else self.interval)
            wake.clear()
            with self._lock:
                self._signalled = False
            if stopping.is_set():
                return
            try:
                await self._drain(final=False)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                backoff = min(max(backoff * 2, self.interval), MAX_BACKOFF)
                if not self._failing:
                    log.warning("access log: appending failed (%s); %d records wait, "
                                "retrying", e, self.pending)
                self._failing = True
            else:
                if self._failing:
                    log.warning("access log: appending again")
                backoff, self._failing = 0.0, False

    def _nothing_due(self) -> bool:
        """Nothing queued, nothing to retry, no summary to come (under the lock)."""
        return not (self._queue or self._retry or self.flood.windows or self.flood.ready
                    or self.drops.pending)

    async def _drain(self, *, final: bool, deadline: float | None = None) -> None:
        """Append batches until the queue is empty (the summaries due ride along)."""
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("the time to append is over")
            batch = self._take(final)
            if not batch:
                return
            timeout = APPEND_TIMEOUT if deadline is None \
                else max(deadline - time.monotonic(), 0.01)
            try:
                await asyncio.wait_for(self._append(batch, timeout), timeout)
            except BaseException:
                with self._lock:
                    self._retry = batch  # first again next time
                raise
            self.appended += len(batch)

    def _take(self, final: bool) -> list[dict[str, Any]]:
        """The next batch: a failed one again, or queued records and due summaries."""
        with self._lock:
            if self._retry:
                batch, self._retry = self._retry, []
                return batch
            batch = [self._queue.popleft()
                     for _ in range(min(self.batch_size, len(self._queue)))]
            batch += self.flood.summaries(final=final)
            moment = self.clock()
            if final or moment - self._last_drop_summary >= 1.0:
                drops = self.drops.summaries()
                if drops:
                    batch += drops
                    self._last_drop_summary = moment
            return batch

    async def _append(self, records: list[dict[str, Any]], timeout: float) -> None:
        """One transaction: lock, read the head, insert ``records`` chained after it."""
        async with self.pool.connection(timeout=timeout) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (access_chain.LOCK_ID,))
            cur = await conn.execute(_HEAD_SQL)
            row = await cur.fetchone()
            assert row is not None
            clock, seq, prev_hash, last_at = row
            seq = int(seq or 0)
            moment: datetime = clock if last_at is None or clock >= last_at else last_at
            recorded_at = timestamp(moment)
            seqs, texts, prevs, hashes = [], [], [], []
            for record in records:
                seq += 1
                text = access_chain.encode_record(record)
                own = access_chain.row_hash(seq, recorded_at, record, prev_hash)
                seqs.append(seq)
                texts.append(text)
                prevs.append(prev_hash)
                hashes.append(own)
                prev_hash = own
            await conn.execute(_INSERT_SQL, (seqs, [moment] * len(seqs), texts, prevs,
                                             hashes))


@dataclass(frozen=True)
class AccessRow:
    """One row of the access log: ``record`` is its stored JSON text."""

    seq: int
    recorded_at: str
    record: str
    prev_hash: str | None
    hash: str

    def as_json(self) -> bytes:
        """The row as the route answers it (the record as stored, not re-encoded)."""
        return orjson.dumps({"seq": self.seq, "recorded_at": self.recorded_at,
                             "record": orjson.Fragment(self.record),
                             "prev_hash": self.prev_hash, "hash": self.hash})


async def read(conn: psycopg.AsyncConnection[Any], *, decision: str | None = None,
               subject: str | None = None, since: datetime | None = None,
               after_seq: int | None = None, limit: int = 100) -> list[AccessRow]:
    """At most ``limit`` rows after ``after_seq``, in seq order (newest last), of
    ``decision``, of ``subject``, recorded at or after ``since``."""
    where: list[str] = []
    params: list[Any] = []
    if after_seq is not None:
        where.append("seq > %s")
        params.append(after_seq)
    if decision is not None:
        where.append("(record::jsonb) ->> 'decision' = %s")
        params.append(decision)
    if subject is not None:
        where.append("(record::jsonb) ->> 'subject' = %s")
        params.append(subject)
    if since is not None:
        where.append("recorded_at >= %s")
        params.append(since if since.tzinfo is not None else since.replace(tzinfo=UTC))
    query = (f"SELECT seq, {access_chain.RECORDED_AT_SQL}, record, prev_hash, hash"
             f" FROM access_log{' WHERE ' + ' AND '.join(where) if where else ''}"
             " ORDER BY seq LIMIT %s")
    cur = await conn.execute(query.encode(), (*params, limit))
    return [AccessRow(int(seq), at, text, prev, own)
            for seq, at, text, prev, own in await cur.fetchall()]
