"""Events: their stable type names and stored topics, how ``evolve`` folds any recorded
history back into state, and the aggregate the event store loads."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson
import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from nexus_ssot.ledger.addressing import stream_id
from nexus_ssot.ledger.commands import (
    Command,
    Delete,
    Expectation,
    JsonPatch,
    MergePatch,
    Put,
    Restore,
)
from nexus_ssot.ledger.domain import decide
from nexus_ssot.ledger.events import (
    EVENT_TYPE_NAMES,
    TYPE_OF_TOPIC,
    Entry,
    EntryCreated,
    EntryDeleted,
    EntryEvent,
    EntryPatched,
    EntryRestored,
    EntryState,
    EntryUpdated,
    NamespaceConfigured,
    evolve,
)
from nexus_ssot.ledger.store import OrjsonTranscoder
from tests.unit.entries import (
    KEY,
    LIMITS,
    NS,
    apply_recorded_patch,
    canon,
    ctx,
    nested,
    previous_document,
    recorded,
    run,
)

# --- names and topics -----------------------------------------------------------------


def test_event_type_names_are_stable() -> None:
    assert {cls: name for cls, name in EVENT_TYPE_NAMES.items()} == {
        EntryCreated: "entry.created",
        EntryUpdated: "entry.updated",
        EntryPatched: "entry.patched",
        EntryDeleted: "entry.deleted",
        EntryRestored: "entry.restored",
        NamespaceConfigured: "namespace.configured",
    }


#: The topic stored with every event of each class, as first written: never to change,
#: wherever the classes live.
STORED_TOPICS: dict[type, str] = {
    Entry: "nexus_ssot.ledger.domain:Entry",
    Entry.Created: "nexus_ssot.ledger.domain:Entry.Created",
    EntryEvent: "nexus_ssot.ledger.domain:EntryEvent",
    EntryCreated: "nexus_ssot.ledger.domain:EntryCreated",
    EntryUpdated: "nexus_ssot.ledger.domain:EntryUpdated",
    EntryPatched: "nexus_ssot.ledger.domain:EntryPatched",
    EntryDeleted: "nexus_ssot.ledger.domain:EntryDeleted",
    EntryRestored: "nexus_ssot.ledger.domain:EntryRestored",
    NamespaceConfigured: "nexus_ssot.ledger.domain:NamespaceConfigured",
}


@pytest.mark.parametrize(("cls", "topic"), STORED_TOPICS.items(),
                         ids=[cls.__qualname__ for cls in STORED_TOPICS])
def test_every_event_class_and_the_aggregate_keep_their_stored_topic(cls: type,
                                                                     topic: str) -> None:
    assert get_topic(cls) == topic
    assert resolve_topic(topic) is cls


def test_the_event_type_of_each_stored_topic_is_its_class_s() -> None:
    assert {STORED_TOPICS[cls]: name for cls, name in EVENT_TYPE_NAMES.items()} == TYPE_OF_TOPIC


def test_an_event_is_stored_under_its_topic() -> None:
    event = decide(None, Put(NS, KEY, document={"a": 1}), ctx(), LIMITS)
    stored = Mapper(transcoder=OrjsonTranscoder()).to_stored_event(event)
    assert stored.topic == "nexus_ssot.ledger.domain:EntryCreated"


# --- evolve -------------------------------------------------------------------------------

SCENARIO: list[Command] = [
    Put(NS, KEY, Expectation(if_none_match=True), document={"status": "new", "items": []}),
    MergePatch(NS, KEY, Expectation(if_match=1), patch={"status": "open", "note": "hi"}),
    JsonPatch(NS, KEY, operations=[
        {"op": "add", "path": "/items/-", "value": {"sku": "A", "qty": 1}},
        {"op": "copy", "from": "/items/0", "path": "/items/-"},
        {"op": "replace", "path": "/items/1/sku", "value": "B"},
    ]),
    Put(NS, KEY, Expectation(must_exist=True), document={"status": "paid", "items": []}),
    Delete(NS, KEY, Expectation(if_match=4)),
    Restore(NS, KEY, from_version=3, document={"status": "open", "restored": True}),
    Delete(NS, KEY),
    Put(NS, KEY, Expectation(if_none_match=True), document={"status": "again"}),
    MergePatch(NS, KEY, patch={"status": None}),
]


def test_a_scenario_numbers_versions_consecutively_with_one_event_type_each() -> None:
    _, events = run(SCENARIO)
    assert [type(e) for e in events] == [
        EntryCreated, EntryPatched, EntryPatched, EntryUpdated, EntryDeleted,
        EntryRestored, EntryDeleted, EntryCreated, EntryPatched,
    ]
    assert [e.originator_version for e in events] == list(range(1, 10))
    assert {e.originator_id for e in events} == {stream_id(NS, KEY)}
    assert len({e.event_id for e in events}) == len(events)


def test_every_recorded_patch_turns_the_previous_document_into_the_new_one() -> None:
    state: EntryState | None = None
    for command in SCENARIO:
        event = decide(state, command, ctx(), LIMITS)
        after = apply_recorded_patch(previous_document(state), event)
        assert canon(after) == canon(event.document), type(event).__name__
        state = evolve(state, event)


def test_folding_the_decided_events_reproduces_the_state() -> None:
    state, events = run(SCENARIO)
    folded: EntryState | None = None
    for event in events:
        folded = evolve(folded, event)
    assert folded == state == EntryState(NS, KEY, 9, {}, deleted=False)


def test_folding_a_delete_marks_the_entry_deleted_and_keeps_its_version() -> None:
    state, _ = run(SCENARIO[:5])
    assert state == EntryState(NS, KEY, 5, None, deleted=True)


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(recorded(EntryUpdated, 2, [1, 2, 3]), id="array document"),
        pytest.param(recorded(EntryUpdated, 2, "plain text"), id="string document"),
        pytest.param(recorded(EntryUpdated, 2, nested(100)), id="100 levels deep"),
        pytest.param(recorded(EntryCreated, 1, {"blob": "x" * 2_000_000}), id="2 MB document"),
        pytest.param(recorded(EntryPatched, 7, {"a": 1}, namespace="Old NS", key="a//b"),
                     id="address no longer valid"),
        pytest.param(recorded(EntryRestored, 3, None, restored_from_version=99),
                     id="restore of a missing version"),
    ],
)
def test_evolve_accepts_history_that_todays_rules_would_reject(event: EntryEvent) -> None:
    state = evolve(None, event)
    assert state.version == event.originator_version
    assert state.document is event.document
    assert (state.namespace, state.key) == (event.namespace, event.key)
    assert state.deleted is False


def test_evolve_folds_legacy_events_onto_any_state() -> None:
    events = [
        recorded(EntryCreated, 1, nested(100)),
        recorded(EntryDeleted, 2, None),
        recorded(EntryDeleted, 3, None),  # deleting a deleted entry: not allowed today
        recorded(EntryPatched, 4, ["patched", "while", "deleted"]),
    ]
    state: EntryState | None = None
    seen = []
    for event in events:
        state = evolve(state, event)
        seen.append((state.version, state.deleted))
    assert seen == [(1, False), (2, True), (3, True), (4, False)]
    assert state == EntryState(NS, KEY, 4, ["patched", "while", "deleted"])


# --- the Entry aggregate ------------------------------------------------------------------


def test_project_aggregate_builds_an_entry_whose_state_is_the_folded_state() -> None:
    state, events = run(SCENARIO)
    entry = project_aggregate(None, events)
    assert isinstance(entry, Entry)
    assert entry.id == stream_id(NS, KEY)
    assert entry.state == state
    assert entry.version == events[-1].originator_version == 9
    assert entry.modified_on == events[-1].timestamp


def test_mutating_event_by_event_tracks_state_and_version_at_every_step() -> None:
    _, events = run(SCENARIO)
    entry: Any = None
    folded: EntryState | None = None
    for event in events:
        entry = event.mutate(entry)
        folded = evolve(folded, event)
        assert entry.state == folded
        assert entry.version == event.originator_version


def test_the_aggregate_loads_legacy_history_too() -> None:
    events = [
        recorded(EntryCreated, 1, [1, 2]),
        recorded(EntryUpdated, 2, nested(100)),
        recorded(EntryDeleted, 3, None),
    ]
    entry = project_aggregate(None, events)
    assert isinstance(entry, Entry)
    assert entry.state == EntryState(NS, KEY, 3, None, deleted=True)
    assert entry.version == 3


# --- stored state, old and new ----------------------------------------------------------


def _stored_state_of_version(event: EntryEvent, class_version: int | None) -> dict[str, Any]:
    """``event``'s stored state as a ledger whose events had ``class_version`` wrote it
    (None: the first, which stored no class version)."""
    mapper = Mapper(transcoder=OrjsonTranscoder())
    state: dict[str, Any] = orjson.loads(mapper.to_stored_event(event).state)
    del state["auth"]  # added by class version 4
    if class_version is None or class_version < 3:
        del state["prev_hash"], state["hash"]
    if class_version is None or class_version < 2:
        del state["resolution"]
    if class_version is None:
        del state["class_version"]
    else:
        state["class_version"] = class_version
    return state


@pytest.mark.parametrize("class_version", [None, 2, 3])
def test_events_from_before_auth_load_with_none(class_version: int | None) -> None:
    mapper = Mapper(transcoder=OrjsonTranscoder())
    event = decide(None, Put(NS, KEY, document={"a": 1}), ctx(), LIMITS)
    stored = mapper.to_stored_event(event)
    old = StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                      orjson.dumps(_stored_state_of_version(event, class_version)))
    loaded = mapper.to_domain_event(old)
    assert isinstance(loaded, EntryCreated)
    assert loaded.auth is None
    assert (loaded.actor, loaded.document, loaded.event_id) == \
        (event.actor, event.document, event.event_id)


def test_an_events_auth_is_stored_and_loaded_with_it() -> None:
    mapper = Mapper(transcoder=OrjsonTranscoder())
    auth = {"method": "oidc", "issuer": "https://idp.example", "on_behalf_of": "alice"}
    event = decide(None, Put(NS, KEY, document={"a": 1}), ctx(auth=auth), LIMITS)
    stored = mapper.to_stored_event(event)
    state = orjson.loads(stored.state)
    assert state["class_version"] == 5 and state["auth"] == auth
    assert mapper.to_domain_event(stored).auth == auth


def test_a_state_placed_at_its_commit_is_the_state_replaced_there() -> None:
    """``EntryState.placed`` (the writer's, once per committed event) is
    ``dataclasses.replace`` of the position and commit time: every other field kept."""
    state = EntryState("ns", "k", 3, {"a": [1]}, deleted=True, hash="ab" * 32,
                       event_id=uuid4())
    at = datetime(2026, 12, 6, tzinfo=UTC)
    placed = state.placed(42, at)
    assert dataclasses.astuple(placed) == dataclasses.astuple(
        dataclasses.replace(state, position=42, recorded_at=at))
    assert [f.name for f in dataclasses.fields(EntryState)][-2:] == ["position",
                                                                    "recorded_at"]
