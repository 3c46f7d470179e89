"""Rows into PostgreSQL by COPY: the events' binary rows (their stored state as it is),
the text rows of the other tables, and the Copier that keeps one COPY open while the
import checks the next lines."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from nexus_ssot.ledger.events import TYPE_OF_TOPIC

# The events go by a binary COPY: the state as it is (not in hex), which halves
# PostgreSQL's work for them. A row: the number of fields, then each one's length and
# bytes: notification_id int8, originator_id uuid, originator_version int8, topic text,
# state bytea, recorded_at timestamptz (microseconds since 2000-01-01 UTC).
EVENTS_COPY = (b"COPY ssot_events (notification_id, originator_id, originator_version, topic,"
               b" state, recorded_at) FROM STDIN (FORMAT binary)")
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
_BINARY_TRAILER = b"\xff\xff"
_ROW_HEAD = struct.Struct(">hiqi16siq")
_INT4 = struct.Struct(">i")
_ROW_TAIL = struct.Struct(">iq")
_TOPIC_CELLS = {topic: _INT4.pack(len(topic.encode())) + topic.encode()
                for topic in TYPE_OF_TOPIC}
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
IDEMPOTENCY_COPY = (b"COPY idempotency_keys (actor, key, request_hash, namespace, entry_key,"
                    b" version, position, recorded_at, event_ids) FROM STDIN")
#: Bytes of rows sent to PostgreSQL in one write.
CHUNK = 1 << 18


def binary_event_row(position: int, stream: str, version: int, topic: str, state: bytes,
                     recorded_at: datetime) -> bytes:
    """The row of an event in the binary COPY of ``EVENTS_COPY`` (``topic`` one of
    ``TYPE_OF_TOPIC``, ``state`` the stored bytes)."""
    microseconds = (recorded_at - _PG_EPOCH) // _MICROSECOND
    return b"".join((
        _ROW_HEAD.pack(6, 8, position, 16, bytes.fromhex(stream.replace("-", "")), 8, version),
        _TOPIC_CELLS[topic], _INT4.pack(len(state)), state,
        _ROW_TAIL.pack(8, microseconds)))


def copy_text(value: Any) -> bytes:
    """``value`` as a cell of a text COPY row (NULL for None, escaped)."""
    if value is None:
        return b"\\N"
    text = str(value)
    return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r").encode())


class Copier:
    """Rows into one table at a time, by one COPY kept open while the lines go by: its
    rows are sent in large writes and PostgreSQL stores them while the next lines are
    checked (a COPY ends, and the checks wait for PostgreSQL, only when another table's
    rows come or a query needs the connection). A statement may run on the connection
    ``meanwhile``: the rows wait in memory (at most a batch of lines') until it is done."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.statement: bytes | None = None
        self.stack = contextlib.AsyncExitStack()
        self.copy: Any = None
        self.rows: list[bytes] = []
        self.size = 0
        self.sent = 0
        self.running: asyncio.Task[None] | None = None

    async def add(self, statement: bytes, row: bytes) -> None:
        if statement != self.statement:
            await self.end()
            self.statement = statement
        self.rows.append(row)
        self.size += len(row)
        if self.size - self.sent >= CHUNK:
            self.sent = self.size
            if self.running is not None:
                await asyncio.sleep(0)  # let the statement go out / its answer come in
                if not self.running.done():
                    return
                await self._done()
            await self._send()

    async def meanwhile(self, statement: Coroutine[Any, Any, None]) -> None:
        """Run ``statement`` while the next lines are checked (the COPY is ended first)."""
        try:
            await self.end()
        except BaseException:
            statement.close()
            raise
        self.running = asyncio.ensure_future(statement)
        await asyncio.sleep(0)

    async def _done(self) -> None:
        running, self.running = self.running, None
        if running is not None:
            await running

    async def _send(self) -> None:
        if self.copy is None:
            assert self.statement is not None
            cur = await self.stack.enter_async_context(self.conn.cursor())
            self.copy = await self.stack.enter_async_context(cur.copy(self.statement))
            if self.statement == EVENTS_COPY:
                self.rows.insert(0, _BINARY_HEADER)
        await self.copy.write(b"".join(self.rows))
        self.rows.clear()
        self.size = self.sent = 0

    async def end(self) -> None:
        """Send what is left and end the COPY (waiting for PostgreSQL to store it, and for
        a statement running meanwhile)."""
        await self._done()
        if self.rows:
            await self._send()
        if self.copy is not None:
            if self.statement == EVENTS_COPY:
                await self.copy.write(_BINARY_TRAILER)
            self.copy = None
            await self.stack.aclose()
        self.statement = None

    async def fail(self, error: BaseException) -> None:
        """Abandon an open COPY, or a statement running meanwhile, after ``error`` (the
        transaction is rolled back)."""
        self.rows.clear()
        if self.running is not None:
            self.running.cancel()
            with contextlib.suppress(BaseException):
                await self.running
            self.running = None
        if self.copy is not None:
            self.copy = None
            with contextlib.suppress(psycopg.Error):
                await self.stack.__aexit__(type(error), error, error.__traceback__)
