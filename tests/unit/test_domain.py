"""The pure domain of the ledger: what ``decide`` accepts and records, what it refuses and
why, and how ``evolve`` folds any recorded history back into state. No I/O, no mocks."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jsonpatch
import orjson
import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.persistence import Mapper
from eventsourcing.utils import get_topic, resolve_topic

from nexus_ssot.ledger.domain import (
    EVENT_TYPE_NAMES,
    RESERVED_LAST_SEGMENTS,
    TYPE_OF_TOPIC,
    Command,
    Context,
    Delete,
    Entry,
    EntryCreated,
    EntryDeleted,
    EntryEvent,
    EntryPatched,
    EntryRestored,
    EntryState,
    EntryUpdated,
    Expectation,
    JsonPatch,
    Limits,
    MergePatch,
    NamespaceConfigured,
    Put,
    Replay,
    Restore,
    apply_json_patch,
    check_document,
    check_json_patch,
    check_key,
    check_namespace,
    configure,
    decide,
    diff,
    evolve,
    json_depth,
    stream_id,
)
from nexus_ssot.ledger.errors import (
    DocumentTooLarge,
    EntryGone,
    InvalidInput,
    InvalidPatch,
    InvalidUnicode,
    LedgerError,
    NotFound,
    PatchFailed,
    PreconditionFailed,
)
from nexus_ssot.ledger.store import OrjsonTranscoder

NS = "orders"
KEY = "eu/2024/order-1"
LIMITS = Limits()
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

_ids = iter(range(1, 1_000_000))


def ctx(**overrides: Any) -> Context:
    """A fresh context: a new event id and a later timestamp on every call."""
    n = next(_ids)
    fields: dict[str, Any] = {
        "event_id": UUID(int=n),
        "timestamp": T0 + timedelta(seconds=n),
        "actor": "alice",
        "correlation_id": f"corr-{n}",
    }
    fields.update(overrides)
    return Context(**fields)


def canon(value: Any) -> bytes:
    """Type-strict JSON equality (1, 1.0 and true are all different here)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def apply_recorded_patch(previous: Any, event: EntryEvent) -> Any:
    """What a consumer gets by applying the event's RFC 6902 patch with a stock library."""
    return jsonpatch.apply_patch(copy.deepcopy(previous), event.patch)


def previous_document(state: EntryState | None) -> Any:
    return None if state is None or state.deleted else state.document


def run(
    commands: Iterable[Command], state: EntryState | None = None, limits: Limits = LIMITS
) -> tuple[EntryState | None, list[EntryEvent]]:
    """Decide each command against the state so far; fold each event in."""
    events = []
    for command in commands:
        event = decide(state, command, ctx(), limits)
        events.append(event)
        state = evolve(state, event)
    return state, events


def nested(depth: int) -> Any:
    """An object nested ``depth`` levels deep: ``{"a": {"a": ... 1}}``."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def recorded(
    cls: type[EntryEvent], version: int, document: Any, *, namespace: str = NS,
    key: str = KEY, **extra: Any,
) -> EntryEvent:
    """An event built directly, as it might sit in old history (no validation at all)."""
    return cls(
        originator_id=stream_id(namespace, key),
        originator_version=version,
        timestamp=T0 + timedelta(minutes=version),
        event_id=UUID(int=10_000 + version),
        namespace=namespace,
        key=key,
        document=document,
        patch=[],
        actor="legacy-importer",
        reason=None,
        correlation_id=f"legacy-{version}",
        causation_id=None,
        idempotency_key=None,
        **extra,
    )


LIVE = EntryState(NS, KEY, 3, {"status": "open", "items": [1, 2], "meta": {"by": "bob"}})
GONE = EntryState(NS, KEY, 4, None, deleted=True)


# --- addressing -------------------------------------------------------------------------


def test_stream_id_is_stable_for_the_same_namespace_and_key() -> None:
    assert stream_id(NS, KEY) == stream_id(NS, KEY)
    assert isinstance(stream_id(NS, KEY), UUID)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((NS, KEY), (NS, KEY + "x")),
        ((NS, KEY), ("other", KEY)),
        (("ab", "c"), ("a", "bc")),
        (("a", "b/c"), ("a-b", "c")),
    ],
)
def test_different_entries_get_different_stream_ids(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    assert stream_id(*a) != stream_id(*b)


@pytest.mark.parametrize(
    "key",
    ["k", "a/b/c", "A.b_c-D", "...", "v1.2", "history/of/it", "my-history", "x/histories",
     "a" * 512, "/".join(["s"] * 256)],
)
def test_valid_keys_are_accepted_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("/a", id="leading slash"),
        pytest.param("a/", id="trailing slash"),
        pytest.param("a//b", id="empty segment"),
        pytest.param(".", id="dot"),
        pytest.param("a/./b", id="dot segment"),
        pytest.param("..", id="dotdot"),
        pytest.param("a/../b", id="dotdot segment"),
        pytest.param("a b", id="space"),
        pytest.param("a?b", id="question mark"),
        pytest.param("a%2Fb", id="percent"),
        pytest.param("caf\u00e9", id="non-ascii"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("a" * 513, id="too long"),
        *(pytest.param(f"x/{s}", id=f"reserved {s}") for s in sorted(RESERVED_LAST_SEGMENTS)),
        pytest.param("history", id="reserved alone"),
    ],
)
def test_invalid_keys_are_rejected_naming_the_key_field(key: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_key(key)
    assert type(caught.value) is InvalidInput
    assert caught.value.code == "invalid_key"
    assert caught.value.field == "key"


@pytest.mark.parametrize("namespace", ["a", "0ns", "my_ns-1", "a" * 63])
def test_valid_namespaces_are_accepted_unchanged(namespace: str) -> None:
    assert check_namespace(namespace) == namespace


@pytest.mark.parametrize(
    "namespace",
    ["", "Orders", "_ns", "-ns", "a.b", "a/b", "ns ", "n\u00e9", "a" * 64],
)
def test_invalid_namespaces_are_rejected_naming_the_namespace_field(namespace: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_namespace(namespace)
    assert caught.value.code == "invalid_namespace"
    assert caught.value.field == "namespace"


@pytest.mark.parametrize("check", [check_namespace, check_key], ids=["namespace", "key"])
def test_a_trailing_newline_is_not_a_valid_namespace_or_key(check: Any) -> None:
    with pytest.raises(InvalidInput):
        check("orders\n")


# --- documents -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        (1, 0), ("s", 0), (None, 0), (True, 0),
        ({}, 1), ([], 1), ({"a": 1}, 1), ([1, "x", None], 1),
        ({"a": {"b": []}}, 3), ([[1], [[2]]], 3), ({"a": 1, "b": {"c": {}}}, 3),
        (nested(100), 100),
    ],
)
def test_json_depth_counts_nesting_levels(value: Any, depth: int) -> None:
    assert json_depth(value) == depth


def test_check_document_returns_the_canonical_encoding() -> None:
    assert check_document({"a": [1, True, None]}, LIMITS) == b'{"a":[1,true,null]}'


@pytest.mark.parametrize("document", [[1, 2], "text", 42, 1.5, True, None])
def test_non_object_documents_are_refused_by_default(document: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_document(document, LIMITS)
    assert caught.value.code == "document_not_object"
    assert caught.value.field == "document"


@pytest.mark.parametrize("document", [[1, 2], "text", 42, 1.5, True, None])
def test_non_object_documents_are_allowed_when_the_namespace_allows_them(
    document: Any,
) -> None:
    assert check_document(document, Limits(allow_non_object=True)) == orjson.dumps(document)


def test_a_document_exactly_at_the_depth_limit_is_accepted_and_one_deeper_is_not() -> None:
    limits = Limits(max_depth=5)
    check_document(nested(5), limits)
    with pytest.raises(InvalidInput) as caught:
        check_document(nested(6), limits)
    assert caught.value.code == "document_too_deep"


def test_a_document_exactly_at_the_size_limit_is_accepted_and_one_byte_more_is_not() -> None:
    document = {"blob": "x" * 20}
    size = len(orjson.dumps(document))
    check_document(document, Limits(max_document_bytes=size))
    with pytest.raises(DocumentTooLarge) as caught:
        check_document(document, Limits(max_document_bytes=size - 1))
    assert caught.value.code == "document_too_large"
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.field == "document"


# --- decide: the events ----------------------------------------------------------------


def test_put_on_an_absent_entry_creates_it_at_version_1() -> None:
    document = {"status": "new"}
    event = decide(None, Put(NS, KEY, document=document), ctx(), LIMITS)
    assert type(event) is EntryCreated
    assert event.originator_version == 1
    assert event.originator_id == stream_id(NS, KEY)
    assert (event.namespace, event.key) == (NS, KEY)
    assert event.document == document
    assert event.patch == [{"op": "add", "path": "", "value": document}]
    assert apply_recorded_patch(None, event) == document


def test_put_on_a_live_entry_updates_it_at_the_next_version() -> None:
    document = {"status": "paid", "items": [1, 2, 3]}
    event = decide(LIVE, Put(NS, KEY, document=document), ctx(), LIMITS)
    assert type(event) is EntryUpdated
    assert event.originator_version == LIVE.version + 1
    assert event.originator_id == stream_id(NS, KEY)
    assert event.document == document
    assert canon(apply_recorded_patch(LIVE.document, event)) == canon(document)


def test_put_of_an_identical_document_still_records_a_version_with_an_empty_patch() -> None:
    event = decide(LIVE, Put(NS, KEY, document=copy.deepcopy(LIVE.document)), ctx(), LIMITS)
    assert type(event) is EntryUpdated
    assert event.originator_version == 4
    assert event.patch == []


def test_put_after_a_delete_recreates_the_entry_at_the_next_version() -> None:
    state, events = run([
        Put(NS, KEY, document={"v": 1}),
        Delete(NS, KEY),
        Put(NS, KEY, document={"v": 2}),
    ])
    assert [type(e) for e in events] == [EntryCreated, EntryDeleted, EntryCreated]
    assert [e.originator_version for e in events] == [1, 2, 3]
    assert {e.originator_id for e in events} == {stream_id(NS, KEY)}
    assert events[2].patch == [{"op": "add", "path": "", "value": {"v": 2}}]
    assert state == EntryState(NS, KEY, 3, {"v": 2}, deleted=False)


def test_a_type_change_of_a_value_shows_up_in_the_patch() -> None:
    state = EntryState(NS, KEY, 1, {"flag": 1})
    event = decide(state, Put(NS, KEY, document={"flag": True}), ctx(), LIMITS)
    assert event.patch == [{"op": "replace", "path": "/flag", "value": True}]
    assert canon(apply_recorded_patch(state.document, event)) == canon({"flag": True})


def test_merge_patch_follows_the_rfc_7386_example() -> None:
    original = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-555-1234",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    state = EntryState(NS, KEY, 7, original)
    event = decide(state, MergePatch(NS, KEY, patch=patch), ctx(), LIMITS)
    expected = {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-555-1234",
    }
    assert type(event) is EntryPatched
    assert event.originator_version == 8
    assert event.document == expected
    assert canon(apply_recorded_patch(original, event)) == canon(expected)


@pytest.mark.parametrize(
    ("before", "patch", "after"),
    [
        pytest.param({"a": 1, "b": 2}, {"a": None}, {"b": 2}, id="null removes a member"),
        pytest.param({"a": 1}, {"zzz": None}, {"a": 1}, id="null on a missing member"),
        pytest.param({"a": {"b": 1, "c": 2}}, {"a": {"c": None}}, {"a": {"b": 1}},
                     id="null removes a nested member"),
        pytest.param({"a": 1}, {"a": {"b": 2}}, {"a": {"b": 2}},
                     id="object replaces a scalar"),
        pytest.param({}, {"a": {"b": None, "c": 1}}, {"a": {"c": 1}},
                     id="nulls inside a new member are dropped"),
        pytest.param({"a": [1, 2, 3]}, {"a": [4]}, {"a": [4]}, id="arrays are replaced"),
        pytest.param({"a": 1}, {}, {"a": 1}, id="empty patch changes nothing"),
    ],
)
def test_merge_patch_semantics(before: Any, patch: Any, after: Any) -> None:
    state = EntryState(NS, KEY, 1, before)
    event = decide(state, MergePatch(NS, KEY, patch=patch), ctx(), LIMITS)
    assert type(event) is EntryPatched
    assert event.document == after
    assert canon(apply_recorded_patch(before, event)) == canon(after)


JSON_PATCH_CASES = [
    pytest.param([{"op": "add", "path": "/items/1", "value": 9}],
                 {"status": "open", "items": [1, 9, 2], "meta": {"by": "bob"}}, id="add"),
    pytest.param([{"op": "add", "path": "/items/-", "value": 3}],
                 {"status": "open", "items": [1, 2, 3], "meta": {"by": "bob"}},
                 id="add to end"),
    pytest.param([{"op": "remove", "path": "/meta"}],
                 {"status": "open", "items": [1, 2]}, id="remove"),
    pytest.param([{"op": "replace", "path": "/status", "value": "paid"}],
                 {"status": "paid", "items": [1, 2], "meta": {"by": "bob"}}, id="replace"),
    pytest.param([{"op": "move", "from": "/meta/by", "path": "/owner"}],
                 {"status": "open", "items": [1, 2], "meta": {}, "owner": "bob"}, id="move"),
    pytest.param([{"op": "copy", "from": "/items", "path": "/backup"}],
                 {"status": "open", "items": [1, 2], "meta": {"by": "bob"}, "backup": [1, 2]},
                 id="copy"),
    pytest.param([{"op": "test", "path": "/status", "value": "open"}],
                 {"status": "open", "items": [1, 2], "meta": {"by": "bob"}}, id="test"),
    pytest.param(
        [
            {"op": "test", "path": "/status", "value": "open"},
            {"op": "replace", "path": "/status", "value": "paid"},
            {"op": "add", "path": "/paid", "value": {"at": "2024-05-01"}},
            {"op": "copy", "from": "/meta/by", "path": "/paid/by"},
            {"op": "move", "from": "/items", "path": "/lines"},
            {"op": "remove", "path": "/meta"},
        ],
        {"status": "paid", "paid": {"at": "2024-05-01", "by": "bob"}, "lines": [1, 2]},
        id="all six in order",
    ),
]


@pytest.mark.parametrize(("operations", "after"), JSON_PATCH_CASES)
def test_json_patch_applies_rfc_6902_operations(operations: Any, after: Any) -> None:
    event = decide(LIVE, JsonPatch(NS, KEY, operations=operations), ctx(), LIMITS)
    assert type(event) is EntryPatched
    assert event.originator_version == LIVE.version + 1
    assert event.originator_id == stream_id(NS, KEY)
    assert event.document == after
    assert canon(apply_recorded_patch(LIVE.document, event)) == canon(after)


def test_delete_records_a_null_document_and_a_whole_document_patch() -> None:
    event = decide(LIVE, Delete(NS, KEY), ctx(), LIMITS)
    assert type(event) is EntryDeleted
    assert event.originator_version == LIVE.version + 1
    assert event.originator_id == stream_id(NS, KEY)
    assert event.document is None
    assert [op["path"] for op in event.patch] == [""]
    assert event.patch == [{"op": "replace", "path": "", "value": None}]
    assert apply_recorded_patch(LIVE.document, event) is None
    assert evolve(LIVE, event) == EntryState(NS, KEY, 4, None, deleted=True)


def test_restore_on_a_live_entry_brings_back_an_earlier_document() -> None:
    old = {"status": "draft"}
    event = decide(LIVE, Restore(NS, KEY, from_version=1, document=old), ctx(), LIMITS)
    assert type(event) is EntryRestored
    assert event.restored_from_version == 1
    assert event.originator_version == LIVE.version + 1
    assert event.originator_id == stream_id(NS, KEY)
    assert event.document == old
    assert canon(apply_recorded_patch(LIVE.document, event)) == canon(old)
    assert evolve(LIVE, event) == EntryState(NS, KEY, 4, old)


def test_restore_on_a_deleted_entry_undeletes_it() -> None:
    old = {"status": "open"}
    event = decide(GONE, Restore(NS, KEY, from_version=3, document=old), ctx(), LIMITS)
    assert type(event) is EntryRestored
    assert event.originator_version == GONE.version + 1
    assert event.restored_from_version == 3
    assert event.patch == [{"op": "add", "path": "", "value": old}]
    assert evolve(GONE, event) == EntryState(NS, KEY, 5, old, deleted=False)


def test_restore_of_the_current_version_is_allowed() -> None:
    event = decide(
        LIVE, Restore(NS, KEY, from_version=3, document=LIVE.document), ctx(), LIMITS
    )
    assert type(event) is EntryRestored
    assert event.patch == []


@pytest.mark.parametrize(
    "document", [[1, 2], "text", 7, None], ids=["array", "string", "number", "null"]
)
def test_a_namespace_that_allows_non_objects_stores_them(document: Any) -> None:
    limits = Limits(allow_non_object=True)
    state, events = run([Put(NS, KEY, document=document)], limits=limits)
    assert type(events[0]) is EntryCreated
    assert events[0].document == document
    assert state == EntryState(NS, KEY, 1, document)


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


# --- decide: metadata ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "command"),
    [
        pytest.param(None, Put(NS, KEY, document={"a": 1}), id="create"),
        pytest.param(LIVE, Put(NS, KEY, document={"a": 1}), id="update"),
        pytest.param(LIVE, MergePatch(NS, KEY, patch={"a": 1}), id="merge patch"),
        pytest.param(LIVE, JsonPatch(NS, KEY, operations=[]), id="json patch"),
        pytest.param(LIVE, Delete(NS, KEY), id="delete"),
        pytest.param(GONE, Restore(NS, KEY, from_version=1, document={}), id="restore"),
    ],
)
def test_the_context_is_carried_on_every_event(state: EntryState | None, command: Command) -> None:
    context = Context(
        event_id=UUID("12345678-1234-5678-1234-567812345678"),
        timestamp=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        actor="svc:billing",
        correlation_id="req-42",
        reason="customer asked",
        causation_id="evt-41",
        idempotency_key="idem-7",
    )
    event = decide(state, command, context, LIMITS)
    assert event.event_id == context.event_id
    assert event.timestamp == context.timestamp
    assert event.actor == "svc:billing"
    assert event.correlation_id == "req-42"
    assert event.reason == "customer asked"
    assert event.causation_id == "evt-41"
    assert event.idempotency_key == "idem-7"


def test_optional_context_fields_default_to_none_on_the_event() -> None:
    event = decide(None, Put(NS, KEY, document={}), ctx(), LIMITS)
    assert (event.reason, event.causation_id, event.idempotency_key) == (None, None, None)


# --- decide: preconditions that hold --------------------------------------------------


def test_if_match_with_the_current_version_is_accepted() -> None:
    command = Put(NS, KEY, Expectation(if_match=3), document={"x": 1})
    assert decide(LIVE, command, ctx(), LIMITS).originator_version == 4


def test_if_none_match_creates_an_absent_entry() -> None:
    command = Put(NS, KEY, Expectation(if_none_match=True), document={"x": 1})
    assert type(decide(None, command, ctx(), LIMITS)) is EntryCreated


def test_if_none_match_is_allowed_after_a_delete() -> None:
    command = Put(NS, KEY, Expectation(if_none_match=True), document={"x": 1})
    event = decide(GONE, command, ctx(), LIMITS)
    assert type(event) is EntryCreated
    assert event.originator_version == GONE.version + 1


def test_if_match_star_is_accepted_on_a_live_entry() -> None:
    command = MergePatch(NS, KEY, Expectation(must_exist=True), patch={"x": 1})
    assert type(decide(LIVE, command, ctx(), LIMITS)) is EntryPatched


# --- decide: rejections ----------------------------------------------------------------

IF_MATCH_2 = Expectation(if_match=2)
OPS_OK = [{"op": "test", "path": "/status", "value": "open"}]


def jp(*operations: Any) -> JsonPatch:
    return JsonPatch(NS, KEY, operations=list(operations))


REJECTIONS = [
    # id, state, command, limits, error type, code, field, extra
    ("invalid namespace", None, Put("Orders", KEY, document={}), LIMITS,
     InvalidInput, "invalid_namespace", "namespace", {}),
    ("key with an empty segment", None, Put(NS, "a//b", document={}), LIMITS,
     InvalidInput, "invalid_key", "key", {}),
    ("key with ..", LIVE, Delete(NS, "a/../b"), LIMITS,
     InvalidInput, "invalid_key", "key", {}),
    ("key with bad characters", None, Put(NS, "a b", document={}), LIMITS,
     InvalidInput, "invalid_key", "key", {}),
    ("key too long", None, Put(NS, "k" * 513, document={}), LIMITS,
     InvalidInput, "invalid_key", "key", {}),
    ("key with a reserved last segment", None, Put(NS, "orders/history", document={}),
     LIMITS, InvalidInput, "invalid_key", "key", {}),
    ("array document", None, Put(NS, KEY, document=[1]), LIMITS,
     InvalidInput, "document_not_object", "document", {}),
    ("string document", LIVE, Put(NS, KEY, document="x"), LIMITS,
     InvalidInput, "document_not_object", "document", {}),
    ("null document", None, Put(NS, KEY), LIMITS,
     InvalidInput, "document_not_object", "document", {}),
    ("merge patch turning the document into an array", LIVE,
     MergePatch(NS, KEY, patch=[1]), LIMITS,
     InvalidInput, "document_not_object", "document", {}),
    ("json patch replacing the whole document by a string", LIVE,
     jp({"op": "replace", "path": "", "value": "x"}), LIMITS,
     InvalidInput, "document_not_object", "document", {}),
    ("too deep document", None, Put(NS, KEY, document=nested(33)), LIMITS,
     InvalidInput, "document_too_deep", "document", {}),
    ("json patch making the document too deep", LIVE,
     jp({"op": "add", "path": "/deep", "value": nested(32)}), LIMITS,
     InvalidInput, "document_too_deep", "document", {}),
    ("too large document", None, Put(NS, KEY, document={"blob": "x" * 100}),
     Limits(max_document_bytes=64), DocumentTooLarge, "document_too_large", "document", {}),
    ("merge patch making the document too large", LIVE,
     MergePatch(NS, KEY, patch={"blob": "x" * 100}), Limits(max_document_bytes=100),
     DocumentTooLarge, "document_too_large", "document", {}),
    ("restore of a non-object document", LIVE,
     Restore(NS, KEY, from_version=1, document=[1]), LIMITS,
     InvalidInput, "document_not_object", "document", {}),
    ("lone surrogate deep in a document", None,
     Put(NS, KEY, document={"a": {"b": [1, "x\ud800"]}}), LIMITS,
     InvalidUnicode, "invalid_unicode", "document.a.b[1]", {}),
    ("lone surrogate in a member name of a document", LIVE,
     Put(NS, KEY, document={"a": [{"\udc00": 1}]}), LIMITS,
     InvalidUnicode, "invalid_unicode", 'document.a[0]["\\udc00"]', {}),
    ("lone surrogate in a merge patch", LIVE,
     MergePatch(NS, KEY, patch={"meta": {"by": "\udbff"}}), LIMITS,
     InvalidUnicode, "invalid_unicode", "patch.meta.by", {}),
    ("lone surrogate in a member a merge patch removes", LIVE,
     MergePatch(NS, KEY, patch={"\ud800": None}), LIMITS,
     InvalidUnicode, "invalid_unicode", 'patch["\\ud800"]', {}),
    ("lone surrogate in a json patch value", LIVE,
     jp({"op": "add", "path": "/x", "value": {"y": ["\udfff"]}}), LIMITS,
     InvalidUnicode, "invalid_unicode", "patch[0].value.y[0]", {}),
    ("lone surrogate in a json patch path", LIVE, jp({"op": "remove", "path": "/\ud800"}),
     LIMITS, InvalidUnicode, "invalid_unicode", "patch[0].path", {}),
    ("lone surrogate in a json patch from", LIVE,
     jp(*OPS_OK, {"op": "copy", "from": "/\ud800", "path": "/x"}), LIMITS,
     InvalidUnicode, "invalid_unicode", "patch[1].from", {}),
    ("lone surrogate in a restored document", GONE,
     Restore(NS, KEY, from_version=1, document={"\ud800": 1}), LIMITS,
     InvalidUnicode, "invalid_unicode", 'document["\\ud800"]', {}),
    ("lone surrogate in a namespace's description", None,
     configure(NS, {"description": "\ud800"}), LIMITS,
     InvalidUnicode, "invalid_unicode", "description", {}),
    ("lone surrogate in a setting's name", None, configure(NS, {"\udc00": 1}), LIMITS,
     InvalidUnicode, "invalid_unicode", '["\\udc00"]', {}),
    ("stale If-Match on put", LIVE, Put(NS, KEY, IF_MATCH_2, document={}), LIMITS,
     PreconditionFailed, "version_conflict", "If-Match", {"current_version": 3}),
    ("stale If-Match on delete", LIVE, Delete(NS, KEY, IF_MATCH_2), LIMITS,
     PreconditionFailed, "version_conflict", "If-Match", {"current_version": 3}),
    ("future If-Match on json patch", LIVE,
     JsonPatch(NS, KEY, Expectation(if_match=4), operations=OPS_OK), LIMITS,
     PreconditionFailed, "version_conflict", "If-Match", {"current_version": 3}),
    ("If-Match on an absent entry", None,
     Put(NS, KEY, Expectation(if_match=1), document={}), LIMITS,
     PreconditionFailed, "version_conflict", "If-Match", {"current_version": 0}),
    ("If-Match 0 on an absent entry", None,
     Put(NS, KEY, Expectation(if_match=0), document={}), LIMITS,
     PreconditionFailed, "version_conflict", "If-Match", {"current_version": 0}),
    ("If-Match of the deleted version", GONE,
     Put(NS, KEY, Expectation(if_match=4), document={}), LIMITS,
     PreconditionFailed, "version_conflict", "If-Match", {"current_version": 4}),
    ("If-Match of the version before the delete", GONE,
     Restore(NS, KEY, Expectation(if_match=3), from_version=3, document={}), LIMITS,
     PreconditionFailed, "version_conflict", "If-Match", {"current_version": 4}),
    ("If-None-Match on a live entry", LIVE,
     Put(NS, KEY, Expectation(if_none_match=True), document={}), LIMITS,
     PreconditionFailed, "entry_exists", "If-None-Match", {"current_version": 3}),
    ("If-Match: * on an absent entry", None,
     Put(NS, KEY, Expectation(must_exist=True), document={}), LIMITS,
     PreconditionFailed, "entry_not_found", "If-Match", {"current_version": 0}),
    ("If-Match: * on a deleted entry", GONE,
     Put(NS, KEY, Expectation(must_exist=True), document={}), LIMITS,
     PreconditionFailed, "entry_not_found", "If-Match", {"current_version": 4}),
    ("merge patch on an absent entry", None, MergePatch(NS, KEY, patch={"a": 1}), LIMITS,
     NotFound, "entry_not_found", "key", {}),
    ("json patch on an absent entry", None, jp(*OPS_OK), LIMITS,
     NotFound, "entry_not_found", "key", {}),
    ("delete of an absent entry", None, Delete(NS, KEY), LIMITS,
     NotFound, "entry_not_found", "key", {}),
    ("restore of an absent entry", None, Restore(NS, KEY, from_version=1, document={}),
     LIMITS, NotFound, "entry_not_found", "key", {}),
    ("merge patch on a deleted entry", GONE, MergePatch(NS, KEY, patch={"a": 1}), LIMITS,
     EntryGone, "entry_deleted", "key", {"deleted_version": 4}),
    ("json patch on a deleted entry", GONE, jp(*OPS_OK), LIMITS,
     EntryGone, "entry_deleted", "key", {"deleted_version": 4}),
    ("delete of a deleted entry", GONE, Delete(NS, KEY), LIMITS,
     EntryGone, "entry_deleted", "key", {"deleted_version": 4}),
    ("json patch that is an object", LIVE,
     JsonPatch(NS, KEY, operations={"op": "add", "path": "/a", "value": 1}), LIMITS,
     InvalidPatch, "invalid_patch", "patch", {}),
    ("json patch that is null", LIVE, JsonPatch(NS, KEY), LIMITS,
     InvalidPatch, "invalid_patch", "patch", {}),
    ("operation that is not an object", LIVE, jp(*OPS_OK, "add"), LIMITS,
     InvalidPatch, "invalid_patch", "patch[1]", {"op_index": 1}),
    ("non-RFC append operation", LIVE,
     jp(*OPS_OK, {"op": "append", "path": "/status", "value": "ed"}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[1].op", {"op_index": 1}),
    ("unknown operation", LIVE, jp({"op": "increment", "path": "/n", "value": 1}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[0].op", {"op_index": 0}),
    ("operation without op", LIVE, jp({"path": "/n", "value": 1}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[0].op", {"op_index": 0}),
    ("operation name in the wrong case", LIVE, jp({"op": "ADD", "path": "/n", "value": 1}),
     LIMITS, InvalidPatch, "invalid_patch", "patch[0].op", {"op_index": 0}),
    ("add without path", LIVE, jp({"op": "add", "value": 1}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[0].path", {"op_index": 0}),
    ("remove without path", LIVE, jp(*OPS_OK, *OPS_OK, {"op": "remove"}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[2].path", {"op_index": 2}),
    ("add without value", LIVE, jp({"op": "add", "path": "/n"}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[0].value", {"op_index": 0}),
    ("replace without value", LIVE, jp({"op": "replace", "path": "/status"}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[0].value", {"op_index": 0}),
    ("test without value", LIVE, jp({"op": "test", "path": "/status"}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[0].value", {"op_index": 0}),
    ("move without from", LIVE, jp({"op": "move", "path": "/x"}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[0].from", {"op_index": 0}),
    ("copy without from", LIVE, jp(*OPS_OK, {"op": "copy", "path": "/x"}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[1].from", {"op_index": 1}),
    ("path that is not a pointer", LIVE, jp({"op": "add", "path": "n", "value": 1}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[0].path", {"op_index": 0}),
    ("path that is not a string", LIVE, jp({"op": "remove", "path": 5}), LIMITS,
     InvalidPatch, "invalid_patch", "patch[0].path", {"op_index": 0}),
    ("from that is not a pointer", LIVE, jp({"op": "move", "from": "meta", "path": "/m"}),
     LIMITS, InvalidPatch, "invalid_patch", "patch[0].from", {"op_index": 0}),
    ("failing test operation", LIVE,
     jp(*OPS_OK, {"op": "replace", "path": "/status", "value": "paid"},
        {"op": "test", "path": "/status", "value": "open"}), LIMITS,
     PatchFailed, "patch_test_failed", "patch[2]", {"op_index": 2}),
    ("test of a missing path", LIVE, jp({"op": "test", "path": "/nope", "value": 1}), LIMITS,
     PatchFailed, "patch_test_failed", "patch[0]", {"op_index": 0}),
    ("test is type-strict", LIVE, jp({"op": "test", "path": "/items/0", "value": True}),
     LIMITS, PatchFailed, "patch_test_failed", "patch[0]", {"op_index": 0}),
    ("remove of a missing path", LIVE, jp(*OPS_OK, {"op": "remove", "path": "/nope"}),
     LIMITS, PatchFailed, "patch_failed", "patch[1]", {"op_index": 1}),
    ("replace of a missing path", LIVE,
     jp({"op": "replace", "path": "/nope", "value": 1}), LIMITS,
     PatchFailed, "patch_failed", "patch[0]", {"op_index": 0}),
    ("add past the end of an array", LIVE,
     jp({"op": "add", "path": "/items/5", "value": 1}), LIMITS,
     PatchFailed, "patch_failed", "patch[0]", {"op_index": 0}),
    ("move from a missing path", LIVE, jp({"op": "move", "from": "/nope", "path": "/x"}),
     LIMITS, PatchFailed, "patch_failed", "patch[0]", {"op_index": 0}),
    ("move into its own child", LIVE, jp({"op": "move", "from": "/meta", "path": "/meta/x"}),
     LIMITS, PatchFailed, "patch_failed", "patch[0]", {"op_index": 0}),
    ("remove of the whole document", LIVE, jp({"op": "remove", "path": ""}), LIMITS,
     PatchFailed, "patch_failed", "patch[0]", {"op_index": 0}),
    ("restore of version 0", LIVE, Restore(NS, KEY, from_version=0, document={}), LIMITS,
     NotFound, "version_not_found", "version", {}),
    ("restore of a future version", LIVE, Restore(NS, KEY, from_version=4, document={}),
     LIMITS, NotFound, "version_not_found", "version", {}),
    ("restore of a negative version", GONE, Restore(NS, KEY, from_version=-1, document={}),
     LIMITS, NotFound, "version_not_found", "version", {}),
]


@pytest.mark.parametrize(
    ("state", "command", "limits", "error", "code", "field", "extra"),
    [pytest.param(*case[1:], id=case[0]) for case in REJECTIONS],
)
def test_decide_rejects(
    state: EntryState | None,
    command: Command,
    limits: Limits,
    error: type[LedgerError],
    code: str,
    field: str,
    extra: dict[str, Any],
) -> None:
    before = copy.deepcopy(state)
    with pytest.raises(LedgerError) as caught:
        decide(state, command, ctx(), limits)
    assert type(caught.value) is error
    assert caught.value.code == code
    assert caught.value.field == field
    assert caught.value.extra == extra
    assert caught.value.message
    assert state == before


def test_expectations_are_checked_before_the_document() -> None:
    command = Put(NS, KEY, Expectation(if_match=1), document=[1])
    with pytest.raises(PreconditionFailed):
        decide(LIVE, command, ctx(), LIMITS)


def test_the_address_is_checked_before_the_expectations() -> None:
    command = Put(NS, "a//b", Expectation(if_match=99), document={})
    with pytest.raises(InvalidInput) as caught:
        decide(LIVE, command, ctx(), LIMITS)
    assert caught.value.code == "invalid_key"


@pytest.mark.parametrize("op", [["add"], {"add": 1}], ids=["list", "object"])
def test_an_op_that_is_not_a_string_is_an_invalid_patch(op: Any) -> None:
    with pytest.raises(InvalidPatch) as caught:
        decide(LIVE, jp({"op": op, "path": "/a", "value": 1}), ctx(), LIMITS)
    assert caught.value.extra == {"op_index": 0}


def test_a_path_with_an_invalid_pointer_escape_is_an_invalid_patch() -> None:
    with pytest.raises(InvalidPatch) as caught:
        decide(LIVE, jp({"op": "add", "path": "/a~2", "value": 1}), ctx(), LIMITS)
    assert caught.value.extra == {"op_index": 0}


@pytest.mark.parametrize("command", [
    Put(NS, KEY, Expectation(if_match=1), document={"status": "\ud800"}),
    MergePatch(NS, KEY, Expectation(if_match=1), patch={"\udc00": None}),
    JsonPatch(NS, KEY, Expectation(if_match=1),
              operations=[{"op": "add", "path": "/x", "value": "\udbff"}]),
], ids=["put", "merge patch", "json patch"])
def test_a_stale_write_holding_a_lone_surrogate_is_refused_before_it_is_merged(
        command: Command) -> None:
    documents = ({"status": "new"}, {"status": "open"}, LIVE.document)
    replay = Replay(1, documents, (diff(documents[0], documents[1]),
                                   diff(documents[1], documents[2])))
    with pytest.raises(InvalidUnicode) as caught:
        decide(LIVE, command, ctx(), LIMITS, policy="merge", replay=replay)
    assert caught.value.code == "invalid_unicode"


# --- decide is pure -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(Put(NS, KEY, document={"meta": {"by": "eve"}, "items": [[1]]}), id="put"),
        pytest.param(MergePatch(NS, KEY, patch={"meta": {"by": None, "n": {"x": [1]}},
                                                "items": [[2]], "status": None}),
                     id="merge patch"),
        pytest.param(jp({"op": "add", "path": "/new", "value": {"x": []}},
                        {"op": "add", "path": "/new/x/-", "value": 1},
                        {"op": "move", "from": "/meta/by", "path": "/new/by"},
                        {"op": "copy", "from": "/items", "path": "/meta/items"},
                        {"op": "add", "path": "/meta/items/-", "value": 3},
                        {"op": "remove", "path": "/items/0"},
                        {"op": "replace", "path": "/status", "value": {"s": []}},
                        {"op": "add", "path": "/status/s/-", "value": 1}),
                     id="json patch"),
        pytest.param(Delete(NS, KEY), id="delete"),
        pytest.param(Restore(NS, KEY, from_version=1, document={"x": [1]}), id="restore"),
    ],
)
def test_decide_does_not_mutate_its_inputs(command: Command) -> None:
    state = EntryState(NS, KEY, 3, {"status": "open", "items": [1, 2], "meta": {"by": "bob"}})
    state_before = copy.deepcopy(state)
    command_before = copy.deepcopy(command)
    event = decide(state, command, ctx(), LIMITS)
    assert canon(state.document) == canon(state_before.document)
    assert state == state_before
    assert command == command_before
    assert canon(apply_recorded_patch(state.document, event)) == canon(event.document)


def test_a_rejected_json_patch_leaves_the_document_untouched() -> None:
    state = EntryState(NS, KEY, 3, {"status": "open", "items": [1, 2]})
    before = copy.deepcopy(state.document)
    operations = [
        {"op": "add", "path": "/items/-", "value": 3},
        {"op": "remove", "path": "/status"},
        {"op": "test", "path": "/status", "value": "open"},
    ]
    with pytest.raises(PatchFailed) as caught:
        decide(state, jp(*operations), ctx(), LIMITS)
    assert caught.value.extra == {"op_index": 2}
    assert state.document == before


# --- the helpers ------------------------------------------------------------------------


def test_diff_of_nothing_to_nothing_is_empty() -> None:
    assert diff(None, None) == []


def test_diff_from_nothing_adds_the_whole_document() -> None:
    assert diff(None, {"a": 1}) == [{"op": "add", "path": "", "value": {"a": 1}}]


def test_diff_to_nothing_replaces_the_whole_document_with_null() -> None:
    assert diff({"a": 1}, None) == [{"op": "replace", "path": "", "value": None}]


def test_diff_of_equal_documents_is_empty() -> None:
    assert diff({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == []


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"a": 1}, {"a": True}),
        ({"a": 1}, {"a": 1.5}),
        ({"a/b": 1, "~": 2}, {"a/b": 3, "~": {"~1": []}}),
        ({"list": [1, 2, 3, 4]}, {"list": [4, 3, 2, 1]}),
        ({"list": [{"id": 1}, {"id": 2}, {"id": 3}]}, {"list": [{"id": 3}, {"id": 1}]}),
        ({"s": "abc"}, {"s": "abcdef"}),
        ({"a": {"b": {"c": 1}}}, {"x": {"b": {"c": 1}}}),
        ({"a": [1]}, {"a": {"0": 1}}),
        ({"a": 1}, [1]),
        ("x", {"a": 1}),
    ],
)
def test_diff_gives_an_rfc_6902_patch_that_a_stock_library_applies(
    before: Any, after: Any
) -> None:
    patch = diff(before, after)
    assert check_json_patch(patch) is patch
    assert canon(jsonpatch.apply_patch(copy.deepcopy(before), patch)) == canon(after)


def test_check_json_patch_accepts_valid_operations_as_they_are() -> None:
    operations = [
        {"op": "add", "path": "", "value": None},
        {"op": "remove", "path": "/a"},
        {"op": "replace", "path": "/~0/~1", "value": 1},
        {"op": "move", "from": "/a", "path": "/b"},
        {"op": "copy", "from": "", "path": "/c"},
        {"op": "test", "path": "/d", "value": [1]},
    ]
    assert check_json_patch(operations) is operations
    assert check_json_patch([]) == []


def test_apply_json_patch_applies_operations_in_order_without_touching_the_input() -> None:
    document = {"a": [1]}
    result = apply_json_patch(document, [
        {"op": "add", "path": "/a/-", "value": 2},
        {"op": "test", "path": "/a", "value": [1, 2]},
        {"op": "copy", "from": "/a", "path": "/b"},
    ])
    assert result == {"a": [1, 2], "b": [1, 2]}
    assert document == {"a": [1]}


def test_apply_json_patch_compares_numbers_by_value_in_test() -> None:
    assert apply_json_patch({"n": 1.0}, [{"op": "test", "path": "/n", "value": 1}]) == {
        "n": 1.0
    }


def test_apply_json_patch_can_replace_the_whole_document() -> None:
    assert apply_json_patch({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]) == [1]


# --- lone surrogates ------------------------------------------------------------------------
# Half of a UTF-16 pair: no character, so no encoding. Python strings can hold one (JSON
# text "\ud800" reads as one); whichever way it comes, it is refused naming its JSON path.

SURROGATE_DOCUMENTS = [
    ({"a": "\ud800"}, "document.a"),
    ({"a": {"b": [1, {"c": "x\udfffy"}]}}, "document.a.b[1].c"),
    ({"a": {"b": [{"\udc00": 1}]}}, 'document.a.b[0]["\\udc00"]'),
    ({"ok": 1, "a b": {"\ud83d\ude00": 1}}, 'document["a b"]["\\ud83d\\ude00"]'),
    ({"a": ["\udc00\ud800"]}, "document.a[0]"),
]


@pytest.mark.parametrize(("document", "path"), SURROGATE_DOCUMENTS)
def test_check_document_refuses_a_lone_surrogate_naming_its_path(document: Any,
                                                                 path: str) -> None:
    with pytest.raises(InvalidUnicode) as caught:
        check_document(document, LIMITS)
    refused = caught.value
    assert isinstance(refused, InvalidInput)
    assert (refused.code, refused.field) == ("invalid_unicode", path)
    assert refused.message.startswith(path) and "surrogate" in refused.message
    orjson.dumps([refused.message, refused.field])  # the refusal itself can be sent


def test_a_lone_surrogate_as_the_whole_document_is_refused() -> None:
    with pytest.raises(InvalidUnicode) as caught:
        check_document("\ud800", Limits(allow_non_object=True))
    assert caught.value.field == "document"


def test_a_character_beyond_the_basic_plane_is_no_surrogate() -> None:
    assert check_document({"e": "\U0001f600"}, LIMITS) == '{"e":"\U0001f600"}'.encode()


@pytest.mark.parametrize(("document", "path"), SURROGATE_DOCUMENTS)
def test_diff_refuses_a_lone_surrogate_in_either_document(document: Any, path: str) -> None:
    for before, after in ((document, {"a": 1}), ({"a": 1}, document), (None, document),
                          (document, None)):
        with pytest.raises(InvalidUnicode) as caught:
            diff(before, after)
        assert caught.value.field == path


@pytest.mark.parametrize(("operations", "path"), [
    ([{"op": "add", "path": "/a", "value": {"b": ["\ud800"]}}], "patch[0].value.b[0]"),
    ([OPS_OK[0], {"op": "add", "path": "/a", "value": {"\udc00": 1}}],
     'patch[1].value["\\udc00"]'),
    ([{"op": "replace", "path": "/a/\udbff/b", "value": 1}], "patch[0].path"),
    ([{"op": "move", "from": "/\udfff", "path": "/a"}], "patch[0].from"),
    ([{"op": "test", "path": "/a", "value": "\ud800"}], "patch[0].value"),
])
def test_apply_json_patch_refuses_a_lone_surrogate_naming_its_path(operations: Any,
                                                                   path: str) -> None:
    for check in (check_json_patch, lambda ops: apply_json_patch({"a": {}}, ops)):
        with pytest.raises(InvalidUnicode) as caught:
            check(operations)
        assert caught.value.field == path


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
