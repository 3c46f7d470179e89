"""One active process per role and database, every role of a process on one connection;
and the retry loop every role shares.

A role (the broadcaster, a view, the digester, the idempotency purge) leads while this
process holds its session advisory lock. ``Leases`` keeps one connection (TCP keepalives,
so a vanished host releases its locks within seconds) for all of them: one keeper task
asks for every lock a standby role wants in one statement each ``interval``, and checks
the session every ``check_interval`` while it holds any; a role learns that it lost its
lease from ``Lease.check()``, which costs no round trip. When the connection goes, every
lock goes with it: every lease is lost, the keeper reconnects, the roles ask again.

Two roles of one process that want the same lock (session locks are re-entrant) take
turns: the second waits until the first lets go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg

from .redaction import redact_url
from .stopping import sleep_unless_stopped

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """The connection that held this role's lock is gone: another process may lead now."""


def lock_id(namespace: int, name: str) -> int:
    """The advisory lock of role ``name`` in ``namespace`` (stable across releases)."""
    return namespace ^ zlib.crc32(name.encode())


class Lease:
    """A role's lock, held on the ``Leases`` connection of ``generation``."""

    def __init__(self, leases: Leases, lock: int, generation: int) -> None:
        self._leases = leases
        self.lock = lock
        self.generation = generation

    def check(self) -> None:
        """Raise ``LeaseLost`` if the lock's connection was lost since it was granted."""
        if not self._leases.holds(self):
            raise LeaseLost(f"the session holding lock {self.lock} was lost")


class Leases:
    """The role locks of one process, held on one connection kept by ``run``."""

    def __init__(self, database_url: str, *, interval: float = 1.0,
                 check_interval: float = 2.0) -> None:
        self.database_url = database_url
        self.interval = interval
        self.check_interval = check_interval
        self.generation = 0
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._wanted: dict[int, asyncio.Future[int]] = {}
        self._held: set[int] = set()
        self._local: dict[int, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._checked_at = 0.0

    def holds(self, lease: Lease) -> bool:
        return (self._conn is not None and lease.generation == self.generation
                and lease.lock in self._held)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the connection and grant the locks asked for, until ``stop``."""

        async def keep(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("SET tcp_keepalives_idle = 5")
            await conn.execute("SET tcp_keepalives_interval = 2")
            await conn.execute("SET tcp_keepalives_count = 3")
            self._conn = conn
            await self._keep(stop, conn)

        await on_connection(self.database_url, "role leases", keep, stop, self._lose)

    def _lose(self) -> None:
        """Every lock went with the connection: its leases are lost."""
        if self._conn is not None or self._held:
            self.generation += 1
        self._conn = None
        self._held.clear()

    async def _keep(self, stop: asyncio.Event, conn: psycopg.AsyncConnection[Any]) -> None:
        while not stop.is_set():
            self._wake.clear()
            wanted = [lock for lock, f in self._wanted.items() if not f.done()]
            now = time.monotonic()
            if wanted:
                cur = await conn.execute(
                    "SELECT id, pg_try_advisory_lock(id) FROM unnest(%s::bigint[]) id",
                    (wanted,))
                for lock, granted in await cur.fetchall():
                    future = self._wanted.get(lock)
                    if not granted:
                        continue
                    if future is None or future.done():  # the role gave up meanwhile
                        await conn.execute("SELECT pg_advisory_unlock(%s)", (lock,))
                        continue
                    self._held.add(lock)
                    future.set_result(self.generation)
                self._checked_at = now
            elif self._held and now - self._checked_at >= self.check_interval:
                await conn.execute("SELECT 1")  # the session (and its locks) still there?
                self._checked_at = now
            wait = self.interval if any(not f.done() for f in self._wanted.values()) \
                else self.check_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, self._wake), wait)

    @contextlib.asynccontextmanager
    async def lead(self, namespace: int, name: str, stop: asyncio.Event
                   ) -> AsyncIterator[Lease | None]:
        """Wait until this process holds role ``(namespace, name)``'s lock and yield its
        lease, or yield None if ``stop`` is set first. The lock is let go on exit."""
        lock = lock_id(namespace, name)
        local = self._local.setdefault(lock, asyncio.Lock())
        if not await _acquired(local, stop):
            yield None
            return
        try:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._wanted[lock] = future
            self._wake.set()
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait((future, stopped), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                del self._wanted[lock]
            if not future.done():
                future.cancel()
                yield None
                return
            lease = Lease(self, lock, future.result())
            try:
                yield lease
            finally:
                await self._release(lease)
        finally:
            local.release()

    async def _release(self, lease: Lease) -> None:
        if not self.holds(lease):
            return  # lost with its connection
        self._held.discard(lease.lock)
        conn = self._conn
        assert conn is not None
        try:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (lease.lock,))
        except (psycopg.Error, OSError) as e:  # the keeper notices and reconnects
            log.info("letting go of lock %d: %s", lease.lock, redact_url(str(e)))


async def _first(stop: asyncio.Event, wake: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _acquired(lock: asyncio.Lock, stop: asyncio.Event) -> bool:
    """Acquire ``lock`` unless ``stop`` is set first."""
    acquiring = asyncio.ensure_future(lock.acquire())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((acquiring, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if acquiring.done() and not acquiring.cancelled():
        return True
    acquiring.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await acquiring
    if acquiring.done() and not acquiring.cancelled() and lock.locked():
        lock.release()  # acquired just as it was cancelled
    return False


async def on_connection(database_url: str, what: str,
                        body: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]],
                        stop: asyncio.Event, lost: Callable[[], None]) -> None:
    """Run ``body`` on a connection until ``stop``; when the connection (or a statement)
    fails, call ``lost`` and connect again after a backoff of 0.2 s doubling to 5 s."""
    backoff = 0.2
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(database_url,
                                                             autocommit=True) as conn:
                backoff = 0.2
                await body(conn)
        except (psycopg.Error, OSError) as e:  # a closed connection is an InterfaceError
            log.warning("%s: %s; reconnecting in %.1fs", what,
                        redact_url(f"{type(e).__name__}: {e}"), backoff)
            lost()
            await sleep_unless_stopped(stop, backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            lost()


async def retrying(role: str, lead: Callable[[asyncio.Event], Awaitable[None]],
                   stop: asyncio.Event, on_error: Callable[[str], None],
                   log: logging.Logger) -> None:
    """Run ``lead(stop)`` until ``stop`` is set; a failure (NATS or PostgreSQL away) is
    reported to ``on_error``, logged, and retried after a backoff of 0.2 s doubling to 5 s."""
    backoff = 0.2
    while not stop.is_set():
        try:
            await lead(stop)
            backoff = 0.2
        except Exception as e:
            error = redact_url(f"{type(e).__name__}: {e}")
            on_error(error)
            log.warning("%s: %s; retrying in %.1fs", role, error, backoff)
            await sleep_unless_stopped(stop, backoff)
            backoff = min(backoff * 2, 5.0)
