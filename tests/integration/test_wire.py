"""The log tail's connection driven by the event loop's callbacks (ledger/wire.py): a
read on it is what a binary cursor reads, a NOTIFY ends its wait and is reported, an
interrupt during a read ends the next wait, a server error is raised and leaves the
connection usable, a connection killed under it fails the wait (and the tail reconnects and
misses nothing), on asyncio's loop and on uvloop's (``ssot serve``'s)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import uvloop

from nexus_ssot.ledger.commands import Context, Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.log_tail import _READ_WITH_HISTORY, LogTail, log_events, read_range
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.wire import Wire, numbered
from nexus_ssot.ledger.writer import GroupCommitWriter

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
RUNNERS = pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])


def put(writer: GroupCommitWriter, ns: str, count: int, round: int = 0) -> None:
    for i in range(count):
        writer.write_batch([(Put(ns, f"k{i}", document={"i": i, "s": "é", "round": round}),
                             Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC),
                                     actor="wire-test", correlation_id="c"), None)])[0].result(30)


def test_placeholders_are_numbered_in_order() -> None:
    assert numbered("a > %s AND b <= %s LIMIT %s") == "a > $1 AND b <= $2 LIMIT $3"


@RUNNERS
def test_a_read_on_the_wire_is_what_a_binary_cursor_reads(
        run: Runner, writer: GroupCommitWriter, database_url: str, ns: str) -> None:
    put(writer, ns, 3)

    async def main() -> tuple[list[Any], list[Any], list[Any]]:
        async with await psycopg.AsyncConnection.connect(database_url,
                                                         autocommit=True) as conn:
            cur = await conn.execute("SELECT max(notification_id) FROM ssot_events")
            row = await cur.fetchone()
            assert row is not None
            after = row[0] - 3
            wire = await Wire.open(conn, "t_read", _READ_WITH_HISTORY, 3)
            try:
                rows = await wire.read(after, after + 3, 100)
                limited = await wire.read(after, after + 3, 2)
                none = await wire.read(after + 3, after + 3, 100)
            finally:
                wire.detach()
            by_cursor = await read_range(conn, after, after + 3, 100, history=True)
        on_wire = log_events(rows, history=True)
        assert len(limited) == 2 and none == []
        return ([(e.position, e.recorded_at, e.topic, e.version, e.raw, e.history)
                 for e in on_wire],
                [(e.position, e.recorded_at, e.topic, e.version, e.raw, e.history)
                 for e in by_cursor], on_wire)

    wired, cursor, events = run(main())
    assert wired == cursor and len(wired) == 3
    assert [e.state["document"] for e in events] == [
        {"i": i, "s": "é", "round": 0} for i in range(3)]
    assert all(e.history is not None and e.history["namespace"] == ns for e in events)


@RUNNERS
def test_a_notify_ends_the_wait_and_its_channel_and_payload_are_reported(
        run: Runner, database_url: str) -> None:
    async def main() -> tuple[list[tuple[str, bytes]], float]:
        heard: list[tuple[str, bytes]] = []
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) \
                as conn, await psycopg.AsyncConnection.connect(database_url,
                                                               autocommit=True) as other:
            await conn.execute("LISTEN wire_test")
            wire = await Wire.open(conn, "t_one", "SELECT %s::bigint", 1,
                                   lambda channel, payload: heard.append((channel, payload)))
            try:
                loop = asyncio.get_running_loop()
                notify = loop.create_task(other.execute("NOTIFY wire_test, 'café'"))
                started = loop.time()
                await wire.notified(30.0)  # ends with the NOTIFY, not the timeout
                waited = loop.time() - started
                await notify
                assert await wire.read(7) == [(7,)]
            finally:
                wire.detach()
        return heard, waited

    heard, waited = run(main())
    assert heard == [("wire_test", "café".encode())]
    assert waited < 10.0


@RUNNERS
def test_a_notify_that_comes_behind_a_reads_answer_is_reported_with_it(
        run: Runner, database_url: str) -> None:
    """Another session's NOTIFY that reaches the socket behind a read's answer (after the
    server said it is ready again), in the same bytes, is reported when the read ends;
    otherwise the tail waited for its next poll, seconds later, for a commit already
    announced."""
    async def main() -> list[str]:
        heard: list[str] = []
        async with await psycopg.AsyncConnection.connect(database_url,
                                                         autocommit=True) as conn:
            await conn.execute("LISTEN wire_behind")
            wire = await Wire.open(conn, "t_behind", "SELECT %s FROM pg_sleep(%s / 1000.0)",
                                   2, lambda channel, _: heard.append(channel))
            try:
                reading = asyncio.get_running_loop().create_task(wire.read(3, 100))
                await asyncio.sleep(0)  # sent; its answer comes in 0.1 s
                # the loop held (nothing here awaits) until the answer is on the socket,
                # then until a NOTIFY sent meanwhile is there behind it: one callback
                # finds them together
                with socket.socket(fileno=os.dup(conn.pgconn.socket)) as peek, \
                        psycopg.connect(database_url, autocommit=True) as other:
                    _until(lambda: _peeked(peek).endswith(b"Z\x00\x00\x00\x05I"))
                    other.execute("NOTIFY wire_behind")
                    _until(lambda: b"wire_behind" in _peeked(peek))
                assert await reading == [(3,)]
                return list(heard)  # as the read ends, before any later callback
            finally:
                wire.detach()

    assert run(main()) == ["wire_behind"]


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def _peeked(sock: socket.socket) -> bytes:
    """What the (non-blocking) socket holds, left there."""
    try:
        return sock.recv(65536, socket.MSG_PEEK)
    except BlockingIOError:
        return b""


@RUNNERS
def test_a_wait_ends_with_its_timeout_or_an_interrupt_and_one_during_a_read_ends_the_next(
        run: Runner, database_url: str) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(database_url,
                                                         autocommit=True) as conn:
            wire = await Wire.open(conn, "t_sleep", "SELECT %s FROM pg_sleep(%s / 1000.0)", 2)
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(wire.notified(0.01), 30)  # the timeout
                loop.call_soon(wire.interrupt)
                await asyncio.wait_for(wire.notified(30.0), 10)  # the interrupt
                reading = loop.create_task(wire.read(5, 200))
                await asyncio.sleep(0.05)
                wire.interrupt()  # during the read: not its end
                assert not reading.done()
                assert await reading == [(5,)]
                await asyncio.wait_for(wire.notified(30.0), 10)  # at once
            finally:
                wire.detach()

    run(main())


@RUNNERS
def test_a_server_error_is_raised_and_the_connection_stays_usable(
        run: Runner, database_url: str) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(database_url,
                                                         autocommit=True) as conn:
            wire = await Wire.open(conn, "t_div", "SELECT 1 / %s", 1)
            try:
                with pytest.raises(psycopg.errors.DivisionByZero):
                    await wire.read(0)
                assert await wire.read(1) == [(1,)]
                with wire.detached():  # psycopg's turn
                    cur = await conn.execute("SELECT 2")
                    assert await cur.fetchone() == (2,)
                assert await wire.read(1) == [(1,)]
            finally:
                wire.detach()

    run(main())


@RUNNERS
def test_a_connection_killed_under_a_wait_fails_it(run: Runner, database_url: str) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) \
                as conn, await psycopg.AsyncConnection.connect(database_url,
                                                               autocommit=True) as admin:
            wire = await Wire.open(conn, "t_kill", "SELECT %s::bigint", 1)
            waiting = asyncio.get_running_loop().create_task(wire.notified(30.0))
            await asyncio.sleep(0.05)
            await admin.execute("SELECT pg_terminate_backend(%s)",
                                (conn.info.backend_pid,))
            with pytest.raises(psycopg.OperationalError):
                await asyncio.wait_for(waiting, 20)
            with pytest.raises(psycopg.OperationalError):  # and every step after it
                await wire.read(1)
            wire.detach()

    run(main())


@RUNNERS
def test_a_connection_that_ends_in_psycopgs_turn_fails_with_psycopgs_error(
        run: Runner, database_url: str) -> None:
    """The server ends the connection while psycopg runs a statement on it (the wire
    detached: a gathered read of the API's kept connection): the statement fails with
    psycopg's error, as it would without a wire, and the wire fails too; it does not try to
    watch the socket psycopg closed (uvloop answered that with EBADF, an OSError in place
    of psycopg's error: a 500 where a 503 was due, found by ``make chaos``)."""
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) \
                as conn, await psycopg.AsyncConnection.connect(database_url,
                                                               autocommit=True) as admin:
            wire = await Wire.open(conn, "t_turn", "SELECT %s::bigint", 1)
            pid = conn.info.backend_pid
            with pytest.raises(psycopg.OperationalError), wire.detached():
                sleeping = asyncio.get_running_loop().create_task(
                    conn.execute("SELECT pg_sleep(60)"))
                deadline = time.monotonic() + 20
                while (await (await admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
                        " AND query LIKE 'SELECT pg_sleep%%'", (pid,))).fetchone()
                       ) != (1,):
                    assert time.monotonic() < deadline, "the statement never ran"
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                await asyncio.wait_for(sleeping, 20)
            assert wire.failed
            with pytest.raises(psycopg.OperationalError):  # and every step after it
                await wire.read(1)
            wire.detach()

    run(main())


@RUNNERS
def test_a_connection_that_ended_while_detached_fails_the_next_run_at_once(
        run: Runner, database_url: str) -> None:
    """A connection that ended while its wire was detached (the tail's LISTENs; nothing
    watches the socket then) fails the next run at once, reset or not."""
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) \
                as conn, await psycopg.AsyncConnection.connect(database_url,
                                                               autocommit=True) as admin:
            wire = await Wire.open(conn, "t_ended", "SELECT %s::bigint", 1)
            wire.detach()
            assert await _attached_run(wire, 1) == [(1,)]
            await admin.execute("SELECT pg_terminate_backend(%s)",
                                (conn.info.backend_pid,))
            # the end is on the socket (no one reads it): select, not a sleep
            ready = await asyncio.to_thread(select.select, [conn.pgconn.socket], [], [], 20)
            assert ready[0]
            with contextlib.suppress(OSError):  # (already reset)
                # the end's signal, then a byte the server no longer reads: its reset
                os.write(conn.pgconn.socket, b"Q")
            with pytest.raises(psycopg.OperationalError):
                await asyncio.wait_for(_attached_run(wire, 2), 20)

    run(main())


@RUNNERS
def test_a_run_without_an_answer_gives_the_connection_up_after_its_timeout(
        run: Runner, database_url: str) -> None:
    """The safety net: an answer that does not come within ``answer_timeout`` fails the
    run as a lost connection (the tail then reconnects), and every step after it."""
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(database_url,
                                                         autocommit=True) as conn:
            wire = await Wire.open(conn, "t_slow", "SELECT %s FROM pg_sleep(%s)", 2)
            try:
                wire.answer_timeout = 0.2
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(psycopg.OperationalError, match="no answer within"):
                    await wire.read(1, 5)
                assert loop.time() - started < 4.0
                with pytest.raises(psycopg.OperationalError):
                    await wire.read(1, 0)
                assert conn.closed  # given up: psycopg sees it closed
            finally:
                wire.detach()

    run(main())


async def _attached_run(wire: Wire, value: int) -> list[tuple[Any, ...]]:
    wire.attach()
    try:
        return await wire.read(value)
    finally:
        wire.detach()


def test_the_tail_reconnects_after_its_connection_is_killed_and_misses_nothing(
        fresh_db: str, ns: str) -> None:
    # a database of its own: the tail's connection is found by its statement's name
    app = open_application(fresh_db, pool_size=1)
    writer = GroupCommitWriter(app, lambda _ns: Limits())
    writer.start()
    try:
        _reconnects(writer, fresh_db, ns)
    finally:
        writer.stop()
        app.close()


def _reconnects(writer: GroupCommitWriter, fresh_db: str, ns: str) -> None:

    async def main() -> list[int]:
        tail = LogTail(fresh_db, poll_interval=0.2)
        stop = asyncio.Event()
        running = asyncio.create_task(tail.run(stop))
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(30):
                while not tail.live:
                    await asyncio.sleep(0.01)
            start = tail.head
            await loop.run_in_executor(None, put, writer, ns, 3)
            async with asyncio.timeout(30):
                while tail.head < start + 3:
                    await tail.wait(stop, tail.head, 1.0)
            async with await psycopg.AsyncConnection.connect(fresh_db,
                                                             autocommit=True) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND query LIKE '%%ssot_log_tail_read%%'")
            await loop.run_in_executor(None, put, writer, ns, 3, 1)
            async with asyncio.timeout(30):
                while tail.head < start + 6:
                    await tail.wait(stop, tail.head, 1.0)
            async with await psycopg.AsyncConnection.connect(fresh_db,
                                                             autocommit=True) as conn:
                events = await tail.events_after(conn, start, 100)
            return [e.position for e in events]
        finally:
            stop.set()
            await running

    positions = asyncio.run(main())
    assert len(positions) == 6
    assert positions == sorted(set(positions))
