"""The log tail's memory: a follower within it gets the events after its position from
there, one behind it reads only up to where it begins, and the tail keeps its last
``capacity`` events, without a hole."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus_ssot.ledger.cloudevents import FIELDS
from nexus_ssot.ledger.log_tail import LogEvent, LogTail, carried_events

AT = datetime(2026, 12, 3, tzinfo=UTC)


def event(position: int) -> LogEvent:
    return LogEvent(position, AT, "nexus_ssot.ledger.domain:EntryUpdated", 1,
                    orjson.dumps({"namespace": "n", "key": f"k{position}", "document": {},
                                  "actor": "a", "hash": None}))


class Reads:
    """A connection that answers the tail's range read with the positions asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int, int]] = []

    async def execute(self, _query: str, params: tuple[int, int, int], **_: Any) -> Reads:
        self.asked.append(params)
        self._rows = [(p, AT, "t", 1, b"{}", *([None] * 15))
                      for p in range(params[0] + 1, min(params[1], params[0] + params[2]) + 1)]
        return self

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


def tail_holding(positions: list[int], capacity: int) -> LogTail:
    tail = LogTail("postgresql://unused", capacity=capacity)
    tail.start = tail.head = positions[0] - 1
    tail.live = True
    for p in positions:
        tail._append([event(p)])
    return tail


@given(st.integers(1, 40), st.integers(1, 30), st.data())
def test_a_follower_within_the_tail_takes_its_events_from_it(
        count: int, capacity: int, data: st.DataObject) -> None:
    positions = list(range(10, 10 + count * 2, 2))  # ids have gaps
    tail = tail_holding(positions, capacity)
    held = positions[-capacity:]
    assert tail.start == (positions[-capacity - 1] if count > capacity else 9)
    assert tail.head == positions[-1]
    after = data.draw(st.integers(tail.start, tail.head))
    limit = data.draw(st.integers(1, 50))
    reads = Reads()
    got = asyncio.run(tail.events_after(reads, after, limit))  # type: ignore[arg-type]
    assert [e.position for e in got] == [p for p in held if p > after][:limit]
    assert reads.asked == []  # nothing read from the database


def test_a_follower_behind_the_tail_reads_up_to_where_it_begins() -> None:
    tail = tail_holding([101, 102, 103], capacity=10)
    reads = Reads()
    got = asyncio.run(tail.events_after(reads, 40, 1000))  # type: ignore[arg-type]
    assert reads.asked == [(40, 100, 1000)]
    assert [e.position for e in got] == list(range(41, 101))


def test_a_tail_that_is_not_following_leaves_the_follower_to_read_for_itself() -> None:
    tail = tail_holding([5, 6], capacity=10)
    tail.live = False
    reads = Reads()
    asyncio.run(tail.events_after(reads, 6, 10))  # type: ignore[arg-type]
    assert reads.asked == [(6, 2**62, 10)]


def test_an_event_decodes_its_state_once() -> None:
    e = event(7)
    assert e.state is e.state
    assert (e.namespace, e.key, e.document, e.actor, e.event_type) == (
        "n", "k7", {}, "a", "entry.updated")


def test_a_waiting_follower_runs_in_the_loops_next_turn_after_a_read() -> None:
    """The broadcaster's publish then goes before what else the same read woke (the views'
    work), not after it."""
    async def run() -> None:
        tail = tail_holding([1], capacity=10)
        stop = asyncio.Event()
        woken: list[int] = []

        async def follower() -> None:
            await tail.wait(stop, 1, 30.0)
            woken.append(tail.head)

        task = asyncio.ensure_future(follower())
        await asyncio.sleep(0)  # it waits
        tail._append([event(2)])
        await asyncio.sleep(0)  # one turn of the loop
        assert woken == [2]
        await task

    asyncio.run(run())


def test_followers_are_woken_in_the_order_they_began_to_wait() -> None:
    """The first to wait runs first in the turn after a read (the broadcaster, which
    begins its wait before the views: its publish does not wait for their folds); one
    whose wait ended meanwhile is left out."""
    async def run() -> None:
        tail = tail_holding([1], capacity=10)
        stop = asyncio.Event()
        woken: list[str] = []

        async def follower(name: str, timeout: float) -> None:
            await tail.wait(stop, 1, timeout)
            woken.append(name)

        tasks = [asyncio.ensure_future(follower(name, timeout))
                 for name, timeout in (("first", 30.0), ("gone", 0.0), ("second", 30.0),
                                       ("third", 30.0))]
        while woken != ["gone"]:  # its timeout ends its wait
            await asyncio.sleep(0)
        assert len(tail._waiters) == 3
        tail._append([event(2)])
        await asyncio.gather(*tasks)
        assert woken == ["gone", "first", "second", "third"]
        assert tail._waiters == {}

    asyncio.run(run())


def test_a_wait_ends_with_stop_or_its_timeout_and_leaves_no_waiter_behind() -> None:
    async def run() -> None:
        tail = tail_holding([1], capacity=10)
        stop = asyncio.Event()
        await tail.wait(stop, 1, 0.01)  # nothing came: the timeout
        assert tail._waiters == {}
        waiting = asyncio.ensure_future(tail.wait(stop, 1, 30.0))
        await asyncio.sleep(0)
        assert not waiting.done()
        stop.set()
        await asyncio.wait_for(waiting, 5.0)
        assert tail._waiters == {}
        await tail.wait(stop, 1, 30.0)  # stopped: returns at once

    asyncio.run(run())


class RangeEnds:
    """A connection that answers ``range_after``'s read: the end, first commit time and size
    of the range of positions asked for (every position taken)."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int, int]] = []

    async def execute(self, _query: str, params: tuple[int, int, int], **_: Any) -> RangeEnds:
        self.asked.append(params)
        after, until, limit = params
        positions = range(after + 1, min(until, after + limit) + 1)
        self._row = (positions[-1], AT, len(positions)) if positions else (None, None, 0)
        return self

    async def fetchone(self) -> tuple[Any, ...]:
        return self._row


@given(st.integers(1, 40), st.integers(1, 30), st.data())
def test_a_range_within_the_tail_is_the_one_its_events_make_and_reads_nothing(
        count: int, capacity: int, data: st.DataObject) -> None:
    """A view that folds in SQL is told where its next range ends, when its first event was
    committed and how many it holds: within the tail, what ``events_after`` would hand it."""
    positions = list(range(10, 10 + count * 2, 2))  # ids have gaps
    tail = tail_holding(positions, capacity)
    assert tail.start is not None
    after = data.draw(st.integers(tail.start, tail.head))
    limit = data.draw(st.integers(1, 50))
    reads = RangeEnds()
    found = asyncio.run(tail.range_after(reads, after, limit))  # type: ignore[arg-type]
    events = asyncio.run(tail.events_after(reads, after, limit))  # type: ignore[arg-type]
    assert found == ((events[-1].position, events[0].recorded_at, len(events)) if events
                     else None)
    assert reads.asked == []


def test_a_range_behind_the_tail_is_read_from_the_positions_up_to_where_it_begins() -> None:
    tail = tail_holding([101, 102, 103], capacity=10)
    reads = RangeEnds()
    assert asyncio.run(tail.range_after(reads, 40, 1000)) == (100, AT, 60)  # type: ignore[arg-type]
    assert reads.asked == [(40, 100, 1000)]
    tail.live = False  # not following: to the end of the log
    assert asyncio.run(tail.range_after(reads, 103, 10)) == (113, AT, 10)  # type: ignore[arg-type]
    assert reads.asked[-1] == (103, 2**62, 10)
    reads.asked.clear()
    tail.live = True  # following, at its head: nothing yet, nothing read
    assert asyncio.run(tail.range_after(reads, 103, 10)) is None  # type: ignore[arg-type]
    assert reads.asked == []


# --- the events a NOTIFY carries (migration 0024) -----------------------------------------

ZONE = ZoneInfo("Europe/Paris")
STATE = orjson.dumps({"namespace": "n", "key": "k", "document": {"a": 1}, "actor": "a",
                      "hash": None})
#: An event as ``ssot_append`` carries it: a committed 2026-12-03T00:00:00.5Z.
CARRIED = [7, 1_796_256_000_500_000, "t", 2, STATE.hex(),
           "0af76519-16cd-43dd-8448-eb211c80319c", "n", "k", 2, "entry.updated", "a", None,
           "c", None, '[{"op": "add"}]', '{"a": 1}', None, None, None, None]


def test_a_carried_event_is_what_the_read_gives() -> None:
    events = carried_events(orjson.dumps([CARRIED, [8, *CARRIED[1:5], *[None] * 15]]), ZONE)
    assert events is not None
    first, second = events
    assert (first.position, first.topic, first.version, first.raw) == (7, "t", 2, STATE)
    assert first.recorded_at == datetime(2026, 12, 3, 0, 0, 0, 500_000, tzinfo=UTC)
    assert first.recorded_at.tzinfo is ZONE  # the reading connection's zone, as read
    assert first.history is not None
    assert list(first.history) == list(FIELDS)
    assert first.history["event_id"] == UUID("0af76519-16cd-43dd-8448-eb211c80319c")
    assert (first.history["position"], first.history["recorded_at"]) == (7, first.recorded_at)
    assert first.history["patch"] == '[{"op": "add"}]'  # the JSON columns as text
    assert second.position == 8 and second.history is None  # no version-history row


@pytest.mark.parametrize("payload", [
    "", b"", "null", "[]", "{}", "not json", "[[1, 2]]", '[["x"]]',
    orjson.dumps([[*CARRIED, "one too many"]]), orjson.dumps([CARRIED[:-1]]),
    orjson.dumps([[*CARRIED[:4], "not hex", *CARRIED[5:]]]),
    orjson.dumps([[*CARRIED[:5], "not a uuid", *CARRIED[6:]]]),
])
def test_a_notify_that_carries_nothing_usable_is_read_instead(payload: str | bytes) -> None:
    assert carried_events(payload, ZONE) is None
