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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import psycopg

from nexus_ssot.ledger.metrics import metrics
from nexus_ssot.projections import current_state
from nexus_ssot.projections.current_state import CurrentEntry

Connect = Callable[[], contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]]
Address = tuple[str, str]


class CurrentReads:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._gathered = metrics().entry_reads_gathered
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
        self._gathered.observe(1)
        try:
            async with self._connect() as conn:
                return await current_state.current_entry(conn, namespace, key)
        finally:
            self._next()

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
            async with self._connect() as conn:
                found = await current_state.current_entries(conn, addresses)
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
