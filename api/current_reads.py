"""Reads of one entry's current state, gathered: the most frequent request, answered with
one statement for as many of them as arrive together.

A read that finds none in flight runs at once, on its own, as it always did. Reads that
arrive while one is in flight wait for it to end and then go together, in one statement
(``current_state.current_entries``), on one connection of the pool; so does whatever
arrives while that one runs. Under load each request pays a share of one round trip to
PostgreSQL and one pool checkout instead of its own (docs/performance.md has the
figures); alone, a read costs what it did.

Each read still sees every write acknowledged before it arrived: its statement starts
after it arrived (a read never joins a statement already sent). Two reads of the same
entry waiting together share one row. A failure of the statement is each waiting read's
failure, raised to its route as its own read's would have been.

As there is never more than one statement in flight, they can all go on one connection:
given the pool (there is no read replica to send them to), the reads keep one of its
connections, with one cursor, instead of checking one out and back for each statement
(which was a sixth of a read's Python calls). A statement that fails, or is given up,
hands that connection back to the pool, which closes it if it is broken; the next read
takes another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from nexus_ssot.ledger.metrics import metrics
from nexus_ssot.projections import current_state
from nexus_ssot.projections.current_state import CurrentEntry

Connect = Callable[[], contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]]
Address = tuple[str, str]
T = TypeVar("T")
Statement = Callable[[psycopg.AsyncCursor[Any]], Awaitable[T]]


class CurrentReads:
    """Reads through ``connect``'s connections, or one kept from ``pool`` (see the
    module)."""

    def __init__(self, connect: Connect,
                 pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None) -> None:
        self._connect = connect
        self._pool = pool
        #: The connection kept from the pool, and its cursor.
        self._kept: tuple[psycopg.AsyncConnection[Any], psycopg.AsyncCursor[Any]] | None = None
        self._gathered = metrics().entry_reads_gathered
        self._alone = metrics().entry_reads_alone
        self._busy = False
        self._task: asyncio.Task[None] | None = None  # the reads going together
        #: Reads waiting for the statement in flight to end, by address.
        self._waiting: dict[Address, asyncio.Future[CurrentEntry | None]] = {}

    async def current(self, namespace: str, key: str) -> CurrentEntry | None:
        """The entry's current state (None: never written)."""
        address = (namespace, key)
        if self._busy:
            future = self._waiting.get(address)
            if future is None:
                future = self._waiting[address] = asyncio.get_running_loop().create_future()
                future.add_done_callback(_retrieved)
            # shielded: a read given up (its client gone) leaves the others their answer
            return await asyncio.shield(future)
        self._busy = True
        self._alone.inc()
        try:
            return await self._run(
                lambda cursor: current_state.current_entry(cursor, namespace, key))
        finally:
            self._next()

    async def _run(self, statement: Statement[T]) -> T:
        """``statement`` on the kept connection (or one of ``connect``'s)."""
        if self._pool is None:
            async with self._connect() as conn:
                return await statement(conn.cursor())
        kept = self._kept
        if kept is None:
            conn = await self._pool.getconn()
            kept = self._kept = (conn, conn.cursor())
        try:
            return await statement(kept[1])
        except BaseException:
            await self.close()  # broken, or left mid-statement: the pool sees to it
            raise

    async def close(self) -> None:
        """Hand the kept connection back to the pool."""
        kept, self._kept = self._kept, None
        if kept is not None and self._pool is not None:
            await self._pool.putconn(kept[0])

    def _next(self) -> None:
        """The statement in flight ended: the reads that waited for it go next, together."""
        if not self._waiting:
            self._busy = False
            return
        waiting, self._waiting = self._waiting, {}
        self._task = asyncio.get_running_loop().create_task(self._together(waiting))

    async def _together(self, waiting: dict[Address, asyncio.Future[CurrentEntry | None]]
                        ) -> None:
        addresses = list(waiting)
        self._gathered.observe(len(addresses))
        try:
            found = await self._run(
                lambda cursor: current_state.current_entries(cursor, addresses))
        except Exception as error:
            for future in waiting.values():
                if not future.done():
                    future.set_exception(error)
        except BaseException:  # cancelled (the process stops): so are the reads
            for future in waiting.values():
                future.cancel()
            raise
        else:
            for address, entry in zip(addresses, found, strict=True):
                future = waiting[address]
                if not future.done():
                    future.set_result(entry)
        finally:
            self._next()


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Marks a failure as seen: the reads that waited for it may all have been given up."""
    if not future.cancelled():
        future.exception()
