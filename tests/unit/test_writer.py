"""The writer's group commit over the in-memory event store: one append per batch, each
command decided against the state the commands before it left, a refused command failing
alone, idempotent retries answered from the first, stale writes merged by replay."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pytest
from eventsourcing.persistence import OperationalError

from nexus_ssot.ledger import writer_service
from nexus_ssot.ledger.commands import (
    Command,
    Context,
    Delete,
    Expectation,
    MergePatch,
    Put,
    Trace,
)
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.errors import (
    EditConflict,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    Unavailable,
)
from nexus_ssot.ledger.event_store import (
    AnswerRecord,
    Committed,
    Idempotency,
    IdempotencyRecord,
    Outcome,
)
from nexus_ssot.ledger.events import EntryEvent
from nexus_ssot.ledger.memory_store import MemoryEventStore
from nexus_ssot.ledger.namespace_settings import configure
from nexus_ssot.ledger.writer import GroupCommitWriter, Write

NS = "orders"


def context(**overrides: Any) -> Context:
    fields: dict[str, Any] = {"event_id": uuid.uuid4(), "timestamp": datetime.now(UTC),
                              "actor": "test", "correlation_id": "c"}
    return Context(**{**fields, **overrides})


class CountingStore(MemoryEventStore):
    """Remembers how many events each append was given."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[int] = []

    def append(self, events: Sequence[EntryEvent], keys: Sequence[IdempotencyRecord] = (),
               traces: Mapping[UUID, Trace] | None = None) -> Committed:
        self.appends.append(len(events))
        return super().append(events, keys, traces)


@pytest.fixture()
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture()
def writer(store: CountingStore) -> GroupCommitWriter:
    return GroupCommitWriter(store, lambda _ns: Limits())


def batch(writer: GroupCommitWriter, *items: tuple[Command, Context, Idempotency | None] | Write
          ) -> list[Future[Any]]:
    futures: list[Future[Any]] = writer.write_batch(list(items))
    return futures


def put(key: str, document: Any, if_match: int | None = None) -> Put:
    return Put(NS, key, Expectation(if_match=if_match), document=document)


# --- one batch, one append ------------------------------------------------------------


def test_commands_to_one_key_in_one_batch_get_consecutive_versions(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    futures = batch(writer,
                    (put("k", {"n": 1}), context(), None),
                    (put("k", {"n": 2}), context(), None),
                    (put("other", {"n": 1}), context(), None),
                    (put("k", {"n": 3}, if_match=2), context(), None),
                    (MergePatch(NS, "k", patch={"m": 1}), context(), None))
    outcomes: list[Outcome] = [f.result() for f in futures]
    assert [(o.key, o.version) for o in outcomes] == [
        ("k", 1), ("k", 2), ("other", 1), ("k", 3), ("k", 4)]
    assert [o.position for o in outcomes] == [1, 2, 3, 4, 5]
    assert outcomes[4].document == {"n": 3, "m": 1}
    assert store.appends == [5]  # one append for the whole batch
    assert [e.originator_version for e in store.events if e.key == "k"] == [1, 2, 3, 4]


def test_a_refused_command_fails_alone_and_the_rest_of_its_batch_commits(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    futures = batch(writer,
                    (put("a", {"n": 1}), context(), None),
                    (put("b", {"n": 1}, if_match=5), context(), None),
                    (Delete(NS, "missing"), context(), None),
                    (put("a", {"n": 2}, if_match=1), context(), None))
    assert [futures[i].result().version for i in (0, 3)] == [1, 2]
    with pytest.raises(PreconditionFailed) as refused:
        futures[1].result()
    assert refused.value.extra["current_version"] == 0
    with pytest.raises(NotFound):
        futures[2].result()
    assert store.appends == [2]
    assert store.current_states([(NS, "b")]) == {(NS, "b"): None}


def test_a_refused_operation_fails_its_whole_atomic_request_only(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    atomic = Write(((put("x", {"n": 1}), context()), (put("y", {"n": 1}, if_match=3),
                                                       context())), atomic=True)
    futures = batch(writer, atomic, (put("z", {"n": 1}), context(), None))
    with pytest.raises(PreconditionFailed) as refused:
        futures[0].result()
    assert refused.value.extra["operation"] == 1
    assert futures[1].result().version == 1
    assert [e.key for e in store.events] == ["z"]
    whole = batch(writer, Write(((put("x", {"n": 1}), context()),
                                 (put("x", {"n": 2}, if_match=1), context())), atomic=True))
    assert [o.version for o in whole[0].result()] == [1, 2]


def test_a_stale_if_match_under_strict_is_refused_with_the_current_version(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    batch(writer, (configure(NS, {"conflict_policy": "strict"}), context(), None),
          (put("k", {"n": 1}), context(), None),
          (put("k", {"n": 2}, if_match=1), context(), None))
    stale, current = batch(writer, (put("k", {"n": 3}, if_match=1), context(), None),
                           (put("k", {"n": 3}, if_match=2), context(), None))
    with pytest.raises(PreconditionFailed) as refused:
        stale.result()
    assert (refused.value.code, refused.value.extra["current_version"]) == (
        "version_conflict", 2)
    assert current.result().version == 3


# --- idempotency ----------------------------------------------------------------------


def test_a_retried_key_gets_the_first_result_and_writes_nothing(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    idem = Idempotency("test", "retry-me", b"h1")
    first = batch(writer, (put("k", {"n": 1}), context(), idem))[0].result()
    assert not first.replayed
    other_request = Idempotency("test", "retry-me", b"h2")
    again, reused = batch(writer, (put("k", {"n": 1}), context(), idem),
                          (put("k", {"n": 9}), context(), other_request))
    assert again.result() == Outcome(**{**first.__dict__, "replayed": True})
    with pytest.raises(IdempotencyKeyReused):
        reused.result()
    assert len(store.events) == 1
    assert sum(store.appends) == 1  # the second batch appended nothing


def test_a_key_used_twice_in_one_batch_commits_once(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    idem = Idempotency("test", "twice", b"h")
    first, second = batch(writer, (put("k", {"n": 1}), context(), idem),
                          (put("k", {"n": 1}), context(), idem))
    assert (first.result().version, first.result().replayed) == (1, False)
    assert (second.result().position, second.result().replayed) == (
        first.result().position, True)
    assert len(store.events) == 1


def test_an_atomic_request_retried_gets_all_its_outcomes(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    idem = Idempotency("test", "atomic", b"h")
    request = Write(((put("a", {"n": 1}), context()), (put("b", {"n": 1}), context())),
                    idem, atomic=True)
    first = batch(writer, request)[0].result()
    again = batch(writer, Write(request.ops, idem, atomic=True))[0].result()
    assert [(o.key, o.version, o.replayed) for o in again] == [("a", 1, True),
                                                               ("b", 1, True)]
    assert [o.position for o in again] == [o.position for o in first]
    assert len(store.events) == 2


def test_the_retry_of_a_refused_request_is_refused_too(writer: GroupCommitWriter) -> None:
    idem = Idempotency("test", "refused", b"h")
    first, second = batch(writer, (put("k", {"n": 1}, if_match=4), context(), idem),
                          (put("k", {"n": 1}, if_match=4), context(), idem))
    for future in (first, second):
        with pytest.raises(PreconditionFailed):
            future.result()
    # the refusal is the key's answer: a later retry gets it, even where it would now pass
    batch(writer, (put("k", {"n": 0}), context(), None))
    batch(writer, (put("k", {"n": 0, "m": 1}), context(), None))
    batch(writer, (put("k", {"n": 0, "m": 2}), context(), None))
    assert batch(writer, (put("k", {"n": 0, "m": 3}), context(), None))[0].result().version == 4
    later = batch(writer, (put("k", {"n": 1}, if_match=4), context(), idem))[0]
    with pytest.raises(PreconditionFailed):
        later.result()
    # and another request under the key is refused as a reuse of it
    with pytest.raises(IdempotencyKeyReused):
        batch(writer, (put("k", {"n": 1}), context(), Idempotency("test", "refused", b"i"))
              )[0].result()


def test_a_retry_behind_its_refused_original_in_one_batch_gets_the_same_refusal(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    """A client that timed out sends its request again while the first is still queued;
    a write between the two makes the second decidable. Both are one request: both are
    refused, and nothing lands under the key (a landed write behind a refusal the client
    saw would be a rejected write that took effect)."""
    idem = Idempotency("test", "retried-behind", b"h")
    first, create, retry = batch(writer,
                                 (MergePatch(NS, "k", patch={"b": 1}), context(), idem),
                                 (put("k", {"a": 1}), context(), None),
                                 (MergePatch(NS, "k", patch={"b": 1}), context(), idem))
    for future in (first, retry):
        with pytest.raises(NotFound):
            future.result()
    assert create.result().version == 1
    assert len(store.events) == 1


# --- writes that change nothing -------------------------------------------------------


def test_a_write_that_changes_nothing_appends_nothing_and_answers_the_version_it_found(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    made = batch(writer, (put("k", {"n": 1}), context(), None))[0].result()
    same = batch(writer, (put("k", {"n": 1}), context(), None))[0].result()
    assert same.unchanged and not made.unchanged
    assert (same.version, same.position, same.recorded_at, same.document) == (
        made.version, made.position, made.recorded_at, made.document)
    assert store.appends == [1, 0]
    assert len(store.events) == 1


def test_a_write_that_repeats_one_earlier_in_its_batch_answers_that_one_s_version(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    first, second, third = batch(writer, (put("k", {"n": 1}), context(), None),
                                 (put("k", {"n": 1}), context(), None),
                                 (MergePatch(NS, "k", patch={"n": 1}), context(), None))
    assert not first.result().unchanged
    for repeated in (second.result(), third.result()):
        assert repeated.unchanged
        assert (repeated.version, repeated.position) == (1, first.result().position)
    assert store.appends == [1]


def test_an_atomic_request_appends_only_what_changes_and_its_retry_answers_the_same(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    batch(writer, (put("a", {"n": 1}), context(), None))
    idem = Idempotency("test", "mixed", b"h")
    ops = ((put("a", {"n": 1}), context()), (put("b", {"n": 1}), context()),
           (put("b", {"n": 1}), context()))
    first = batch(writer, Write(ops, idem, atomic=True))[0].result()
    assert [(o.key, o.version, o.unchanged) for o in first] == [
        ("a", 1, True), ("b", 1, False), ("b", 1, True)]
    batch(writer, (put("a", {"n": 2}), context(), None))  # a moves on meanwhile
    again = batch(writer, Write(ops, idem, atomic=True))[0].result()
    assert [(o.key, o.version, o.position, o.unchanged, o.replayed) for o in again] == [
        (o.key, o.version, o.position, o.unchanged, True) for o in first]
    assert [e.key for e in store.events] == ["a", "b", "a"]


def test_a_request_that_changes_nothing_is_remembered_and_answered_unchanged_again(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    batch(writer, (put("k", {"n": 1}), context(), None))
    idem = Idempotency("test", "nothing", b"h")
    first = batch(writer, (put("k", {"n": 1}), context(), idem))[0].result()
    batch(writer, (put("k", {"n": 2}), context(), None))  # the entry moves on meanwhile
    again = batch(writer, (put("k", {"n": 1}), context(), idem))[0].result()
    assert first.unchanged and again.unchanged and again.replayed
    assert (again.version, again.position, again.document) == (
        first.version, first.position, {"n": 1})
    assert len(store.events) == 2


def test_unchanged_is_answered_on_the_store_s_state_not_a_stale_cached_one(
    store: CountingStore
) -> None:
    mine = GroupCommitWriter(store, lambda _ns: Limits())
    other = GroupCommitWriter(store, lambda _ns: Limits())
    made = batch(mine, (put("k", {"v": 1}), context(), None))[0].result()
    same = batch(mine, (put("k", {"v": 1}), context(), None))[0].result()
    assert (same.version, same.position, same.unchanged) == (1, made.position, True)
    assert batch(other, (put("k", {"v": 2}), context(), None))[0].result().version == 2
    # mine still holds version 1, {"v": 1}, in its cache: the store's state says otherwise
    back = batch(mine, (put("k", {"v": 1}), context(), None))[0].result()
    assert (back.version, back.unchanged) == (3, False)
    assert [e.document for e in store.events] == [{"v": 1}, {"v": 2}, {"v": 1}]


# --- namespaces that must exist first -------------------------------------------------


def test_without_implicit_namespaces_a_write_needs_the_namespace_to_exist(
    store: CountingStore
) -> None:
    strict = GroupCommitWriter(store, lambda _ns: Limits(), implicit_namespaces=False)
    refused = batch(strict, (put("k", {"n": 1}), context(), None))[0]
    with pytest.raises(NotFound) as missing:
        refused.result()
    assert (missing.value.code, missing.value.field) == ("namespace_not_found", "namespace")
    # settings make it exist, in the same batch too
    made = batch(strict, (configure(NS, {}), context(), None),
                 (put("k", {"n": 1}), context(), None))
    assert [f.result().version for f in made] == [1, 1]
    # a namespace another writer made by writing into it exists as well
    batch(GroupCommitWriter(store, lambda _ns: Limits()),
          (Put("elsewhere", "k", document={}), context(), None))
    assert batch(strict, (Put("elsewhere", "j", document={}), context(), None))[0].result(
        ).version == 1
    assert [e.namespace for e in store.events] == ["_namespaces", NS, "elsewhere",
                                                   "elsewhere"]


# --- merges by replay -----------------------------------------------------------------


def test_a_stale_write_is_merged_over_the_versions_it_missed(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    batch(writer, (put("k", {"a": 1, "b": 1}), context(), None))
    batch(writer, (put("k", {"a": 2, "b": 1}, if_match=1), context(), None))
    # stale (based on version 1) and in the same batch as another stale write
    theirs, ours = batch(writer, (put("k", {"a": 2, "b": 1, "c": 1}, if_match=2), context(),
                                  None),
                         (put("k", {"a": 1, "b": 2}, if_match=1), context(), None))
    assert theirs.result().version == 3
    merged = ours.result()
    assert merged.version == 4
    assert merged.document == {"a": 2, "b": 2, "c": 1}
    assert merged.resolution == {"policy": "merge", "base_version": 1, "rebased_over": [2, 3]}


def test_a_stale_write_to_a_path_changed_since_is_an_edit_conflict(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    batch(writer, (put("k", {"n": 1}), context(), None))
    first, clash = batch(writer, (put("k", {"n": 2}, if_match=1), context(), None),
                         (put("k", {"n": 3}, if_match=1), context(), None))
    assert first.result().version == 2
    with pytest.raises(EditConflict) as conflict:
        clash.result()
    assert conflict.value.extra["conflicts"] == [
        {"path": "/n", "base": 1, "theirs": 2, "ours": 3}]


def test_last_writer_wins_records_what_it_overwrote(writer: GroupCommitWriter) -> None:
    batch(writer, (configure(NS, {"conflict_policy": "last-writer-wins"}), context(), None),
          (put("k", {"n": 1}), context(), None), (put("k", {"n": 2}), context(), None))
    outcome = batch(writer, (put("k", {"n": 3}, if_match=1), context(), None))[0].result()
    assert (outcome.version, outcome.document) == (3, {"n": 3})
    assert outcome.resolution == {"policy": "last-writer-wins", "expected_version": 1,
                                  "overwritten_version": 2}


# --- when the store says no -----------------------------------------------------------


def test_another_writer_s_commit_is_caught_and_decided_again(store: CountingStore) -> None:
    """Two writers over one store: the stale cache of one never refuses a write that the
    store's own state accepts, and its stale acceptances are caught by the store."""
    mine = GroupCommitWriter(store, lambda _ns: Limits())
    other = GroupCommitWriter(store, lambda _ns: Limits())
    batch(mine, (configure(NS, {"conflict_policy": "strict"}), context(), None))
    assert batch(mine, (put("k", {"v": 1}), context(), None))[0].result().version == 1
    assert batch(other, (put("k", {"v": 2}, if_match=1), context(), None))[0].result(
        ).version == 2
    based_on_2 = batch(mine, (put("k", {"v": 3}, if_match=2), context(), None))[0]
    assert based_on_2.result().version == 3
    assert batch(other, (put("k", {"v": 4}), context(), None))[0].result().version == 4
    # mine believes version 3 is current: the store refuses its version 4, and the
    # command alone is decided again on the store's state
    together = batch(mine, (put("k", {"v": 5}), context(), None),
                     (put("j", {"v": 1}), context(), None))
    assert [f.result().version for f in together] == [5, 1]
    stale = batch(mine, (put("k", {"v": 6}, if_match=3), context(), None))[0]
    with pytest.raises(PreconditionFailed):
        stale.result()
    assert [e.originator_version for e in store.events if e.key == "k"] == [1, 2, 3, 4, 5]


def test_a_value_the_store_refuses_fails_only_its_own_write(
    writer: GroupCommitWriter, store: CountingStore
) -> None:
    futures = batch(writer, (put("a", {"n": 1}), context(), None),
                    (put("b", {"n": 1}), context(reason="a\x00b"), None),
                    (put("c", {"n": 1}), context(), None))
    assert [futures[i].result().version for i in (0, 2)] == [1, 1]
    with pytest.raises(InvalidInput) as refused:
        futures[1].result()
    assert refused.value.code == "unstorable_value"
    assert sorted(e.key for e in store.events) == ["a", "c"]


class DropsAfterCommit(MemoryEventStore):
    """Appends, then reports the connection lost, once."""

    dropped = False

    def append(self, events: Sequence[EntryEvent], keys: Sequence[IdempotencyRecord] = (),
               traces: Mapping[UUID, Trace] | None = None) -> Committed:
        committed = super().append(events, keys, traces)
        if not self.dropped:
            self.dropped = True
            raise OperationalError("server closed the connection unexpectedly")
        return committed


def test_a_commit_hidden_by_a_lost_connection_is_reported_as_done() -> None:
    store = DropsAfterCommit()
    writer = GroupCommitWriter(store, lambda _ns: Limits())
    futures = batch(writer, (put("a", {"n": 1}), context(), None),
                    (put("b", {"n": 1}), context(), None),
                    (put("a", {"n": 2}, if_match=7), context(), None))
    assert store.dropped
    assert [f.result().version for f in futures[:2]] == [1, 1]
    with pytest.raises(PreconditionFailed):
        futures[2].result()
    assert len(store.events) == 2  # committed once, reported once


class Unreachable(MemoryEventStore):
    def append(self, events: Sequence[EntryEvent], keys: Sequence[IdempotencyRecord] = (),
               traces: Mapping[UUID, Trace] | None = None) -> Committed:
        raise OperationalError("connection refused")


def test_an_unavailable_store_fails_the_batch_as_unavailable() -> None:
    store = Unreachable()
    writer = GroupCommitWriter(store, lambda _ns: Limits())
    futures = batch(writer, (put("a", {"n": 1}), context(), None),
                    (put("b", {"n": 1}), context(), None))
    for future in futures:
        with pytest.raises(Unavailable):
            future.result()
    assert store.events == []


class AnswersUnrecordable(MemoryEventStore):
    """Appends, but cannot record an answer that appended nothing, once."""

    failed = False

    def record_answers(self, records: Sequence[AnswerRecord]) -> set[tuple[str, str]]:
        if not self.failed:
            self.failed = True
            raise OperationalError("server closed the connection unexpectedly")
        return super().record_answers(records)


def test_a_refusal_that_could_not_be_recorded_is_no_answer_and_its_retry_is_decided_afresh(
) -> None:
    store = AnswersUnrecordable()
    writer = GroupCommitWriter(store, lambda _ns: Limits())
    idem = Idempotency("test", "create", b"h")
    made, refused = batch(writer, (put("k", {"n": 1}), context(), None),
                          (put("k", {"n": 2}, if_match=7), context(), idem))
    assert made.result().version == 1  # the batch's appends are answered all the same
    with pytest.raises(Unavailable):
        refused.result()
    again = batch(writer, (put("k", {"n": 2}, if_match=7), context(), idem))[0]
    with pytest.raises(PreconditionFailed):
        again.result()
    assert isinstance(store.stored_results([idem])[("test", "create")][1], PreconditionFailed)


def test_two_writers_answer_the_attempts_of_one_key_with_whichever_was_recorded_first(
) -> None:
    """Writer A refuses the first attempt and records it; B, whose cached state would let
    the second attempt through, finds A's refusal under the key."""
    store = MemoryEventStore()
    a, b = (GroupCommitWriter(store, lambda _ns: Limits()) for _ in range(2))
    idem = Idempotency("test", "create-once", b"h")
    batch(b, (put("k", {"n": 1}), context(), None))
    batch(a, (put("k", {"n": 1}), context(), None))  # A caches the entry: it exists
    with pytest.raises(PreconditionFailed):
        batch(a, (Put(NS, "k", Expectation(if_none_match=True), document={"n": 2}),
                  context(), idem))[0].result()
    batch(b, (Delete(NS, "k"), context(), None))
    with pytest.raises(PreconditionFailed):
        batch(b, (Put(NS, "k", Expectation(if_none_match=True), document={"n": 2}),
                  context(), idem))[0].result()
    assert [e.key for e in store.events] == ["k", "k"]  # the put and the delete


# --- the writer thread ----------------------------------------------------------------


def test_the_writer_thread_drains_its_queue_into_one_batch(store: CountingStore) -> None:
    commits: list[int] = []
    writer = GroupCommitWriter(store, lambda _ns: Limits(),
                               on_commit=lambda n, _seconds: commits.append(n))
    futures: list[Future[Any]] = [writer.submit(put("k", {"n": n}), context())
                                  for n in range(1, 6)]
    futures.append(writer.submit_all([(put("j", {"n": 1}), context()),
                                      (put("j", {"n": 2}), context())]))
    writer.start()  # everything above is drained as one batch
    writer.stop()
    assert [f.result(10).version for f in futures[:5]] == [1, 2, 3, 4, 5]
    assert [o.version for o in futures[5].result(10)] == [1, 2]
    assert store.appends == commits == [7]
    with pytest.raises(Unavailable):
        writer.submit(put("k", {"n": 6}), context()).result(10)


# --- the writer process's wire format -------------------------------------------------


@pytest.mark.parametrize("reason", ["plain", "lone \ud800 surrogate"],
                         ids=["orjson", "json"])
def test_a_request_to_the_writer_process_carries_each_context_whole(reason: str) -> None:
    """``auth`` among the rest, through either encoder (json for what orjson refuses)."""
    auth = {"method": "token", "token_id": "3f2a", "on_behalf_of": "alice"}
    write = Write(((put("a", {"n": 1}), context(auth=auth, reason=reason,
                                                idempotency_key="k-1")),
                   (put("b", {"n": 2}), context())),
                  Idempotency("test", "k-1", b"\x01\x02"), atomic=True)
    payload = writer_service.encode_request(7, write)
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        data = json.loads(payload)
    assert writer_service.decode_request(data) == write
    [(_, first), (_, second)] = writer_service.decode_request(data).ops
    assert (first.auth, second.auth) == (auth, None)


def test_the_writer_records_the_auth_of_each_event(writer: GroupCommitWriter,
                                                   store: CountingStore) -> None:
    auth = {"method": "oidc", "issuer": "https://idp.example"}
    futures = batch(writer, (put("a", {"n": 1}), context(auth=auth), None),
                    (put("b", {"n": 1}), context(), None))
    assert [f.result().version for f in futures] == [1, 1]
    assert {e.key: e.auth for e in store.events} == {"a": auth, "b": None}


# --- the state cache ---------------------------------------------------------------------


def test_the_state_cache_holds_to_its_memory_budget_and_reads_back_what_it_dropped(
        store: CountingStore) -> None:
    """A cache bounded by count only held every cached entry's whole document: 100,000
    entries of large documents took the writer's memory without bound."""
    writer = GroupCommitWriter(store, lambda _ns: Limits(), cache_bytes=200_000)
    big = {"blob": "x" * 10_000}
    for n in range(40):
        [done] = batch(writer, (put(f"k{n}", {**big, "n": n}), context(), None))
        assert done.result().version == 1
    states, weight = writer._decider.cached
    assert 0 < states < 40
    assert weight <= 200_000
    # an entry it no longer holds is read from the store: its version check stays exact
    [stale] = batch(writer, (put("k0", {"n": 0, "again": True}, if_match=2), context(), None))
    with pytest.raises(PreconditionFailed):
        stale.result()
    [fresh] = batch(writer, (put("k0", {"n": 0, "again": True}, if_match=1), context(), None))
    assert fresh.result().version == 2
