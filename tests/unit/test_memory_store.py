"""The in-memory event store keeps the PostgreSQL store's contract (tests/contract), and
what only it promises: positions from 1 and the injected clock's times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nexus_ssot.ledger.event_store import EventStore
from nexus_ssot.ledger.memory_store import MemoryEventStore
from tests.contract.event_store import EventStoreContract, Stream

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock that moves one millisecond each time it is read."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


class TestMemoryEventStore(EventStoreContract):
    @pytest.fixture()
    def store(self) -> EventStore:
        return MemoryEventStore(Clock())


def test_positions_count_from_one_and_times_come_from_the_clock() -> None:
    store = MemoryEventStore(Clock())
    k = Stream("ns", "k")
    committed = store.append([k.put({"a": 1}), k.put({"a": 2})])
    assert sorted(committed.values()) == [(1, T0 + timedelta(milliseconds=1)),
                                          (2, T0 + timedelta(milliseconds=2))]
    third = k.put({"a": 3})
    assert store.append([third]) == {
        (third.originator_id, 3): (3, T0 + timedelta(milliseconds=3))}
    assert [e.originator_version for e in store.events] == [1, 2, 3]
