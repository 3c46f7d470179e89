"""A statement prepared on one of psycopg's connections, run on libpq (``psycopg.pq``) by
callbacks of the event loop on the connection's socket: for the statements the service
runs most, where psycopg's async machinery costs as much CPU as the statement.

Through psycopg's async cursor each statement registers a reader on the socket and removes
it again, makes a future and runs psycopg's generators to send, wait and fetch: ``select
1`` on a kept cursor takes ~49 µs of CPU, the log tail's read ~71 µs back to back and
~120 µs between commits, its wait for a NOTIFY ~100 µs more (docs/performance.md). On a
wire a step is one future awaited and one reader callback; the statement is prepared once
on the connection and sent with binary bigint parameters.

Its users are the log tail, whose wire stays attached while it follows (reads and
NOTIFYs), its rows loaded by psycopg's own ``Transformer``, the loaders a binary cursor
uses, so a row is what ``read_range`` returns; and the HTTP workers' reads of one entry
that go alone (``api/current_reads.py``), whose text parameters go as text and whose row
comes as the server's text. The connection stays psycopg's: between two steps it is idle
(every result taken), so psycopg may use it again once the wire is detached (the tail's
LISTENs, the workers' gathered reads). While attached and idle, the wire still watches
the socket: a connection that ends between two steps (a database restart) fails the wire
as it ends, and the next run raises at once instead of sending on a dead socket.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.adapt import Transformer
from psycopg.errors import error_from_result

from .stopping import deadline

_INT8 = struct.Struct(">q")
_TEXT = 0
_BINARY = 1


def numbered(query: str) -> str:
    """``query`` with its ``%s`` placeholders written ``$1``, ``$2``, … (for PREPARE)."""
    counter = itertools.count(1)
    return re.sub("%s", lambda _: f"${next(counter)}", query)


class Wire:
    """One connection's runs of a prepared statement, and its NOTIFYs, on the running loop
    (``open``); detached, psycopg may use the connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], name: str,
                 on_notify: Callable[[str, bytes], None] | None = None) -> None:
        self._pg = conn.pgconn
        self._fd = self._pg.socket
        self._loop = asyncio.get_running_loop()
        self._tx = Transformer(conn)
        self._name = name.encode()
        self._on_notify = on_notify
        #: The step awaited: a read's results, or (``_querying`` False) a NOTIFY.
        self._waiter: asyncio.Future[None] | None = None
        self._querying = False
        self._results: list[pq.abc.PGresult] = []
        self._failed: BaseException | None = None
        self._attached = False
        #: An ``interrupt`` that came while no wait was on: the next wait ends at once.
        self._interrupted = False
        #: Seconds a run waits for its answer before the connection counts as lost: a
        #: safety net (a read of the tail takes milliseconds), so that an answer that can
        #: never come costs a reconnect, not a follower stalled for ever.
        self.answer_timeout = 30.0

    @classmethod
    async def open(cls, conn: psycopg.AsyncConnection[Any], name: str, query: str,
                   parameters: int, on_notify: Callable[[str, bytes], None] | None = None, *,
                   parameter_type: str = "bigint") -> Wire:
        """A wire on ``conn`` (idle, in autocommit) for ``query`` (``%s`` placeholders,
        ``parameters`` of them, each a ``parameter_type``), prepared as ``name`` on this
        connection unless it already is (a pool's connection comes back with it),
        attached."""
        cur = await conn.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s",
                                 (name,))
        if await cur.fetchone() is None:
            await conn.execute(sql.SQL("PREPARE {} ({}) AS {}").format(
                sql.Identifier(name),
                sql.SQL(", ").join([sql.SQL(parameter_type)] * parameters),
                sql.SQL(numbered(query))))
        wire = cls(conn, name, on_notify)
        wire.attach()
        return wire

    @property
    def failed(self) -> bool:
        """Whether the connection is lost (or a run was given up): every run raises."""
        return self._failed is not None

    def attach(self) -> None:
        if not self._attached:
            self._loop.add_reader(self._fd, self._readable)
            self._attached = True

    def detach(self) -> None:
        if self._attached:
            self._loop.remove_reader(self._fd)
            self._attached = False

    @contextmanager
    def detached(self) -> Iterator[None]:
        """psycopg's turn on the connection (its own waits register their reader); then
        what came meanwhile is taken at once (a NOTIFY, or the connection's end)."""
        self.detach()
        try:
            yield
        finally:
            self._resume()

    def _resume(self) -> None:
        if self._failed is not None:
            return
        # psycopg's turn may have ended the connection (the server shut down under its
        # statement): psycopg then closed the socket, and watching it would fail with
        # EBADF in place of psycopg's own error. The wire fails instead, as on a loss.
        if self._pg.status != pq.ConnStatus.OK:
            self._fail(psycopg.OperationalError("the connection is lost"))
            return
        try:
            self.attach()
        except OSError as e:
            self._fail(psycopg.OperationalError(f"the connection is lost: {e}"))
            return
        self._readable()

    async def read(self, *parameters: int) -> list[tuple[Any, ...]]:
        """The rows of the statement run with the bigint ``parameters``, as a binary
        cursor returns them."""
        rows: list[tuple[Any, ...]] = []
        for result in await self._run([_INT8.pack(p) for p in parameters], _BINARY):
            self._tx.set_pgresult(result)
            rows.extend(self._tx.load_rows(0, result.ntuples, tuple))
        return rows

    async def read_text(self, *parameters: bytes) -> list[tuple[bytes | None, ...]]:
        """The rows of the statement run with ``parameters`` (each a value's text, in the
        connection's encoding), each value the server's text (None for null)."""
        rows: list[tuple[bytes | None, ...]] = []
        for result in await self._run(list(parameters), _TEXT):
            columns = range(result.nfields)
            rows.extend(tuple(result.get_value(i, j) for j in columns)
                        for i in range(result.ntuples))
        return rows

    async def _run(self, parameters: list[bytes], fmt: int) -> list[pq.abc.PGresult]:
        """The results of the statement run with ``parameters``, both in format ``fmt``
        (binary or text); an error the server answered is raised as psycopg raises it."""
        self._raise_failure()
        pg = self._pg
        try:
            # What came since the last step first: a connection that ended meanwhile
            # (its end read by no one while detached, or taken with a NOTIFY) says so
            # here. A query sent on it instead could wait forever: once its socket has
            # seen the end, the loop may not report it readable again (uvloop).
            pg.consume_input()
            pg.send_query_prepared(self._name, parameters,
                                   param_formats=[fmt] * len(parameters),
                                   result_format=fmt)
            self._querying = True
            if pg.flush():  # the rest when the socket takes it
                self._loop.add_writer(self._fd, self._writable)
            if pg.status != pq.ConnStatus.OK:  # libpq dropped it while sending
                raise psycopg.OperationalError(
                    pg.error_message.decode(errors="replace").strip()
                    or "the connection is lost")
        except psycopg.Error as e:
            self._fail(e)
            raise
        try:
            await self._step(self.answer_timeout)
        except TimeoutError:
            lost = psycopg.OperationalError(
                f"no answer within {self.answer_timeout:g} s: the connection counts as lost")
            self._fail(lost)
            self._pg.finish()  # closed: its statement is abandoned, psycopg sees it closed
            raise lost from None
        results, self._results = self._results, []
        for result in results:
            if result.status != pq.ExecStatus.TUPLES_OK:
                raise error_from_result(result)
        return results

    async def notified(self, timeout: float) -> None:
        """Until the connection brings a NOTIFY, ``timeout`` passes or ``interrupt``."""
        if self._interrupted:
            self._interrupted = False
            return
        timer = self._loop.call_later(timeout, self.interrupt)
        try:
            await self._step()
        finally:
            timer.cancel()

    async def unwatched(self, seconds: float) -> None:
        """Leave the socket unwatched for ``seconds``: NOTIFYs that come meanwhile wake
        nobody and wait in its buffer, then are taken at once (see ``LogTail``'s
        ``gather``). Only between steps: no read is in flight."""
        self.detach()
        try:
            await asyncio.sleep(seconds)
        finally:
            self._resume()  # what came meanwhile (or the connection's end)

    def interrupt(self) -> None:
        """End a wait for a NOTIFY now; at any other moment (a read, whose results must be
        taken, or between steps), the next wait."""
        if self._waiter is None or self._querying:
            self._interrupted = True
        else:
            self._wake()

    async def _step(self, timeout: float | None = None) -> None:
        """One wait for the connection: until ``_wake``, or a ``TimeoutError`` once
        ``timeout`` has passed."""
        self._raise_failure()
        self._waiter = waiter = self._loop.create_future()
        timer = None if timeout is None else deadline(timeout, (waiter,))
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _readable(self) -> None:
        pg = self._pg
        try:
            pg.consume_input()  # a lost connection raises
            answered = False
            if self._querying:
                while not pg.is_busy():
                    result = pg.get_result()
                    if result is None:  # every result of the read is in
                        self._querying, answered = False, True
                        break
                    self._results.append(result)
            # after the results: a NOTIFY behind the answer, in the same bytes, is parsed
            # only as the last of them is taken
            notified = False
            while (n := pg.notifies()) is not None:
                if self._on_notify is not None:
                    self._on_notify(n.relname.decode(), n.extra)
                notified = True
            if answered or (notified and not self._querying):
                self._wake()
            if pg.status != pq.ConnStatus.OK:
                raise psycopg.OperationalError("the connection is lost")
        except psycopg.Error as e:
            self._fail(e)

    def _writable(self) -> None:
        try:
            if not self._pg.flush():
                self._loop.remove_writer(self._fd)
        except psycopg.Error as e:
            self._loop.remove_writer(self._fd)
            self._fail(e)

    def _fail(self, error: BaseException) -> None:
        self._failed = error
        self.detach()  # a dead socket would call again and again
        self._querying = False
        self._wake()
