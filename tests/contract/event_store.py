"""What every ``EventStore`` does, whichever holds the log: subclass ``EventStoreContract``
with a ``store`` fixture. The writer relies on exactly this (see ledger/event_store.py)."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.persistence import DataError, IntegrityError

from nexus_ssot.ledger.commands import Context, Delete, Expectation, Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.domain import Unchanged, decide
from nexus_ssot.ledger.errors import NotFound, PreconditionFailed, error_record
from nexus_ssot.ledger.event_store import (
    AnswerRecord,
    EventStore,
    Idempotency,
    IdempotencyRecord,
    Outcome,
)
from nexus_ssot.ledger.events import EntryEvent, EntryState, evolve
from nexus_ssot.ledger.namespace_settings import configure


def context(**overrides: Any) -> Context:
    fields: dict[str, Any] = {"event_id": uuid.uuid4(), "timestamp": datetime.now(UTC),
                              "actor": "contract", "correlation_id": "c"}
    return Context(**{**fields, **overrides})


class Stream:
    """Events of one entry, each decided against the state the ones before it left."""

    def __init__(self, namespace: str, key: str) -> None:
        self.namespace, self.key = namespace, key
        self.state: EntryState | None = None

    def put(self, document: Any, *, policy: str = "strict", if_match: int | None = None,
            **context_fields: Any) -> EntryEvent:
        command = Put(self.namespace, self.key, Expectation(if_match=if_match),
                      document=document)
        return self._next(decide(self.state, command, context(**context_fields), Limits(),
                                 policy=policy))

    def delete(self) -> EntryEvent:
        return self._next(decide(self.state, Delete(self.namespace, self.key), context(),
                                 Limits()))

    def _next(self, event: EntryEvent | Unchanged) -> EntryEvent:
        assert isinstance(event, EntryEvent), "each write of a stream changes its entry"
        self.state = evolve(self.state, event)
        return event


class EventStoreContract:
    """The behaviour the writer relies on. Subclasses provide the ``store`` fixture."""

    @pytest.fixture()
    def store(self) -> EventStore:
        raise NotImplementedError("a subclass provides the store under test")

    @pytest.fixture()
    def ns(self) -> str:
        """A namespace of this test's own (a shared store keeps other tests' entries)."""
        return f"c{secrets.token_hex(5)}"

    def test_an_entry_never_written_has_no_state(self, store: EventStore, ns: str) -> None:
        assert store.current_states([(ns, "k")]) == {(ns, "k"): None}
        assert store.versions(ns, "k", 1, 3) == {}

    def test_appending_nothing_commits_nothing(self, store: EventStore) -> None:
        assert store.append([]) == {}

    def test_an_append_gives_increasing_positions_and_moves_the_states_on(
        self, store: EventStore, ns: str
    ) -> None:
        k, j = Stream(ns, "k"), Stream(ns, "j")
        first = [k.put({"a": 1}), k.put({"a": 2}), j.put({"b": 1})]
        committed = store.append(first)
        assert set(committed) == {(e.originator_id, e.originator_version) for e in first}
        positions = [committed[(e.originator_id, e.originator_version)][0] for e in first]
        assert positions == sorted(set(positions))  # in the order given
        later = store.append([k.put({"a": 3})])
        assert min(p for p, _ in later.values()) > max(positions)
        by_position = sorted([*committed.values(), *later.values()])
        assert [t for _, t in by_position] == sorted(t for _, t in by_position)
        states = store.current_states([(ns, "k"), (ns, "j")])
        assert states == {(ns, "k"): k.state, (ns, "j"): j.state}
        assert states[(ns, "k")] == EntryState(ns, "k", 3, {"a": 3})
        for stream in (k, j):
            read = states[(ns, stream.key)]
            assert read is not None and stream.state is not None
            assert read.hash == stream.state.hash is not None  # the next event's prev_hash

    def test_a_state_read_back_knows_where_its_last_event_is(self, store: EventStore,
                                                             ns: str) -> None:
        k = Stream(ns, "k")
        events = [k.put({"a": 1}), k.put({"a": 2})]
        committed = store.append(events)
        state = store.current_states([(ns, "k")])[(ns, "k")]
        assert state is not None
        assert state.event_id == events[1].event_id
        assert (state.position, state.recorded_at) == committed[(events[1].originator_id, 2)]

    def test_a_namespace_exists_once_it_has_an_entry_or_settings(self, store: EventStore,
                                                                  ns: str) -> None:
        configured, deleted, never = f"{ns}-set", f"{ns}-gone", f"{ns}-never"
        settings = decide(None, configure(configured, {}), context(), Limits())
        assert isinstance(settings, EntryEvent)
        gone = Stream(deleted, "k")
        store.append([Stream(ns, "k").put({"a": 1}), settings, gone.put({}), gone.delete()])
        assert store.existing_namespaces([ns, configured, deleted, never]) == {
            ns, configured, deleted}
        assert store.existing_namespaces([]) == set()

    def test_a_deleted_entry_keeps_its_last_version(self, store: EventStore, ns: str) -> None:
        k = Stream(ns, "k")
        store.append([k.put({"a": 1}), k.delete()])
        assert store.current_states([(ns, "k")])[(ns, "k")] == EntryState(
            ns, "k", 2, None, deleted=True)

    def test_one_taken_version_fails_the_whole_append(self, store: EventStore,
                                                      ns: str) -> None:
        k = Stream(ns, "k")
        store.append([k.put({"a": 1})])
        other_writer = Stream(ns, "k")  # believes the entry was never written
        fresh = Stream(ns, "fresh").put({"b": 1})
        with pytest.raises(IntegrityError):
            store.append([fresh, other_writer.put({"a": "lost"})])
        assert store.current_states([(ns, "k"), (ns, "fresh")]) == {
            (ns, "k"): k.state, (ns, "fresh"): None}
        assert store.committed_outcomes([fresh.event_id]) == {}

    def test_a_taken_event_id_fails_the_append(self, store: EventStore, ns: str) -> None:
        first = Stream(ns, "k").put({"a": 1})
        store.append([first])
        again = Stream(ns, "other").put({"a": 1}, event_id=first.event_id)
        with pytest.raises(IntegrityError):
            store.append([again])
        assert store.current_states([(ns, "other")]) == {(ns, "other"): None}

    def test_a_taken_idempotency_key_fails_the_whole_append(self, store: EventStore,
                                                            ns: str) -> None:
        idem = Idempotency("contract", f"key-{ns}", b"h1")
        first = Stream(ns, "a").put({"n": 1})
        store.append([first], [IdempotencyRecord(idem, (first,))])
        second = Stream(ns, "b").put({"n": 1})
        with pytest.raises(IntegrityError):
            store.append([second], [IdempotencyRecord(
                Idempotency("contract", f"key-{ns}", b"h2"), (second,))])
        assert store.current_states([(ns, "b")]) == {(ns, "b"): None}
        assert store.stored_results([idem])[("contract", idem.key)][0] == b"h1"

    @pytest.mark.parametrize("refused", [
        {"reason": "a\x00b"}, {"auth": {"method": "token", "token_id": "a\x00b"}}],
        ids=["reason", "auth"])
    def test_a_value_the_store_refuses_fails_the_whole_append(
            self, store: EventStore, ns: str, refused: dict[str, Any]) -> None:
        good = Stream(ns, "good").put({"n": 1})
        bad = Stream(ns, "bad").put({"n": 1}, **refused)
        with pytest.raises(DataError):
            store.append([good, bad])
        assert store.current_states([(ns, "good"), (ns, "bad")]) == {
            (ns, "good"): None, (ns, "bad"): None}

    def test_versions_give_each_version_s_document_and_patch(self, store: EventStore,
                                                             ns: str) -> None:
        k = Stream(ns, "k")
        events = [k.put({"a": 1}), k.put({"a": 2, "b": 1}), k.delete()]
        store.append(events)
        assert store.versions(ns, "k", 1, 3) == {
            1: ({"a": 1}, events[0].patch),
            2: ({"a": 2, "b": 1}, events[1].patch),
            3: (None, events[2].patch),
        }
        assert store.versions(ns, "k", 2, 9) == {2: ({"a": 2, "b": 1}, events[1].patch),
                                                 3: (None, events[2].patch)}

    def test_committed_outcomes_are_those_of_the_events_in_the_log(
        self, store: EventStore, ns: str
    ) -> None:
        k = Stream(ns, "k")
        created = k.put({"a": 1})
        overwritten = k.put({"a": 2}, policy="last-writer-wins", if_match=7)
        assert overwritten.resolution is not None
        committed = store.append([created, overwritten])
        position, recorded_at = committed[(overwritten.originator_id, 2)]
        never = uuid.uuid4()
        outcomes = store.committed_outcomes([created.event_id, overwritten.event_id, never])
        assert set(outcomes) == {created.event_id, overwritten.event_id}
        assert outcomes[overwritten.event_id] == Outcome(
            namespace=ns, key="k", version=2, position=position, recorded_at=recorded_at,
            event_type="entry.updated", document={"a": 2}, replayed=False,
            resolution=overwritten.resolution)
        assert outcomes[created.event_id].event_type == "entry.created"
        assert store.committed_outcomes([]) == {}

    def test_a_used_key_gives_its_request_hash_and_first_outcome_replayed(
        self, store: EventStore, ns: str
    ) -> None:
        idem = Idempotency("contract", f"key-{ns}", b"\x00\xffhash")
        event = Stream(ns, "k").put({"a": 1})
        store.append([event], [IdempotencyRecord(idem, (event,))])
        original = store.committed_outcomes([event.event_id])[event.event_id]
        unused = Idempotency("contract", f"unused-{ns}", b"h")
        other_actor = Idempotency("someone else", idem.key, b"\x00\xffhash")
        assert store.stored_results([idem, unused, other_actor]) == {
            ("contract", idem.key): (b"\x00\xffhash", Outcome(
                **{**original.__dict__, "replayed": True}))}
        assert store.stored_results([]) == {}

    def test_an_atomic_request_s_key_gives_all_its_outcomes_in_order(
        self, store: EventStore, ns: str
    ) -> None:
        idem = Idempotency("contract", f"key-{ns}", b"h")
        a, b = Stream(ns, "a"), Stream(ns, "b")
        events = [b.put({"n": 1}), a.put({"n": 1}), b.put({"n": 2})]
        store.append(events, [IdempotencyRecord(idem, tuple(events), atomic=True)])
        recorded_hash, result = store.stored_results([idem])[("contract", idem.key)]
        assert recorded_hash == b"h"
        assert isinstance(result, list)
        assert [(o.key, o.version, o.replayed) for o in result] == [
            ("b", 1, True), ("a", 1, True), ("b", 2, True)]

    def test_an_atomic_request_s_key_answers_the_entries_it_left_unchanged_again(
        self, store: EventStore, ns: str
    ) -> None:
        a, b = Stream(ns, "a"), Stream(ns, "b")
        found = a.put({"n": 1})
        store.append([found])
        idem = Idempotency("contract", f"key-{ns}", b"h")
        made = b.put({"n": 1})
        # b made, then a found as it was, then b found as this request made it
        answers = (made.event_id, found.event_id, made.event_id)
        store.append([made], [IdempotencyRecord(idem, (made,), atomic=True,
                                                answers=answers)])
        result = store.stored_results([idem])[("contract", idem.key)][1]
        assert isinstance(result, list)
        assert [(o.key, o.version, o.event_type, o.unchanged, o.replayed) for o in result] == [
            ("b", 1, "entry.created", False, True), ("a", 1, None, True, True),
            ("b", 1, None, True, True)]
        assert result[1].document == {"n": 1}

    def test_a_refusal_recorded_under_a_key_is_given_back_as_a_fresh_error(
        self, store: EventStore, ns: str
    ) -> None:
        idem = Idempotency("contract", f"key-{ns}", b"h")
        refusal = PreconditionFailed("expected version 4, the entry is at 2",
                                     code="version_mismatch", current_version=2)
        assert store.record_answers([AnswerRecord(idem, error=error_record(refusal))]) == {
            ("contract", idem.key)}
        found: list[Any] = [store.stored_results([idem])[("contract", idem.key)]
                            for _ in range(2)]
        for recorded_hash, error in found:
            assert recorded_hash == b"h"
            assert isinstance(error, PreconditionFailed)
            assert (error.code, error.message, error.extra) == (
                "version_mismatch", refusal.message, {"current_version": 2})
        assert found[0][1] is not found[1][1]

    def test_an_unchanged_answer_recorded_under_a_key_answers_unchanged_again(
        self, store: EventStore, ns: str
    ) -> None:
        a, b = Stream(ns, "a"), Stream(ns, "b")
        first, second = a.put({"n": 1}), b.put({"n": 2})
        store.append([first, second])
        one = Idempotency("contract", f"one-{ns}", b"h1")
        both = Idempotency("contract", f"both-{ns}", b"h2")
        assert store.record_answers([
            AnswerRecord(one, unchanged=(first.event_id,)),
            AnswerRecord(both, atomic=True, unchanged=(second.event_id, first.event_id)),
        ]) == {("contract", one.key), ("contract", both.key)}
        stored = store.stored_results([one, both])
        single = stored[("contract", one.key)][1]
        assert isinstance(single, Outcome)
        assert (single.key, single.version, single.unchanged, single.replayed,
                single.document) == ("a", 1, True, True, {"n": 1})
        atomic = stored[("contract", both.key)][1]
        assert isinstance(atomic, list)
        assert [(o.key, o.unchanged, o.replayed) for o in atomic] == [
            ("b", True, True), ("a", True, True)]

    def test_an_answer_is_not_recorded_under_a_key_already_taken(
        self, store: EventStore, ns: str
    ) -> None:
        """Whichever comes first, an append's key or an answer's, is the key's answer."""
        appended = Idempotency("contract", f"appended-{ns}", b"h")
        event = Stream(ns, "k").put({"a": 1})
        store.append([event], [IdempotencyRecord(appended, (event,))])
        answered = Idempotency("contract", f"answered-{ns}", b"h")
        refused = AnswerRecord(answered, error=error_record(NotFound("no entry")))
        assert store.record_answers([refused]) == {("contract", answered.key)}
        late = AnswerRecord(appended, error=error_record(NotFound("no entry")))
        assert store.record_answers([late, refused]) == set()
        assert isinstance(store.stored_results([appended])[("contract", appended.key)][1],
                          Outcome)
        other = Stream(ns, "other").put({"b": 1})
        with pytest.raises(IntegrityError):
            store.append([other], [IdempotencyRecord(answered, (other,))])
        assert store.committed_outcomes([other.event_id]) == {}

    def test_what_is_read_back_is_not_what_the_writer_holds(self, store: EventStore,
                                                            ns: str) -> None:
        document: dict[str, Any] = {"list": [1]}
        event = Stream(ns, "k").put(document)
        store.append([event])
        read = store.current_states([(ns, "k")])[(ns, "k")]
        assert read is not None
        read.document["list"].append("changed by the reader")
        outcome = store.committed_outcomes([event.event_id])[event.event_id]
        outcome.document["list"].append("changed by another reader")
        state = store.current_states([(ns, "k")])[(ns, "k")]
        assert state is not None and state.document == {"list": [1]}
