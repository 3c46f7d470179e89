"""An event's stored state, byte for byte: every member the writer stores is covered by the
event's hash (class version 5), its bytes follow from its members, and a state that is not
exactly the writer's (a member added, renamed, removed or moved, a byte re-spelt) is told
apart, naming the member."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from eventsourcing.persistence import Mapper

from nexus_ssot.integrity.verify.log import fast_hash
from nexus_ssot.ledger import chain
from nexus_ssot.ledger.commands import (
    Delete,
    JsonPatch,
    MergePatch,
    Put,
    Restore,
)
from nexus_ssot.ledger.domain import decide
from nexus_ssot.ledger.events import (
    EVENT_TYPE_NAMES,
    EntryEvent,
    EntryRestored,
    EntryState,
    evolve,
)
from nexus_ssot.ledger.store import OrjsonTranscoder
from nexus_ssot.ledger.stored_state import (
    MEMBERS,
    expected_members,
    form_problem,
    stored_timestamp,
)
from tests.unit.entries import KEY, LIMITS, NS, ctx

MAPPER = Mapper(transcoder=OrjsonTranscoder())
AUTH = {"method": "token", "token_id": "3f2a9c", "on_behalf_of": "carol"}


def _history() -> list[EntryEvent]:
    """One event of every kind, some with auth, one with a float and keys out of order."""
    state: EntryState | None = None
    events = []
    for command, auth in [
        (Put(NS, KEY, document={"z": 1, "a": {"y": 2.5, "b": [{"k": "v", "c": None}]}}), None),
        (MergePatch(NS, KEY, patch={"m": "ünï"}), AUTH),
        (JsonPatch(NS, KEY, operations=[{"op": "add", "path": "/n", "value": 1}]), None),
        (Delete(NS, KEY), AUTH),
        (Restore(NS, KEY, from_version=1, document={"z": 1}), None),
    ]:
        event = decide(state, command, ctx(auth=auth), LIMITS)
        events.append(event)
        state = evolve(state, event)
    return events


def _stored(event: EntryEvent) -> bytes:
    return bytes(MAPPER.to_stored_event(event).state)


def _fields(state: dict[str, Any], event: EntryEvent) -> dict[str, Any]:
    return {**state, "stream": str(event.originator_id), "version": event.originator_version,
            "type": EVENT_TYPE_NAMES[type(event)]}


@pytest.mark.parametrize("event", _history(), ids=lambda e: EVENT_TYPE_NAMES[type(e)])
def test_the_hash_covers_every_member_the_state_stores(event: EntryEvent) -> None:
    state = orjson.loads(_stored(event))
    assert state["class_version"] == chain.WHOLE_STATE
    assert form_problem(_stored(event), isinstance(event, EntryRestored)) is None
    assert chain.event_hash(_fields(state, event)) == state["hash"] == event.hash
    hashed = chain.hashed_members(_fields(state, event))
    assert set(state) - {"hash"} <= set(hashed)  # nothing stored is left out
    for name in set(state) - {"hash"}:
        changed = {**state, name: "something else"}
        assert chain.event_hash(_fields(changed, event)) != event.hash, name


@pytest.mark.parametrize("event", _history(), ids=lambda e: EVENT_TYPE_NAMES[type(e)])
def test_the_state_without_its_hash_is_the_hashed_object(event: EntryEvent) -> None:
    state = orjson.loads(_stored(event))
    del state["hash"]
    state.update(stream=str(event.originator_id), version=event.originator_version,
                 type=EVENT_TYPE_NAMES[type(event)])
    hashed = chain.hashed_members(state)
    assert list(hashed.items()) == list(state.items())  # the same members, in order
    assert hashlib.sha256(orjson.dumps(state)).hexdigest() == event.hash


def test_the_hash_keeps_the_order_of_the_members_inside_a_value() -> None:
    event = _history()[0]
    state = orjson.loads(_stored(event))
    state["document"] = {"a": state["document"]["a"], "z": 1}  # the same members, reordered
    assert chain.canonical(state["document"]) == chain.canonical(event.document)
    assert chain.event_hash(_fields(state, event)) != event.hash


def test_a_hashed_object_encodes_alike_whatever_the_order_of_its_own_members() -> None:
    for event in _history():
        hashed = chain.hashed_members(orjson.loads(_stored(event)))
        assert tuple(hashed) in {chain.HASHED_WHOLE, tuple(
            k for k in chain.HASHED_WHOLE if k != "restored_from_version")}
        shuffled = dict(reversed(list(hashed.items())))
        assert chain.members_hash(shuffled) == chain.members_hash(hashed)
        with pytest.raises(ValueError, match="not a hashed object"):
            chain.members_hash({**hashed, "extra": 1})


def test_events_before_version_5_hash_as_they_always_did() -> None:
    event = _history()[1]
    state = orjson.loads(_stored(event))
    old = {k: v for k, v in state.items() if k not in ("timestamp", "class_version")}
    legacy = chain.canonical({**chain.hashed_members({**old, "class_version": 4}),
                              "stream": str(event.originator_id), "version": 2,
                              "type": "entry.patched"})
    assert chain.event_hash({**_fields(state, event), "class_version": 4}) == \
        hashlib.sha256(legacy).hexdigest()
    assert "timestamp" not in chain.hashed_members({**state, "class_version": 4})


def test_the_stored_members_are_the_event_classes_fields_in_order() -> None:
    names = [f.name for f in dataclasses.fields(EntryRestored)
             if f.name not in ("originator_id", "originator_version")]
    assert tuple(names) == (*MEMBERS[EntryEvent.class_version], "restored_from_version")
    for event in _history():
        assert tuple(orjson.loads(_stored(event))) == expected_members(
            EntryEvent.class_version, isinstance(event, EntryRestored))


def test_the_timestamp_is_hashed_as_the_state_stores_it() -> None:
    for moment in (datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=UTC),
                   datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)):
        assert orjson.dumps({"timestamp": moment}) == \
            orjson.dumps({"timestamp": stored_timestamp(moment)})


def _respelt(state: bytes, old: bytes, new: bytes) -> bytes:
    assert old in state
    return state.replace(old, new, 1)


def _edited(state: bytes, edit: Any) -> bytes:
    decoded = orjson.loads(state)
    edit(decoded)
    return orjson.dumps(decoded)


def _renamed(decoded: dict[str, Any]) -> None:
    items = [("reasn" if k == "reason" else k, v) for k, v in decoded.items()]
    decoded.clear()
    decoded.update(items)


def _moved(decoded: dict[str, Any]) -> None:
    decoded["actor"] = decoded.pop("actor")


@pytest.mark.parametrize(("edit", "field"), [
    (lambda s: s.update(extra=1), "extra"),
    (_renamed, "reason"),
    (lambda s: s.pop("reason"), "reason"),
    (lambda s: s.pop("auth"), "auth"),
    (_moved, "actor"),
    (lambda s: s.update(class_version=7), "class_version"),
    (lambda s: s.update(class_version="5"), "class_version"),
])
def test_a_member_added_renamed_removed_or_moved_is_named(edit: Any, field: str) -> None:
    state = _stored(_history()[0])
    problem = form_problem(_edited(state, edit), restored=False)
    assert problem is not None and problem[0] == field


@pytest.mark.parametrize(("old", "new"), [
    (b'"actor":"alice"', b'"actor": "alice"'),  # spacing
    (b'"actor":"alice"', b'"actor":"\\u0061lice"'),  # an escape
    (b'"z":1', b'"z":1.0e0'),  # a number form
    (b'"actor":"alice"', b'"actor":"mallory","actor":"alice"'),  # a repeated member
])
def test_a_respelt_byte_is_found(old: bytes, new: bytes) -> None:
    state = _stored(_history()[0])
    problem = form_problem(_respelt(state, old, new), restored=False)
    assert problem is not None and problem[0] == "state"


def test_a_restored_event_stores_the_version_it_came_from() -> None:
    restored = _stored(_history()[-1])
    assert form_problem(restored, restored=True) is None
    problem = form_problem(restored, restored=False)
    assert problem is not None and problem[0] == "restored_from_version"


@pytest.mark.parametrize("event", _history(), ids=lambda e: EVENT_TYPE_NAMES[type(e)])
def test_the_fast_path_takes_a_state_decoded_by_its_caller(event: EntryEvent) -> None:
    """An import hands ``fast_hash`` the state its line decoded: the same answer as from
    the bytes; a decoded state that is not the bytes' (another member's value, or bytes
    re-spelt around the same value) is not vouched for."""
    stored, kind = _stored(event), EVENT_TYPE_NAMES[type(event)]
    stream, version = str(event.originator_id), event.originator_version
    quick = fast_hash(stored, stream, version, kind, None, decoded=orjson.loads(stored))
    assert quick is not None and quick[0] == quick[1] == event.hash
    assert quick[:2] == fast_hash(stored, stream, version, kind, None)[:2]  # type: ignore[index]
    other = {**orjson.loads(stored), "actor": "mallory"}
    assert fast_hash(stored, stream, version, kind, None, decoded=other) is None
    respelt = stored.replace(b'"class_version":', b'"class_version": ')
    assert fast_hash(respelt, stream, version, kind, None,
                     decoded=orjson.loads(stored)) is None
