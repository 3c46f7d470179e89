"""The log's shared tail (ledger/log_tail.py): every follower of a process gets every event
once and in order — following the tail, catching up from far behind it, restarted, or after
a NOTIFY that never came — decoded once for all of them; and the followers' roles move
between two `ssot serve` processes without an event skipped or doubled on NATS, the views
equal to the log."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from nexus_ssot.ledger.commands import Context, Put
from nexus_ssot.ledger.log_tail import _READ_WITH_HISTORY, LogEvent, LogTail
from nexus_ssot.ledger.writer import GroupCommitWriter
from nexus_ssot.projections.kv_mirror import KvMirror
from nexus_ssot.projections.namespace_stats import stats
from tests.integration.conftest import KV_BUCKET_PREFIX, free_port, start_serve, wait_until
from tests.integration.test_broadcaster import (
    Traffic,
    assert_exactly_the_log,
    head,
    read_stream,
    wait_until_published,
)
from tests.integration.test_projections import expected_stats


@pytest.fixture()
def database_url(fresh_db: str) -> str:
    """Each test here has a database of its own (one writes outside the write path);
    the ledger's ``writer`` writes to it."""
    return fresh_db


def append(writer: GroupCommitWriter, ns: str, count: int, per_commit: int) -> None:
    """``count`` writes, ``per_commit`` to a transaction (one NOTIFY each)."""
    for start in range(0, count, per_commit):
        now = datetime.now(UTC)
        for future in writer.write_batch([
                (Put(ns, f"k{i % 17}", document={"i": i}),
                 Context(event_id=uuid.uuid4(), timestamp=now, actor="tail-test",
                         correlation_id="c"), None)
                for i in range(start, min(count, start + per_commit))]):
            future.result(30)


def log_positions(database_url: str, after: int = 0) -> list[int]:
    with psycopg.connect(database_url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT notification_id FROM ssot_events WHERE notification_id > %s"
            " ORDER BY notification_id", (after,))]


class Loop:
    """An event loop on a thread of its own, as ``ssot serve`` runs its followers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def __enter__(self) -> Loop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        pending = self.submit(_drained())
        pending.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


async def _drained() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    await asyncio.wait(tasks, timeout=20) if tasks else None


async def follow(tail: LogTail, database_url: str, after: int, until: Callable[[], int],
                 stop: asyncio.Event) -> list[LogEvent]:
    """A follower as the real ones follow: events after its position, from the tail (or
    read itself while behind it), waiting on the tail when there is nothing new."""
    got: list[LogEvent] = []
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while after < until() and not stop.is_set():
            events = await tail.events_after(conn, after, 50)
            if not events:
                await tail.wait(stop, after, 0.5)
                continue
            got.extend(events)
            after = events[-1].position
    return got


def test_every_follower_gets_every_event_once_in_order_decoded_once(
        database_url: str, writer: GroupCommitWriter) -> None:
    append(writer, "a", 300, per_commit=7)  # written before the tail starts
    tail = LogTail(database_url, capacity=64, poll_interval=5.0)
    end = [2**62]  # known once the writes are done

    with Loop() as loop:
        loop.submit(tail.run(loop.stop))
        wait_until(lambda: tail.live, "the tail follows")
        joined_at = tail.start
        assert joined_at is not None and joined_at > 0
        near = loop.submit(follow(tail, database_url, joined_at, lambda: end[0], loop.stop))
        far = loop.submit(follow(tail, database_url, 0, lambda: end[0], loop.stop))
        middle = [0]
        restarted = loop.submit(follow(tail, database_url, 0,
                                       lambda: middle[0] or end[0], loop.stop))
        writes = threading.Thread(target=append, args=(writer, "b", 200, 3))
        writes.start()
        wait_until(lambda: tail.head > joined_at + 100, "half the writes", timeout=60)
        middle[0] = tail.head  # the restarted follower stops there, and starts again
        before = restarted.result(60)
        after = loop.submit(follow(tail, database_url, before[-1].position,
                                   lambda: end[0], loop.stop))
        writes.join(60)
        end[0] = log_positions(database_url)[-1]
        got = {"near": near.result(60), "far": far.result(60),
               "restarted": before + after.result(60)}

    every = log_positions(database_url)
    assert [e.position for e in got["near"]] == [p for p in every if p > joined_at]
    assert [e.position for e in got["far"]] == every
    assert [e.position for e in got["restarted"]] == every
    # the events the tail still holds were read and decoded once, for every follower
    held = tail.start
    assert held is not None and held < end[0]
    shared = [p for p in every if p > held]
    by_position = {name: {e.position: e for e in events} for name, events in got.items()}
    for p in shared:
        assert by_position["near"][p] is by_position["far"][p] is by_position["restarted"][p]
    assert by_position["far"][every[0]] is not by_position["restarted"][every[0]]  # read alone


def test_an_event_whose_notify_never_came_arrives_by_the_slow_poll(
        database_url: str, writer: GroupCommitWriter) -> None:
    append(writer, "a", 3, per_commit=1)
    tail = LogTail(database_url, poll_interval=0.5)
    with Loop() as loop:
        loop.submit(tail.run(loop.stop))
        wait_until(lambda: tail.live, "the tail follows")
        start = tail.head
        silent = [0]
        following = loop.submit(follow(tail, database_url, start,
                                       lambda: silent[0] or 2**62, loop.stop))
        with psycopg.connect(database_url, autocommit=True) as conn:
            # an event committed without its NOTIFY (as if the notification were lost)
            row = conn.execute(
                "INSERT INTO ssot_events (originator_id, originator_version, topic, state)"
                " SELECT gen_random_uuid(), 1, topic, state FROM ssot_events"
                " ORDER BY notification_id DESC LIMIT 1 RETURNING notification_id"
            ).fetchone()
        assert row is not None
        silent[0] = row[0]
        got = following.result(30)
    assert [e.position for e in got] == [silent[0]]


def test_commits_after_a_read_gather_and_one_after_a_quiet_moment_is_read_at_once(
        database_url: str, writer: GroupCommitWriter) -> None:
    """``gather``: after a read that found events, the commits of the next ``gather``
    seconds are left in the socket and read together; a commit after the tail has waited
    longer than that is read as it comes. (Five commits take milliseconds: the
    second only keeps a busy machine from spreading them past the window.)"""
    gather = 1.0
    append(writer, "before", 1, per_commit=1)
    tail = LogTail(database_url, poll_interval=30.0, gather=gather)
    reads: list[tuple[float, list[int]]] = []
    taken = tail._append

    def recorded(events: Any) -> None:
        reads.append((time.monotonic(), [e.position for e in events]))
        taken(events)

    tail._append = recorded  # type: ignore[method-assign]
    with Loop() as loop:
        loop.submit(tail.run(loop.stop))
        wait_until(lambda: tail.live, "the tail follows")
        append(writer, "first", 1, per_commit=1)  # (a namespace each: no write repeats one)
        first = log_positions(database_url)[-1]
        wait_until(lambda: tail.head == first, "the tail reads the first commit")
        append(writer, "five", 5, per_commit=1)  # five commits, five NOTIFYs, while it gathers
        five = log_positions(database_url, first)
        wait_until(lambda: tail.head == five[-1], "the tail reads the five", timeout=30)
        assert [positions for _, positions in reads] == [[first], five]
        assert reads[1][0] - reads[0][0] >= gather
        # once the window is over and the tail waits, a commit is read at once
        wait_until(lambda: time.monotonic() > reads[1][0] + gather, "the window to pass",
                   timeout=30)
        append(writer, "last", 1, per_commit=1)
        committed_at = time.monotonic()
        last = log_positions(database_url)[-1]
        wait_until(lambda: tail.head == last, "the tail reads the last")
        assert reads[2][1] == [last]
        assert reads[2][0] - committed_at < gather / 2


def serve_env(database_url: str, nats_url: str, stream: tuple[str, str], data_dir: Path,
              port: int) -> dict[str, str]:
    return {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_NATS_URL": nats_url,
            "SSOT_NATS_STREAM": stream[0], "SSOT_NATS_SUBJECT_PREFIX": stream[1],
            "SSOT_DATA_DIR": str(data_dir), "SSOT_HTTP_PORT": str(port),
            "SSOT_DIGESTS": "false"}


def views_at(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute(
            "SELECT application_name, notification_id FROM projection_tracking").fetchall())


def test_the_followers_roles_move_to_a_standby_serve_without_a_skip_or_a_double(
        database_url: str, nats_url: str, stream: tuple[str, str],
        writer: GroupCommitWriter, tmp_path: Path, ns: str) -> None:
    ports = free_port(), free_port()
    first, _ = start_serve([], serve_env(database_url, nats_url, stream, tmp_path / "a",
                                         ports[0]), ports[0], new_session=True)
    second = None
    try:
        append(writer, ns, 5, per_commit=1)
        wait_until_published(nats_url, stream[0], head(database_url)[0], timeout=60)
        second, _ = start_serve([], serve_env(database_url, nats_url, stream,
                                              tmp_path / "b", ports[1]), ports[1],
                                new_session=True)
        with Traffic(writer, ns, threads=2) as traffic:
            wait_until(lambda: head(database_url)[0] > 60, "writes before the kill", 60)
            os.killpg(first.pid, signal.SIGKILL)  # the leader of every role, mid-stream
            first.wait(10)
            wait_until(lambda: head(database_url)[0] > 160, "writes after the kill", 60)
        assert traffic.failures == []
        end, positions = head(database_url)
        wait_until_published(nats_url, stream[0], end, timeout=60)  # by the standby
        log_end = log_positions(database_url)[-1]
        wait_until(lambda: views_at(database_url) == {
            "namespace_stats": log_end, "schema_quality": log_end, "entry_search": log_end,
            "nats_kv_mirror": log_end}, "the views", 60)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
    assert_exactly_the_log(asyncio.run(read_stream(nats_url, *stream)), positions)
    with psycopg.connect(database_url) as db:
        expected = expected_stats(db, ns)

    async def views() -> tuple[dict[str, Any] | None, dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            mirror = KvMirror(nats_url, KV_BUCKET_PREFIX)
            try:
                return await stats(conn, ns), await mirror.reconcile(
                    conn, namespaces=[ns], dry_run=True)
            finally:
                await mirror.close()

    folded, mirrored = asyncio.run(views())
    assert folded is not None
    assert {k: folded[k] for k in expected} == expected
    assert (mirrored["missing"], mirrored["stale"], mirrored["extra"]) == (0, 0, 0)


def test_a_range_is_read_with_its_history_by_index_whatever_the_statistics_say(
        writer: GroupCommitWriter, database_url: str, ns: str) -> None:
    """The plan PostgreSQL makes for a range read with the range's own bounds (what a
    connection's first executions of the prepared read get) on statistics taken before a
    burst: each event's history row by the position index, never a hash of the whole of
    entry_history (what the read became: 200-700 ms a read once the log had grown)."""
    append(writer, ns, 200, per_commit=50)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE ssot_events")
        conn.execute("ANALYZE entry_history")
    append(writer, ns, 6000, per_commit=500)  # the burst the statistics do not know
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_custom_plan")
        [(plan,)] = conn.execute(
            "EXPLAIN (FORMAT JSON) " + _READ_WITH_HISTORY, (0, 2**62, 512)).fetchall()
    nodes = list(plan_nodes(plan[0]["Plan"]))
    assert not [n for n in nodes if "Hash" in n["Node Type"] or "Merge" in n["Node Type"]]
    history_scans = [n for n in nodes if n.get("Relation Name") == "entry_history"]
    assert history_scans and all(
        n["Node Type"] in ("Index Scan", "Index Only Scan") for n in history_scans)


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)
