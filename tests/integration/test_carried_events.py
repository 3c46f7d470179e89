"""A commit's NOTIFY carries its events (migration 0024) and the tail takes them from it
(ledger/log_tail.py, ``carried_events``): every kind of event comes back equal, value and
type, to the same event read from the log; a commit too large to carry, or one after a gap
in the positions, is read as before."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from nexus_ssot.ledger.commands import (
    Context,
    Delete,
    Expectation,
    JsonPatch,
    MergePatch,
    Put,
)
from nexus_ssot.ledger.log_tail import CHANNEL, LogEvent, LogTail, carried_events, read_range
from nexus_ssot.ledger.namespace_settings import SETTINGS_NAMESPACE, configure
from nexus_ssot.ledger.writer import GroupCommitWriter
from tests.integration.conftest import wait_until
from tests.integration.test_log_tail import Loop, append, log_positions


@pytest.fixture()
def database_url(fresh_db: str) -> str:
    """A database of this test's own (one test takes a position out of the sequence)."""
    return fresh_db


def context(**extra: Any) -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="carrier",
                   correlation_id="c-1", **extra)


def commit(writer: GroupCommitWriter, *commands: Any, **extra: Any) -> None:
    """``commands`` in one transaction (one NOTIFY)."""
    for future in writer.write_batch([(command, context(**extra), None)
                                      for command in commands]):
        future.result(30)


def read_log(database_url: str) -> list[LogEvent]:
    async def read() -> list[LogEvent]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            return await read_range(conn, 0, None, 1000, history=True)
    return asyncio.run(read())


def assert_same(carried: LogEvent, read: LogEvent) -> None:
    """Equal, and of the same types, as a follower (the broadcaster's CloudEvent, a view,
    the digester's leaf) could tell."""
    assert (carried.position, carried.topic, carried.version, carried.raw) == \
        (read.position, read.topic, read.version, read.raw)
    assert carried.recorded_at == read.recorded_at
    assert carried.recorded_at.tzinfo == read.recorded_at.tzinfo
    assert carried.recorded_at.isoformat() == read.recorded_at.isoformat()
    assert carried.state == read.state
    if read.history is None:
        assert carried.history is None
        return
    assert carried.history is not None
    assert list(carried.history) == list(read.history)
    assert carried.history == read.history
    assert {k: type(v) for k, v in carried.history.items()} == \
        {k: type(v) for k, v in read.history.items()}


def test_every_kind_of_event_comes_back_from_its_notify_as_the_log_reads_it(
        database_url: str, writer: GroupCommitWriter) -> None:
    ns = "carried"
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        commits = 0
        commit(writer, Put(ns, "a", document={"x": "café ☕", "n": 1.5, "e": 1e-7,
                                               "big": 2**63 - 1, "nested": [{"q": None}]}))
        commit(writer, configure(ns, {}))  # a settings event, in the system namespace
        commit(writer, Put(ns, "a", document={"x": 2}, expected=Expectation(if_match=1)),
               auth={"method": "token", "token_id": "t-1"},
               trace=("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k=v"))
        # a stale If-Match on other members: merged, with its resolution
        commit(writer, MergePatch(ns, "a", patch={"y": "\u0001\t\n \"quoted\" \\ text"},
                                  expected=Expectation(if_match=1)), reason="why not")
        commit(writer, JsonPatch(ns, "a", operations=[
            {"op": "add", "path": "/z", "value": [1, {"q": None}]}]),
               causation_id="cause-1", idempotency_key=None)
        commit(writer, Put(ns, "b", document={}), Put(ns, "c/d", document={"list": [1, 2]}),
               Delete(ns, "a"))  # three events in one commit
        commits = 6
        commit(writer, Put(ns, "large", document={"text": "x" * 10_000}))  # too large
        notes = [n.payload for n in listener.notifies(timeout=30, stop_after=commits + 1)]
        zone = listener.info.timezone

    assert len(notes) == commits + 1
    assert notes[-1] == ""  # the large commit's NOTIFY carries nothing: it is read
    assert carried_events(notes[-1], zone) is None
    carried = [carried_events(note, zone) for note in notes[:-1]]
    assert all(events is not None for events in carried)
    events = [event for batch in carried if batch for event in batch]
    read = read_log(database_url)
    assert [e.position for e in events] == [e.position for e in read[:-1]]
    assert [len(batch or ()) for batch in carried] == [1, 1, 1, 1, 1, 3]
    for got, expected in zip(events, read, strict=False):
        assert_same(got, expected)
    # the kinds above are all there
    rows = [e.history for e in events if e.history is not None]
    assert len(rows) == len(events)
    assert any(h["namespace"] == SETTINGS_NAMESPACE for h in rows)
    assert {h["event_type"] for h in rows} >= {"entry.created", "entry.updated",
                                                "entry.deleted"}
    assert any(h["resolution"] for h in rows) and any(h["auth"] for h in rows)
    assert any(h["traceparent"] for h in rows) and any(h["reason"] for h in rows)


def test_the_tail_takes_carried_commits_and_reads_those_that_are_not(
        database_url: str, writer: GroupCommitWriter) -> None:
    append(writer, "before", 2, per_commit=1)
    tail = LogTail(database_url, poll_interval=30.0)
    steps: list[tuple[bool, list[int]]] = []  # (carried, positions) per step
    taken = tail._append
    carried_before = [0]

    def recorded(events: Any) -> None:
        # carried: the tail counted a carried commit since the step before
        steps.append((tail.carried > carried_before[0], [e.position for e in events]))
        carried_before[0] = tail.carried
        taken(events)

    tail._append = recorded  # type: ignore[method-assign]
    with Loop() as loop:
        loop.submit(tail.run(loop.stop))
        wait_until(lambda: tail.live, "the tail follows")
        # A tail reads once as it starts, and that read takes whatever was committed
        # before it ran, NOTIFY or not: the commits below come once it has taken one.
        append(writer, "first", 1, per_commit=1)
        first = log_positions(database_url)[-1]
        wait_until(lambda: tail.head == first, "the tail takes the first commit")
        steps.clear()
        append(writer, "small", 5, per_commit=1)
        small = log_positions(database_url)[-1]
        wait_until(lambda: tail.head == small, "the tail takes the small commits")
        assert steps and all(carried for carried, _ in steps)
        assert [p for _, positions in steps for p in positions] == \
            log_positions(database_url)[-5:]
        # a commit too large to carry is read
        writes = threading.Thread(target=commit, args=(
            writer, Put("large", "k", document={"text": "y" * 10_000})))
        writes.start()
        writes.join(30)
        large = log_positions(database_url)[-1]
        wait_until(lambda: tail.head == large, "the tail reads the large commit")
        assert steps[-1] == (False, [large])
        # a position taken out of the sequence (as a rolled-back batch leaves one): the
        # commit after the gap cannot tell it is whole, and is read
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("SELECT nextval('ssot_events_notification_id_seq')")
        append(writer, "after-gap", 1, per_commit=1)
        after = log_positions(database_url)[-1]
        assert after == large + 2
        wait_until(lambda: tail.head == after, "the tail reads past the gap")
        assert steps[-1] == (False, [after])
        # and the next commit is carried again
        append(writer, "again", 1, per_commit=1)
        again = log_positions(database_url)[-1]
        wait_until(lambda: tail.head == again, "the tail takes the next commit")
        assert steps[-1] == (True, [again])
        held = {e.position: e for e in tail._events}
    for event in read_log(database_url):
        if event.position in held:
            assert_same(held[event.position], event)
