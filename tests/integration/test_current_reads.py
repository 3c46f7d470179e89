"""Reads of one entry's current state, gathered under load (api/current_reads.py), on the
real store: each read gets its own entry, reads that arrive together share one statement,
a read never joins a statement sent before it arrived, and a failure reaches every read
that waited for it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool

from nexus_ssot.api.current_reads import CurrentReads
from nexus_ssot.ledger.commands import Context, Delete, Put
from nexus_ssot.ledger.writer import GroupCommitWriter
from nexus_ssot.projections import current_state


def write(writer: GroupCommitWriter, command: Put | Delete) -> None:
    context = Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="reader-test",
                      correlation_id="c")
    writer.write_batch([(command, context, None)])[0].result()


class Connections:
    """``connect`` for ``CurrentReads``: one connection per read statement, counted, and
    the position each was asked to hold; with ``hold`` set, the next statement's read, once
    its statement has run, waits for it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened = 0
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()
        self.fail: Exception | None = None
        self.needs: list[int | None] = []

    @contextlib.asynccontextmanager
    async def connect(self, needs: int | None) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        self.opened += 1
        self.needs.append(needs)
        if self.fail is not None:
            raise self.fail
        hold, self.hold = self.hold, None
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            yield conn
        if hold is not None:
            self.holding.set()
            await hold.wait()


@dataclass
class Held:
    connections: Connections
    reads: CurrentReads
    release: asyncio.Event  # set: the first read ends
    first: asyncio.Task[Any]
    waiting: list[asyncio.Task[Any]]


async def behind_a_held_read(database_url: str, ns: str, first: tuple[str, int | None],
                             waiting: list[tuple[str, int | None]]) -> Held:
    """Reads on connections of their own: the read of ``first`` (key, position needed)
    started, its statement run and held; the reads of ``waiting`` arrived meanwhile."""
    connections = Connections(database_url)
    reads = CurrentReads(connections.connect)
    release = connections.hold = asyncio.Event()
    started = asyncio.create_task(reads.current(ns, *first))
    await connections.holding.wait()
    queued = [asyncio.create_task(reads.current(ns, k, needs)) for k, needs in waiting]
    await asyncio.sleep(0)
    return Held(connections, reads, release, started, queued)


def document(entry: Any) -> Any:
    assert entry is not None
    return orjson.loads(entry.body)["document"]


def test_reads_arriving_together_share_one_statement_and_each_gets_its_own_entry(
        writer: GroupCommitWriter, database_url: str, ns: str) -> None:
    for i in range(20):
        write(writer, Put(ns, f"k{i}", document={"i": i}))
    write(writer, Delete(ns, "k7"))

    async def run() -> tuple[list[Any], int]:
        connections = Connections(database_url)
        reads = CurrentReads(connections.connect)
        keys = [f"k{i}" for i in range(20)] + ["k3", "missing", "k3"]
        found = await asyncio.gather(*(reads.current(ns, k) for k in keys))
        return found, connections.opened

    count, total = (REGISTRY.get_sample_value(f"ssot_debug_entry_reads_gathered_{s}") or 0
                    for s in ("count", "sum"))
    alone = REGISTRY.get_sample_value("ssot_debug_entry_reads_alone_total") or 0
    found, opened = asyncio.run(run())
    assert [document(e) for e in found[:20] if not e.deleted] == [
        {"i": i} for i in range(20) if i != 7]
    assert found[7].deleted and found[7].version == 2
    assert document(found[20]) == document(found[22]) == {"i": 3}
    assert found[21] is None
    # the first read went alone; the 22 that arrived while it ran, in one statement
    assert opened == 2
    # ... of 20 rows: k1 to k19 and "missing", k3's three reads sharing one
    # (the first counted as alone; the rest as one statement of 21 rows)
    assert REGISTRY.get_sample_value("ssot_debug_entry_reads_alone_total") == alone + 1
    assert REGISTRY.get_sample_value("ssot_debug_entry_reads_gathered_count") == count + 1
    assert REGISTRY.get_sample_value("ssot_debug_entry_reads_gathered_sum") == total + 20


def test_a_read_never_joins_a_statement_sent_before_it_arrived(
        writer: GroupCommitWriter, database_url: str, ns: str) -> None:
    write(writer, Put(ns, "k", document={"v": 1}))

    async def run() -> tuple[Any, Any, Any]:
        connections = Connections(database_url)
        reads = CurrentReads(connections.connect)
        release = connections.hold = asyncio.Event()
        first = asyncio.create_task(reads.current(ns, "k"))
        await connections.holding.wait()  # the first read's statement has run
        await asyncio.to_thread(write, writer, Put(ns, "k", document={"v": 2}))
        later = asyncio.create_task(reads.current(ns, "k"))  # arrives after the write
        also = asyncio.create_task(reads.current(ns, "k"))
        await asyncio.sleep(0)
        release.set()
        return await first, await later, await also

    first, later, also = asyncio.run(run())
    assert document(first) == {"v": 1}  # read before the write, answered after it
    assert document(later) == document(also) == {"v": 2}
    assert later.version == 2


def test_reads_that_need_a_position_ask_for_the_furthest_one_of_them_needs(
        writer: GroupCommitWriter, database_url: str, ns: str) -> None:
    """(On a read replica, the connection waits until its log holds that position.)"""
    write(writer, Put(ns, "k", document={"v": 1}))

    async def run() -> list[Any]:
        held = await behind_a_held_read(database_url, ns, ("k", 5),
                                        [("k", 3), ("k", 9), ("other", None)])
        held.release.set()
        found = await asyncio.gather(held.first, *held.waiting)
        alone = await held.reads.current(ns, "k")  # nothing in flight: none needed
        assert held.connections.needs == [5, 9, None]
        return [*found, alone]

    found = asyncio.run(run())
    assert [document(e) if e is not None else None for e in found] == [
        {"v": 1}, {"v": 1}, {"v": 1}, None, {"v": 1}]


def test_a_failed_statement_is_the_failure_of_every_read_that_waited_for_it(
        writer: GroupCommitWriter, database_url: str, ns: str) -> None:
    write(writer, Put(ns, "k", document={"v": 1}))

    async def run() -> list[Any]:
        held = await behind_a_held_read(database_url, ns, ("k", None),
                                        [("k", None), ("other", None)])
        held.connections.fail = psycopg.OperationalError("the store went away")
        held.release.set()
        outcomes = await asyncio.gather(held.first, *held.waiting, return_exceptions=True)
        held.connections.fail = None  # the store is back: the next read reads again
        return [*outcomes, await held.reads.current(ns, "k")]

    first, *failed, again = asyncio.run(run())
    assert document(first) == {"v": 1}
    assert [type(e) for e in failed] == [psycopg.OperationalError] * 2
    assert document(again) == {"v": 1}


def test_a_read_given_up_leaves_the_others_waiting_with_it_their_answer(
        writer: GroupCommitWriter, database_url: str, ns: str) -> None:
    write(writer, Put(ns, "k", document={"v": 1}))

    async def run() -> Any:
        connections = Connections(database_url)
        reads = CurrentReads(connections.connect)
        release = connections.hold = asyncio.Event()
        first = asyncio.create_task(reads.current(ns, "k"))
        await connections.holding.wait()
        given_up = asyncio.create_task(reads.current(ns, "k"))
        kept = asyncio.create_task(reads.current(ns, "k"))  # the same entry: one row
        await asyncio.sleep(0)
        given_up.cancel()
        release.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await given_up
        return await kept

    assert document(asyncio.run(run())) == {"v": 1}


def test_reads_keep_one_connection_of_the_pool_and_a_broken_one_is_replaced(
        writer: GroupCommitWriter, database_url: str, ns: str) -> None:
    write(writer, Put(ns, "k", document={"v": 1}))

    async def run() -> tuple[list[Any], Any, Any, dict[str, int], dict[str, int]]:
        unused = Connections(database_url)
        async with AsyncConnectionPool(database_url, min_size=1, max_size=2,
                                       kwargs={"autocommit": True}) as pool:
            reads = CurrentReads(unused.connect, pool)
            alone = [await reads.current(ns, "k") for _ in range(20)]
            together = await asyncio.gather(*(reads.current(ns, k) for k in ("k", "x", "k")))
            stats = pool.get_stats()
            # the kept connection's server process ends between two reads (a failover, a
            # restart of it): its wire sees the end as it comes, and the next read goes
            # on another connection instead of failing
            kept = reads._kept
            assert kept is not None
            async with pool.connection() as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)",
                                    (kept.conn.info.backend_pid,))
            deadline = asyncio.get_running_loop().time() + 30
            while not kept.wire.failed:
                assert asyncio.get_running_loop().time() < deadline, "the end went unseen"
                await asyncio.sleep(0.01)
            again = await reads.current(ns, "k")
            assert reads._kept is not kept
            await reads.close()
            after = pool.get_stats()
            assert unused.opened == 0  # every statement went on the pool's connection
            return [*alone, *together], again, together[1], stats, after

    found, again, missing, stats, after = asyncio.run(run())
    assert all(document(e) == {"v": 1} for e in found if e is not None)
    assert missing is None
    assert document(again) == {"v": 1}
    # 23 reads, 21 statements: one checkout from the pool
    assert stats["requests_num"] == 1
    # the broken connection went back to the pool, which found it bad, and one more was
    # taken
    assert after["requests_num"] == 1 + 1 + 1  # (+1: the test's own, to end the backend)
    assert after["returns_bad"] == 1


def test_a_read_alone_on_the_wire_is_what_the_cursor_reads_also_on_a_connection_kept_again(
        writer: GroupCommitWriter, database_url: str, ns: str) -> None:
    """A read that goes alone runs on the kept connection's wire (its statement prepared
    there once, its row taken as the server's text): the same entry as the cursor's read,
    for a document beyond ASCII, a deleted entry and one never written; reads gathered on
    the same connection (psycopg's turn) between them; and the connection handed back and
    kept again (a pool of one) finds its statement still prepared."""
    write(writer, Put(ns, "cle/u-1", document={"é": "ß €", "n": [1, 2.5, None]}))
    write(writer, Put(ns, "gone", document={"v": 1}))
    write(writer, Delete(ns, "gone"))
    keys = ("cle/u-1", "gone", "never")

    async def run() -> tuple[list[Any], list[Any], list[Any]]:
        async with AsyncConnectionPool(database_url, min_size=1, max_size=1,
                                       kwargs={"autocommit": True}) as pool:
            reads = CurrentReads(Connections(database_url).connect, pool)
            wired, gathered = [], []
            for _ in range(2):
                wired += [await reads.current(ns, k) for k in keys]
                # the first alone on the wire, the other two gathered behind it
                gathered += await asyncio.gather(*(reads.current(ns, k) for k in keys))
                await reads.close()  # back to the pool; the next read keeps it again
            async with pool.connection() as conn:
                by_cursor = [await current_state.current_entry(conn, ns, k) for k in keys]
            return wired, gathered, by_cursor

    wired, gathered, by_cursor = asyncio.run(run())
    assert wired == by_cursor * 2
    assert gathered == by_cursor * 2
    assert document(wired[0]) == {"é": "ß €", "n": [1, 2.5, None]}
    assert wired[1] is not None and wired[1].deleted and wired[2] is None


def test_a_read_the_wires_statement_refuses_gives_its_connection_up(
        writer: GroupCommitWriter, database_url: str, ns: str) -> None:
    """An error of the kept connection's prepared statement would come again on that
    connection: the read fails, the connection is closed rather than handed back, and the
    next read prepares the statement on another."""
    write(writer, Put(ns, "k", document={"v": 1}))

    async def run() -> tuple[Any, Any, dict[str, int]]:
        async with AsyncConnectionPool(database_url, min_size=1, max_size=1,
                                       kwargs={"autocommit": True}) as pool:
            reads = CurrentReads(Connections(database_url).connect, pool)
            first = await reads.current(ns, "k")
            kept = reads._kept
            assert kept is not None
            with kept.wire.detached():  # psycopg's turn: the statement goes away
                await kept.conn.execute("DEALLOCATE ssot_current_entry")
            with pytest.raises(psycopg.errors.InvalidSqlStatementName):
                await reads.current(ns, "k")
            assert kept.conn.closed and reads._kept is None
            again = await reads.current(ns, "k")
            assert reads._kept is not None and reads._kept.conn is not kept.conn
            await reads.close()
            return first, again, pool.get_stats()

    first, again, stats = asyncio.run(run())
    assert document(first) == document(again) == {"v": 1}
    assert stats["returns_bad"] == 1
