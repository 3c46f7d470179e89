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
failure, raised to its route as its own read's would have been. A read may name a log
position its state must include (``needs``: read-your-writes on a read replica); the
connection of a statement is asked for the furthest any of its reads needs.

As there is never more than one statement in flight, they can all go on one connection:
given the pool (there is no read replica to send them to), the reads keep one of its
connections, with one cursor, instead of checking one out and back for each statement
(which was a sixth of a read's Python calls). A statement that fails, or is given up,
hands that connection back to the pool, which closes it if it is broken; the next read
takes another.

A read that goes alone runs on that connection's wire (``ledger/wire.py``): its statement
prepared once on the connection, sent on libpq with its two parameters as text, its row
taken as the server's text (the entry JSON passed on as the bytes PostgreSQL sent),
without psycopg's cursor around it (12 % of a GET's instructions, docs/performance.md). The
wire watches the connection between reads, so one that ends meanwhile (a database
restart) is known before the next read is sent on it; psycopg has the connection for the
gathered reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from nexus_ssot.ledger.metrics import metrics
from nexus_ssot.ledger.wire import Wire
from nexus_ssot.projections import current_state
from nexus_ssot.projections.current_state import CurrentEntry

#: A connection whose log holds the position given (None: any).
Connect = Callable[[int | None],
                   contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]]
Address = tuple[str, str]
T = TypeVar("T")
Statement = Callable[[psycopg.AsyncCursor[Any]], Awaitable[T]]

#: The read of one entry, prepared on the kept connection for its wire.
_READ = "ssot_current_entry"


class CurrentReads:
    """Reads through ``connect``'s connections, or one kept from ``pool`` (see the
    module)."""

    def __init__(self, connect: Connect,
                 pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None) -> None:
        self._connect = connect
        self._pool = pool
        #: The connection kept from the pool, its cursor, and its wire.
        self._kept: _Kept | None = None
        self._gathered = metrics().entry_reads_gathered
        self._alone = metrics().entry_reads_alone
        self._busy = False
        self._task: asyncio.Task[None] | None = None  # the reads going together
        #: Reads waiting for the statement in flight to end, by address, and the furthest
        #: position one of them needs.
        self._waiting: dict[Address, asyncio.Future[CurrentEntry | None]] = {}
        self._needs: int | None = None

    async def current(self, namespace: str, key: str, needs: int | None = None
                      ) -> CurrentEntry | None:
        """The entry's current state (None: never written), in a state of the log that
        holds position ``needs`` (given to ``connect``; the kept connection of the pool
        is the primary's, which the caller knows to hold it)."""
        address = (namespace, key)
        if self._busy:
            if needs is not None:
                self._needs = needs if self._needs is None else max(self._needs, needs)
            future = self._waiting.get(address)
            if future is None:
                future = self._waiting[address] = asyncio.get_running_loop().create_future()
                future.add_done_callback(_retrieved)
            # shielded: a read given up (its client gone) leaves the others their answer
            return await asyncio.shield(future)
        self._busy = True
        self._alone.inc()
        try:
            if self._pool is None:
                return await self._run(
                    lambda cursor: current_state.current_entry(cursor, namespace, key), needs)
            return await self._read(namespace, key)
        finally:
            self._next()

    async def _keep(self) -> _Kept:
        """The connection kept from the pool (checked out, its wire opened, if none is)."""
        kept = self._kept
        if kept is None or kept.wire.failed:
            if kept is not None:
                await self.close()  # ended between two reads: the pool sees to it
            assert self._pool is not None
            conn = await self._pool.getconn()
            try:
                wire = await Wire.open(conn, _READ, current_state.GET, 2,
                                       parameter_type="text")
            except BaseException:
                await self._pool.putconn(conn)
                raise
            kept = self._kept = _Kept(conn, conn.cursor(), wire, conn.info.encoding)
        return kept

    async def _read(self, namespace: str, key: str) -> CurrentEntry | None:
        """One entry, on the kept connection's wire."""
        kept = await self._keep()
        parameters = namespace.encode(kept.encoding), key.encode(kept.encoding)
        try:
            rows = await kept.wire.read_text(*parameters)
        except BaseException:
            # broken, left mid-statement, or an error its prepared statement would give
            # again (a migration changed what it returns): a connection of its own is
            # made for the next read
            await self.close(discard=True)
            raise
        return current_state.entry_of_text(rows[0], kept.encoding) if rows else None

    async def _run(self, statement: Statement[T], needs: int | None = None) -> T:
        """``statement`` on the kept connection (or one of ``connect``'s, holding
        ``needs``)."""
        if self._pool is None:
            async with self._connect(needs) as conn:
                return await statement(conn.cursor())
        kept = await self._keep()
        try:
            with kept.wire.detached():  # psycopg's turn
                return await statement(kept.cursor)
        except BaseException:
            await self.close()  # broken, or left mid-statement: the pool sees to it
            raise

    async def close(self, *, discard: bool = False) -> None:
        """Hand the kept connection back to the pool (closed first if ``discard``)."""
        kept, self._kept = self._kept, None
        if kept is not None:
            kept.wire.detach()
            if discard:
                await kept.conn.close()
            if self._pool is not None:
                await self._pool.putconn(kept.conn)

    def _next(self) -> None:
        """The statement in flight ended: the reads that waited for it go next, together."""
        if not self._waiting:
            self._busy = False
            return
        waiting, self._waiting = self._waiting, {}
        needs, self._needs = self._needs, None
        self._task = asyncio.get_running_loop().create_task(self._together(waiting, needs))

    async def _together(self, waiting: dict[Address, asyncio.Future[CurrentEntry | None]],
                        needs: int | None) -> None:
        addresses = list(waiting)
        self._gathered.observe(len(addresses))
        try:
            found = await self._run(
                lambda cursor: current_state.current_entries(cursor, addresses), needs)
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


@dataclass
class _Kept:
    conn: psycopg.AsyncConnection[Any]
    cursor: psycopg.AsyncCursor[Any]
    wire: Wire
    encoding: str  # the connection's, a Python codec's name


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Marks a failure as seen: the reads that waited for it may all have been given up."""
    if not future.cancelled():
        future.exception()
