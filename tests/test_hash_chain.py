"""The hash chain: each event hashes every field that matters and its stream's previous
hash, with a canonical encoding the standard library reproduces."""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from nexus_ssot.ledger import integrity
from nexus_ssot.ledger.domain import (
    EVENT_TYPE_NAMES,
    Context,
    Delete,
    EntryEvent,
    Limits,
    MergePatch,
    Put,
    Restore,
    decide,
    evolve,
)


def ctx() -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="alice",
                   correlation_id="c-1", reason="why")


def history() -> list[EntryEvent]:
    state = None
    events = []
    for command in (Put("ns", "k", document={"b": 1, "a": "é"}),
                    MergePatch("ns", "k", patch={"c": [1, 2.5]}),
                    Delete("ns", "k"),
                    Restore("ns", "k", from_version=1, document={"b": 1, "a": "é"})):
        event = decide(state, command, ctx(), Limits())
        events.append(event)
        state = evolve(state, event)
    return events


def recompute(event: EntryEvent) -> str:
    """The hash from the event's fields, the way a stdlib-only verifier does it."""
    fields: dict[str, Any] = {
        "stream": str(event.originator_id), "version": event.originator_version,
        "type": EVENT_TYPE_NAMES[type(event)], "namespace": event.namespace,
        "key": event.key, "document": event.document, "patch": event.patch,
        "actor": event.actor, "reason": event.reason,
        "correlation_id": event.correlation_id, "causation_id": event.causation_id,
        "idempotency_key": event.idempotency_key, "event_id": str(event.event_id),
        "resolution": event.resolution,
        "restored_from_version": getattr(event, "restored_from_version", None),
        "prev_hash": event.prev_hash,
    }
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_each_event_chains_to_the_previous_one_of_its_stream() -> None:
    events = history()
    assert events[0].prev_hash is None
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    for event in events:
        assert event.hash == recompute(event)
        assert len(event.hash or "") == 64


@pytest.mark.parametrize("member", [m for m in integrity.HASHED if m != "prev_hash"])
def test_every_hashed_member_changes_the_hash(member: str) -> None:
    fields: dict[str, Any] = {m: f"value-{m}" for m in integrity.HASHED}
    changed = {**fields, member: "other"}
    assert integrity.event_hash(fields) != integrity.event_hash(changed)


def test_the_canonical_encoding_is_documented_byte_for_byte() -> None:
    value = {"b": [1, 2.5, True, None], "a": "é\u2028\"", "c": {"z": 1, "y": -0.0}}
    assert integrity.canonical(value) == (
        '{"a":"é\u2028\\"","b":[1,2.5,true,null],"c":{"y":-0.0,"z":1}}').encode()
    with pytest.raises(ValueError):
        integrity.canonical({"x": float("nan")})


def test_leaves_cover_position_and_commit_time() -> None:
    moment = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
    assert integrity.leaf_data(7, moment, "ab") == (
        b'{"hash":"ab","position":7,"recorded_at":"2026-11-27T10:00:00.123456Z"}')
