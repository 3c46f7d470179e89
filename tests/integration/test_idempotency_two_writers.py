"""Two writer processes on one database (two ``ssot serve`` nodes) answer every attempt of
one Idempotency-Key alike: the key's row, whichever writer records it first, is the answer.

Each test is an interleaving a PostgreSQL failover made likely in the cluster harness (an
attempt stuck in one writer's retries, the client's next attempt decided at the other
node), forced here with a hook rather than timing: writer B reads the stored results of
its batch, then writer A commits the first attempt, then B decides on the state it reads
afterwards. Before the fix, B answered from that state (unchanged, or a refusal) while the
first attempt's event, carrying the key, was in the log.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from nexus_ssot.ledger.commands import Command, Context, Delete, Expectation, Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.errors import PreconditionFailed
from nexus_ssot.ledger.event_store import Idempotency, StoredResult
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.store import LedgerApplication, open_application
from nexus_ssot.ledger.writer import GroupCommitWriter


class HookedStore:
    """Writer B's store: the application, with ``after_stored_results`` run once right
    after the next read of stored idempotency results."""

    def __init__(self, app: LedgerApplication) -> None:
        self._app = app
        self.after_stored_results: Callable[[], None] | None = None

    def stored_results(self, keys: Sequence[Idempotency]) -> dict[tuple[str, str],
                                                                   StoredResult]:
        found = self._app.stored_results(keys)
        hook, self.after_stored_results = self.after_stored_results, None
        if hook is not None:
            hook()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)


@pytest.fixture()
def apps(database_url: str) -> Iterator[tuple[LedgerApplication, LedgerApplication]]:
    migrate(database_url)
    a, b = (open_application(database_url, pool_size=1) for _ in range(2))
    yield a, b
    a.close()
    b.close()


@pytest.fixture()
def writers(apps: tuple[LedgerApplication, LedgerApplication]
            ) -> tuple[GroupCommitWriter, GroupCommitWriter, HookedStore]:
    """Writer A, writer B, and B's store (each writer its own pool and state cache)."""
    hooked = HookedStore(apps[1])
    return (GroupCommitWriter(apps[0], lambda _ns: Limits()),
            GroupCommitWriter(hooked, lambda _ns: Limits()),  # type: ignore[arg-type]
            hooked)


def context(key: str | None = None) -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="client",
                   correlation_id="c", idempotency_key=key)


def write(writer: GroupCommitWriter, command: Command, key: str | None = None) -> Future[Any]:
    idem = Idempotency("client", key, b"the same request") if key else None
    return writer.write_batch([(command, context(key), idem)])[0]


def put(ns: str, document: Any, **expected: Any) -> Put:
    return Put(ns, "k", Expectation(**expected), document=document)


def events_with_key(database_url: str, key: str) -> list[int]:
    with psycopg.connect(database_url) as conn:
        return [v for (v,) in conn.execute(
            "SELECT version FROM entry_history WHERE idempotency_key = %s", (key,))]


def test_an_attempt_answered_unchanged_at_one_writer_answers_what_the_other_committed(
    writers: tuple[GroupCommitWriter, GroupCommitWriter, HookedStore], ns: str,
    database_url: str,
) -> None:
    a, b, b_store = writers
    write(a, put(ns, {"v": 1})).result()
    assert write(b, put(ns, {"v": 1})).result().unchanged  # B caches version 1
    write(a, put(ns, {"v": 2})).result()  # B's cached state is stale now
    key = f"{ns}-put"
    first: list[Future[Any]] = []
    b_store.after_stored_results = lambda: first.append(write(a, put(ns, {"v": 1}), key))
    second = write(b, put(ns, {"v": 1}), key).result()
    committed = first[0].result()
    assert (committed.version, committed.unchanged) == (3, False)
    assert events_with_key(database_url, key) == [3]
    # B found version 3 as the write asks for; the key says the write made it
    assert (second.version, second.position, second.unchanged, second.replayed) == (
        3, committed.position, False, True)


def test_an_attempt_refused_at_one_writer_answers_what_the_other_committed(
    writers: tuple[GroupCommitWriter, GroupCommitWriter, HookedStore], ns: str,
    database_url: str,
) -> None:
    a, b, b_store = writers
    write(a, put(ns, {"v": 1})).result()
    write(b, put(ns, {"v": 1})).result()  # B caches the entry as existing
    write(a, Delete(ns, "k")).result()
    key = f"{ns}-create"
    first: list[Future[Any]] = []
    b_store.after_stored_results = lambda: first.append(
        write(a, put(ns, {"v": 3}, if_none_match=True), key))
    second = write(b, put(ns, {"v": 3}, if_none_match=True), key).result()
    created = first[0].result()
    assert events_with_key(database_url, key) == [3]
    assert (second.version, second.position, second.event_type, second.replayed) == (
        3, created.position, "entry.created", True)


def test_a_refusal_at_one_writer_is_the_answer_of_a_later_attempt_at_the_other(
    writers: tuple[GroupCommitWriter, GroupCommitWriter, HookedStore], ns: str,
    database_url: str,
) -> None:
    """A create refused at B (the entry existed); another client deletes it; the client's
    retry reaches A, where the create would now pass: it is refused as its first answer
    was, and nothing lands under the key."""
    a, b, _ = writers
    write(a, put(ns, {"v": 1})).result()
    key = f"{ns}-create"
    with pytest.raises(PreconditionFailed) as refused:
        write(b, put(ns, {"v": 2}, if_none_match=True), key).result()
    write(a, Delete(ns, "k")).result()
    with pytest.raises(PreconditionFailed) as again:
        write(a, put(ns, {"v": 2}, if_none_match=True), key).result()
    assert (again.value.code, again.value.message) == (refused.value.code,
                                                       refused.value.message)
    assert events_with_key(database_url, key) == []
