"""The hash chain: each event hashes every field that matters and its stream's previous
hash, with a canonical encoding the standard library reproduces."""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nexus_ssot.ledger import chain
from nexus_ssot.ledger.commands import Context, Delete, MergePatch, Put, Restore
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.domain import decide
from nexus_ssot.ledger.events import EVENT_TYPE_NAMES, EntryEvent, evolve


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


@pytest.mark.parametrize("member", [m for m in chain.HASHED if m != "prev_hash"])
def test_every_hashed_member_changes_the_hash(member: str) -> None:
    fields: dict[str, Any] = {m: f"value-{m}" for m in chain.HASHED}
    changed = {**fields, member: "other"}
    assert chain.event_hash(fields) != chain.event_hash(changed)


def test_the_canonical_encoding_is_documented_byte_for_byte() -> None:
    value = {"b": [1, 2.5, True, None], "a": "é\u2028\"", "c": {"z": 1, "y": -0.0}}
    assert chain.canonical(value) == (
        '{"a":"é\u2028\\"","b":[1,2.5,true,null],"c":{"y":-0.0,"z":1}}').encode()
    with pytest.raises(ValueError):
        chain.canonical({"x": float("nan")})


def test_leaves_cover_position_and_commit_time() -> None:
    moment = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
    assert chain.leaf_data(7, moment, "ab") == (
        b'{"hash":"ab","position":7,"recorded_at":"2026-11-27T10:00:00.123456Z"}')


# --- the fast canonical encoding is the standard library's, byte for byte ----------------


def by_definition(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def outcome(encode: Any, value: Any) -> bytes | type[BaseException]:
    try:
        encoded: bytes = encode(value)
    except (ValueError, TypeError, RecursionError) as e:
        return type(e)
    return encoded


class Text(str):
    pass


class Number(enum.IntEnum):
    ONE = 1


#: Every code point (lone surrogates too), weighted towards the ones encoders disagree on.
CHARACTERS = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
    st.sampled_from("\x00\x08\t\n\x0b\x0c\r\x1f\x7f\"\\/\u2028\u2029\ud800\udfff\ufeff"
                    "\uffff\U0001f600é<>&'"),
)
TEXT = st.text(CHARACTERS, max_size=12)
SCALARS = st.one_of(
    st.none(), st.booleans(), TEXT,
    st.integers(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
    st.floats(),  # NaN, infinities, -0.0, subnormals, 1e16, 1e-05 …
    st.sampled_from([1e16, 1e-05, 1e22, 0.1, -0.0, 5e-324, 1e15, 100.0, 123456789.0]),
    st.builds(Text, TEXT), st.just(Number.ONE),
)
KEYS = st.one_of(TEXT, TEXT.map(Text), st.integers(-5, 5), st.booleans(), st.none())
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(TEXT, inner, max_size=5),
        st.dictionaries(KEYS, inner, max_size=3),
    ),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
@example({"b": 1e16, "a": [1e-05, -0.0]})
@example({"x": [2**64, 2**63 - 1, -(2**63) - 1]})
@example({"\ud800": "\udfff"})
@example({"\U0001f600": 1, "\uffff": 2, "é": 3, "z": 4})
@example({"nan": float("nan"), "inf": float("inf")})
@example({1: "int key", "1": "str key"})
def test_the_canonical_encoding_is_the_standard_librarys_for_every_value(value: Any) -> None:
    assert outcome(chain.canonical, value) == outcome(by_definition, value)


def test_nesting_beyond_orjsons_limit_is_still_encoded() -> None:
    deep: Any = "leaf"
    for _ in range(300):
        deep = [deep]
    assert chain.canonical({"deep": deep}) == by_definition({"deep": deep})


def test_a_plain_event_is_hashed_without_the_standard_library(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("the standard library's encoder was used")

    events = history()
    monkeypatch.setattr(json, "dumps", refuse)
    event = decide(evolve(None, events[0]), Put("ns", "k", document={"b": [1, "x"]}), ctx(),
                   Limits())
    assert event.hash is not None
    monkeypatch.undo()
    assert event.hash == recompute(event)
