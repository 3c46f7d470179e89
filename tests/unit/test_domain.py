"""The decision: what ``decide`` accepts and records, what it refuses and why. No I/O, no
mocks."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from nexus_ssot.ledger.addressing import stream_id
from nexus_ssot.ledger.commands import (
    Command,
    Context,
    Delete,
    Expectation,
    JsonPatch,
    MergePatch,
    Put,
    Restore,
)
from nexus_ssot.ledger.documents import Limits, diff
from nexus_ssot.ledger.domain import Unchanged, decide
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
from nexus_ssot.ledger.events import (
    EntryCreated,
    EntryDeleted,
    EntryPatched,
    EntryRestored,
    EntryState,
    EntryUpdated,
    evolve,
)
from nexus_ssot.ledger.merge import Replay
from nexus_ssot.ledger.namespace_settings import configure
from tests.unit.entries import (
    GONE,
    KEY,
    LIMITS,
    LIVE,
    NS,
    apply_recorded_patch,
    canon,
    ctx,
    nested,
    run,
)

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


def test_put_of_an_identical_document_leaves_the_entry_unchanged() -> None:
    decided = decide(LIVE, Put(NS, KEY, document=copy.deepcopy(LIVE.document)), ctx(), LIMITS)
    assert decided == Unchanged(LIVE)
    assert decided.state.version == 3


def test_a_put_that_only_reorders_members_leaves_the_entry_unchanged() -> None:
    reordered = dict(reversed(list(LIVE.document.items())))
    assert decide(LIVE, Put(NS, KEY, document=reordered), ctx(), LIMITS) == Unchanged(LIVE)


@pytest.mark.parametrize("value", [1.0, True, "1", [1]], ids=["float", "bool", "text", "list"])
def test_a_value_of_another_json_type_is_a_change(value: Any) -> None:
    state = EntryState(NS, KEY, 1, {"flag": 1})
    event = decide(state, Put(NS, KEY, document={"flag": value}), ctx(), LIMITS)
    assert type(event) is EntryUpdated
    assert event.patch == [{"op": "replace", "path": "/flag", "value": value}]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(MergePatch(NS, KEY, patch={"status": "open"}),
                     id="merge patch, same value"),
        pytest.param(MergePatch(NS, KEY, patch={"zzz": None}),
                     id="merge patch, null on a missing member"),
        pytest.param(MergePatch(NS, KEY, patch={}), id="empty merge patch"),
        pytest.param(JsonPatch(NS, KEY, operations=[]), id="empty json patch"),
        pytest.param(JsonPatch(NS, KEY, operations=[
            {"op": "test", "path": "/status", "value": "open"}]), id="json patch of tests only"),
        pytest.param(JsonPatch(NS, KEY, operations=[
            {"op": "add", "path": "/x", "value": 1}, {"op": "remove", "path": "/x"}]),
            id="json patch undoing itself"),
        pytest.param(Restore(NS, KEY, from_version=3, document=LIVE.document),
                     id="revert to the current document"),
        pytest.param(Put(NS, KEY, Expectation(if_match=3), document=LIVE.document),
                     id="if-match current"),
    ],
)
def test_a_write_that_changes_nothing_is_unchanged(command: Command) -> None:
    assert decide(LIVE, command, ctx(), LIMITS) == Unchanged(LIVE)


def test_a_stale_if_match_is_refused_even_when_the_document_would_be_equal() -> None:
    with pytest.raises(PreconditionFailed) as refused:
        decide(LIVE, Put(NS, KEY, Expectation(if_match=2), document=LIVE.document), ctx(),
               LIMITS)
    assert refused.value.code == "version_conflict"


def test_reverting_a_deleted_entry_to_its_last_document_brings_it_back() -> None:
    event = decide(GONE, Restore(NS, KEY, from_version=3, document=LIVE.document), ctx(),
                   LIMITS)
    assert type(event) is EntryRestored
    assert event.originator_version == 5


def test_setting_the_same_settings_again_is_unchanged_but_the_first_settings_are_not() -> None:
    settings = {"conflict_policy": "strict", "description": None}
    first = decide(None, configure(NS, settings), ctx(), LIMITS)
    assert first.document == settings
    state = evolve(None, first)
    assert decide(state, configure(NS, {"conflict_policy": "strict"}), ctx(), LIMITS) == \
        Unchanged(state)
    defaults = decide(None, configure(NS, {}), ctx(), LIMITS)
    assert defaults.originator_version == 1  # (the defaults, set: the namespace now exists)


def test_a_write_into_a_namespace_that_does_not_exist_is_refused_when_told_so() -> None:
    with pytest.raises(NotFound) as refused:
        decide(None, Put(NS, KEY, document={}), ctx(), LIMITS, namespace_exists=False)
    assert refused.value.code == "namespace_not_found"
    assert refused.value.field == "namespace"
    assert f"PUT /v1/namespaces/{NS}" in refused.value.message
    # its settings are what make it exist
    assert decide(None, configure(NS, {}), ctx(), LIMITS, namespace_exists=False)


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
        pytest.param({"a": {"b": 1, "c": 2}}, {"a": {"c": None}}, {"a": {"b": 1}},
                     id="null removes a nested member"),
        pytest.param({"a": 1}, {"a": {"b": 2}}, {"a": {"b": 2}},
                     id="object replaces a scalar"),
        pytest.param({}, {"a": {"b": None, "c": 1}}, {"a": {"c": 1}},
                     id="nulls inside a new member are dropped"),
        pytest.param({"a": [1, 2, 3]}, {"a": [4]}, {"a": [4]}, id="arrays are replaced"),
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


def test_restore_of_the_current_version_is_allowed_and_changes_nothing() -> None:
    decided = decide(
        LIVE, Restore(NS, KEY, from_version=3, document=LIVE.document), ctx(), LIMITS
    )
    assert decided == Unchanged(LIVE)


@pytest.mark.parametrize(
    "document", [[1, 2], "text", 7, None], ids=["array", "string", "number", "null"]
)
def test_a_namespace_that_allows_non_objects_stores_them(document: Any) -> None:
    limits = Limits(allow_non_object=True)
    state, events = run([Put(NS, KEY, document=document)], limits=limits)
    assert type(events[0]) is EntryCreated
    assert events[0].document == document
    assert state == EntryState(NS, KEY, 1, document)


# --- decide: metadata ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "command"),
    [
        pytest.param(None, Put(NS, KEY, document={"a": 1}), id="create"),
        pytest.param(LIVE, Put(NS, KEY, document={"a": 1}), id="update"),
        pytest.param(LIVE, MergePatch(NS, KEY, patch={"a": 1}), id="merge patch"),
        pytest.param(LIVE, JsonPatch(NS, KEY, operations=[
            {"op": "add", "path": "/a", "value": 1}]), id="json patch"),
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
        auth={"method": "token", "token_id": "3f2a", "on_behalf_of": "carol"},
    )
    event = decide(state, command, context, LIMITS)
    assert event.event_id == context.event_id
    assert event.timestamp == context.timestamp
    assert event.actor == "svc:billing"
    assert event.correlation_id == "req-42"
    assert event.reason == "customer asked"
    assert event.causation_id == "evt-41"
    assert event.idempotency_key == "idem-7"
    assert event.auth == {"method": "token", "token_id": "3f2a", "on_behalf_of": "carol"}


def test_optional_context_fields_default_to_none_on_the_event() -> None:
    event = decide(None, Put(NS, KEY, document={}), ctx(), LIMITS)
    assert (event.reason, event.causation_id, event.idempotency_key, event.auth) == \
        (None, None, None, None)


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
