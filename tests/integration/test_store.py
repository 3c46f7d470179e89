"""The event store underneath: the log is the truth and the views are its fold."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import psycopg
import pytest
from eventsourcing.persistence import OperationalError

from nexus_ssot.ledger.addressing import stream_id
from nexus_ssot.ledger.commands import Context, Expectation, Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.errors import EditConflict, PreconditionFailed
from nexus_ssot.ledger.event_store import EventStore
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.namespace_settings import configure
from nexus_ssot.ledger.store import LedgerRecorder, open_application
from nexus_ssot.ledger.writer import GroupCommitWriter
from tests.contract.event_store import EventStoreContract
from tests.integration.conftest import AUTH, event_count


@pytest.fixture(scope="module")
def application(database_url: str) -> Iterator[EventStore]:
    migrate(database_url)
    app = open_application(database_url, pool_size=1)
    try:
        yield app
    finally:
        app.close()


class TestPostgresEventStore(EventStoreContract):
    """The PostgreSQL store keeps the contract the in-memory twin is unit-tested with."""

    @pytest.fixture()
    def store(self, application: EventStore) -> EventStore:
        return application


def context() -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="test",
                   correlation_id="c")


def test_folding_the_log_gives_the_inline_views(client: httpx.Client, ns: str,
                                                database_url: str) -> None:
    client.put(f"/v1/namespaces/{ns}/entries/k", json={"a": 1})
    client.patch(f"/v1/namespaces/{ns}/entries/k", content=b'{"b": 2}',
                 headers={"Content-Type": "application/merge-patch+json"})
    client.delete(f"/v1/namespaces/{ns}/entries/k")
    client.put(f"/v1/namespaces/{ns}/entries/k", json={"c": 3})
    app = open_application(database_url, pool_size=1)
    try:
        history = client.get(f"/v1/namespaces/{ns}/entries/k/history").json()["items"]
        for item in history:
            entry = app.entry(stream_id(ns, "k"), version=item["version"])
            assert entry.state is not None
            assert entry.state.version == item["version"]
            assert entry.state.deleted == (item["event_type"] == "entry.deleted")
            assert entry.state.document == item["document"]
        current = client.get(f"/v1/namespaces/{ns}/entries/k").json()
        assert app.entry(stream_id(ns, "k")).state.document == current["document"]  # type: ignore[union-attr]
    finally:
        app.close()


def test_positions_and_recorded_at_follow_commit_order(db: Any) -> None:
    rows = db.execute(
        "SELECT notification_id, recorded_at FROM ssot_events ORDER BY notification_id"
    ).fetchall()
    assert rows, "earlier tests wrote events"
    times = [r[1] for r in rows]
    assert times == sorted(times)


def test_event_rows_cannot_be_updated_or_deleted(db: Any) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("UPDATE ssot_events SET topic = 'x'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("DELETE FROM ssot_events")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("TRUNCATE ssot_events")


def test_migrations_are_idempotent(database_url: str) -> None:
    assert migrate(database_url) == []


def test_a_second_writer_on_the_same_database_never_loses_a_version_check(
    api: Any, ns: str, database_url: str
) -> None:
    """Another process's writer holds a stale cache; the primary key catches it and the
    command is decided again on fresh state."""
    app = open_application(database_url, pool_size=1)
    other = GroupCommitWriter(app, lambda _ns: Limits())
    other.start()
    try:
        # strict: a stale If-Match is refused, not merged (merging is tested elsewhere)
        other.submit(configure(ns, {"conflict_policy": "strict"}), context()).result(10)
        first = other.submit(Put(ns, "k", document={"v": 1}), context()).result(10)
        assert first.version == 1
        # the API (the first writer) moves the entry on
        with httpx.Client(headers=AUTH, base_url=api.url) as c:
            assert c.put(f"/v1/namespaces/{ns}/entries/k", json={"v": 2},
                         headers={"If-Match": '"1"'}).status_code == 200
        # this writer still believes version 1 is current: a client that saw version 2
        # must not be refused on the strength of that stale belief
        based_on_2 = other.submit(Put(ns, "k", Expectation(if_match=2), document={"v": 3}),
                                  context()).result(10)
        assert based_on_2.version == 3
        with httpx.Client(headers=AUTH, base_url=api.url) as c:
            assert c.put(f"/v1/namespaces/{ns}/entries/k", json={"v": 4}).status_code == 200
        unconditional = other.submit(Put(ns, "k", document={"v": 5}), context()).result(10)
        assert unconditional.version == 5
        stale = other.submit(Put(ns, "k", Expectation(if_match=3), document={"v": 6}),
                             context())
        with pytest.raises(PreconditionFailed):
            stale.result(10)
    finally:
        other.stop()
        app.close()


def test_a_batch_with_a_conflict_fails_only_the_conflicting_command(
    database_url: str, ns: str
) -> None:
    """Commands queued together commit together, but a rejected one fails alone and a
    retried idempotent command inside the same batch is answered from the first."""
    from nexus_ssot.ledger.event_store import Idempotency

    app = open_application(database_url, pool_size=1)
    writer = GroupCommitWriter(app, lambda _ns: Limits())
    try:
        idem = Idempotency("test", f"idem-{ns}", b"h1")
        futures = [
            writer.submit(Put(ns, "a", document={"n": 1}), context()),
            writer.submit(Put(ns, "a", Expectation(if_match=1), document={"n": 2}), context()),
            writer.submit(Put(ns, "a", Expectation(if_match=1), document={"n": 3}), context()),
            writer.submit(Put(ns, "b", document={"n": 1}), context(), idem),
            writer.submit(Put(ns, "b", document={"n": 1}), context(), idem),
            writer.submit(Put(ns, "b", document={"n": 9}), context(),
                          Idempotency("test", f"idem-{ns}", b"h2")),
        ]
        writer.start()  # everything above is now drained as one batch
        assert futures[0].result(10).version == 1
        assert futures[1].result(10).version == 2
        # stale If-Match: merged against version 2, decided earlier in this same batch,
        # which changed the same path
        with pytest.raises(EditConflict) as conflict:
            futures[2].result(10)
        assert conflict.value.extra["conflicts"] == [
            {"path": "/n", "base": 1, "theirs": 2, "ours": 3}]
        b1, b2 = futures[3].result(10), futures[4].result(10)
        assert (b1.version, b1.position) == (b2.version, b2.position)
        assert b2.replayed and not b1.replayed
        with pytest.raises(Exception, match="different request"):
            futures[5].result(10)
        positions = [futures[i].result(10).position for i in (0, 1, 3)]
        assert positions == sorted(positions)
    finally:
        writer.stop()
        app.close()


class DropsAfterCommit(LedgerRecorder):
    """A recorder whose connection "drops" once right after the server committed."""

    dropped = False

    def insert_events(self, stored_events: Any, **kwargs: Any) -> Any:
        ids = super().insert_events(stored_events, **kwargs)
        if not DropsAfterCommit.dropped:
            DropsAfterCommit.dropped = True
            raise OperationalError("server closed the connection unexpectedly")
        return ids


def test_a_commit_hidden_by_a_dropped_connection_is_reported_as_done(
    database_url: str, ns: str, db: Any
) -> None:
    app = open_application(database_url, pool_size=1, recorder=DropsAfterCommit)
    writer = GroupCommitWriter(app, lambda _ns: Limits())
    try:
        before = event_count(db)
        futures = writer.write_batch([
            (Put(ns, "a", document={"n": 1}), context(), None),
            (Put(ns, "b", document={"n": 1}), context(), None),
            (Put(ns, "a", Expectation(if_match=7), document={"n": 2}), context(), None),
        ])
        assert DropsAfterCommit.dropped
        assert [f.result().version for f in futures[:2]] == [1, 1]
        with pytest.raises(PreconditionFailed):
            futures[2].result()
        assert event_count(db) == before + 2  # committed once, reported once
    finally:
        app.close()


class KeepsStates(LedgerRecorder):
    """A recorder that keeps each stored event it was handed, as the library made it."""

    handed: ClassVar[list[Any]] = []

    def insert_events(self, stored_events: Any, **kwargs: Any) -> Any:
        KeepsStates.handed.extend(stored_events)
        return super().insert_events(stored_events, **kwargs)


def test_a_batch_stores_each_state_byte_for_byte_in_its_order(
    database_url: str, ns: str, db: Any
) -> None:
    """The append sends a batch's states joined in one bytea and cuts each out at its
    offset (``store.append_parameters``): states of very different sizes, a document
    with non-ASCII text and bytes that look like escapes, and several versions of one
    entry in one batch each come back exactly as the library made them, at the position
    of their event."""
    migrate(database_url)
    KeepsStates.handed = []
    app = open_application(database_url, pool_size=1, recorder=KeepsStates)
    writer = GroupCommitWriter(app, lambda _ns: Limits())
    try:
        futures = [
            writer.submit(Put(ns, "small", document={}), context()),
            writer.submit(Put(ns, "large", document={"x": "é\\x00" * 20_000}), context()),
            writer.submit(Put(ns, "small", Expectation(if_match=1), document={"n": 1}),
                          context()),
            writer.submit(Put(ns, "text", document={"t": "\\\"'\t ☃ 𝄞"}), context()),
            writer.submit(Put(ns, "small", Expectation(if_match=2), document={"l": [1, 2]}),
                          context()),
        ]
        writer.start()  # the five are drained as one batch
        results = [f.result(10) for f in futures]
        assert len({r.position for r in results}) == 5
        handed = {(e.originator_id, e.originator_version): e for e in KeepsStates.handed}
        assert len(handed) == 5
        assert len({len(e.state) for e in handed.values()}) >= 3
        with db.cursor() as cur:
            rows = cur.execute(
                "SELECT originator_id, originator_version, topic, state, notification_id"
                " FROM ssot_events WHERE notification_id = ANY(%s)",
                ([r.position for r in results],)).fetchall()
        assert len(rows) == 5
        # each write's answer names its event's version and position
        answered = {(stream_id(ns, key), r.version): r.position for key, r in
                    zip(["small", "large", "small", "text", "small"], results, strict=True)}
        for originator_id, version, topic, state, position in rows:
            stored = handed[(originator_id, version)]
            assert (topic, bytes(state)) == (stored.topic, stored.state)
            assert answered[(originator_id, version)] == position
        by_position = sorted(rows, key=lambda row: row[4])
        assert [row[1] for row in by_position if row[0] == stream_id(ns, "small")] == [1, 2, 3]
    finally:
        writer.stop()
        app.close()


def test_a_value_the_store_refuses_fails_only_its_own_write(
    database_url: str, ns: str, db: Any
) -> None:
    """A value PostgreSQL refuses (here a reason holding U+0000, which no edge let through)
    fails its own write as a 400 and leaves the writes it shared a batch with committed."""
    from nexus_ssot.ledger.errors import InvalidInput

    app = open_application(database_url, pool_size=1)
    writer = GroupCommitWriter(app, lambda _ns: Limits())
    try:
        before = event_count(db)
        bad = Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="test",
                      correlation_id="c", reason="a\x00b")
        futures = [
            writer.submit(Put(ns, "a", document={"n": 1}), context()),
            writer.submit(Put(ns, "b", document={"n": 1}), bad),
            writer.submit(Put(ns, "c", document={"n": 1}), context()),
        ]
        writer.start()  # the three are drained as one batch
        assert [futures[i].result(10).version for i in (0, 2)] == [1, 1]
        with pytest.raises(InvalidInput) as refused:
            futures[1].result(10)
        assert refused.value.code == "unstorable_value"
        assert event_count(db) == before + 2
    finally:
        writer.stop()
        app.close()


def test_a_document_holding_nul_is_refused_with_its_path() -> None:
    from nexus_ssot.ledger.documents import check_document
    from nexus_ssot.ledger.errors import InvalidInput

    check_document({"a": "\\u0000 spelled out"}, Limits())  # a backslash, not U+0000
    for document, path in [({"a": {"b": ["x", "y\x00"]}}, "document.a.b[1]"),
                           ({"a\x00": 1}, "document")]:
        with pytest.raises(InvalidInput) as refused:
            check_document(document, Limits())
        assert (refused.value.code, refused.value.field) == ("invalid_unicode", path)
