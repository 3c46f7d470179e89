"""The hash chain: each event hashes every member its state stores and its stream's
previous hash, with an encoding the standard library reproduces (events from before class
version 5 keep hashing as they did)."""

from __future__ import annotations

import enum
import gzip
import hashlib
import itertools
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nexus_ssot.integrity.verify.log import fast_hash
from nexus_ssot.ledger import chain
from nexus_ssot.ledger.commands import Context, Delete, MergePatch, Put, Restore
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.domain import decide
from nexus_ssot.ledger.events import EVENT_TYPE_NAMES, TYPE_OF_TOPIC, EntryEvent, evolve
from tests.examples import examples

COMPAT_EXPORT = Path(__file__).parent.parent / "fixtures" / "main-2026-12-03.ndjson.gz"


def ctx(**overrides: Any) -> Context:
    return Context(**{"event_id": uuid.uuid4(), "timestamp": datetime.now(UTC),
                      "actor": "alice", "correlation_id": "c-1", "reason": "why",
                      **overrides})


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
    """The hash from the event's fields, the way a stdlib-only verifier does it: every
    member its state stores in their order (those inside its values too), then stream,
    version and type."""
    fields: dict[str, Any] = {
        "timestamp": event.timestamp.isoformat(), "event_id": str(event.event_id),
        "namespace": event.namespace, "key": event.key, "document": event.document,
        "patch": event.patch, "actor": event.actor, "reason": event.reason,
        "correlation_id": event.correlation_id, "causation_id": event.causation_id,
        "idempotency_key": event.idempotency_key, "resolution": event.resolution,
        "prev_hash": event.prev_hash, "auth": event.auth,
    }
    if hasattr(event, "restored_from_version"):  # a member of entry.restored only
        fields["restored_from_version"] = event.restored_from_version
    fields.update(class_version=5, stream=str(event.originator_id),
                  version=event.originator_version, type=EVENT_TYPE_NAMES[type(event)])
    text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_each_event_chains_to_the_previous_one_of_its_stream() -> None:
    events = history()
    assert events[0].prev_hash is None
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    for event in events:
        assert event.hash == recompute(event)
        assert len(event.hash or "") == 64


@pytest.mark.parametrize("member", [m for m in chain.HASHED + chain.OPTIONAL
                                    if m != "prev_hash"])
def test_every_hashed_member_changes_the_hash(member: str) -> None:
    fields: dict[str, Any] = {m: f"value-{m}" for m in chain.HASHED + chain.OPTIONAL}
    changed = {**fields, member: "other"}
    assert chain.event_hash(fields) != chain.event_hash(changed)


# --- auth: hashed when there is one, and only then ---------------------------------------

AUTH = {"method": "token", "token_id": "3f2a9c", "on_behalf_of": "carol"}

#: An event's hashed members, and the hash the ledger gave them before events had ``auth``
#: (ledger/chain.py of main at 992776d, and the standard library by definition).
BEFORE_AUTH: dict[str, Any] = {
    "stream": "5b0c6f4e-2f7b-5a3e-9d53-3f0f8a0b6c11", "version": 2, "type": "entry.updated",
    "namespace": "config", "key": "services/db", "document": {"pool": 20, "url": "pg://a"},
    "patch": [{"op": "replace", "path": "/pool", "value": 20}], "actor": "alice",
    "reason": "more connections", "correlation_id": "c-1", "causation_id": None,
    "idempotency_key": None, "event_id": "00000000-0000-4000-8000-000000000001",
    "resolution": None, "restored_from_version": None, "prev_hash": "ab" * 32}
BEFORE_AUTH_HASH = "0eaa0e5ab098652a713f868ded3654f3ceba8da45e3ce2a67473cb58738d872e"


def test_an_event_without_auth_hashes_exactly_as_before() -> None:
    assert chain.event_hash(BEFORE_AUTH) == BEFORE_AUTH_HASH
    assert chain.event_hash({**BEFORE_AUTH, "auth": None}) == BEFORE_AUTH_HASH
    assert chain.hashed_members({**BEFORE_AUTH, "auth": None}) == BEFORE_AUTH
    assert chain.event_hash({**BEFORE_AUTH, "auth": AUTH}) != BEFORE_AUTH_HASH


def test_an_events_auth_is_hashed_with_it() -> None:
    first = decide(None, Put("ns", "k", document={"a": 1}), ctx(auth=AUTH), Limits())
    second = decide(evolve(None, first), Put("ns", "k", document={"a": 2}), ctx(), Limits())
    assert (first.auth, second.auth) == (AUTH, None)
    assert second.prev_hash == first.hash
    for event in (first, second):
        assert event.hash == recompute(event)
    members = chain.hashed_members({"auth": AUTH})
    assert members["auth"] == AUTH and set(members) == {*chain.HASHED, "auth"}


def test_every_event_of_the_old_fixture_hashes_as_it_was_stored() -> None:
    """The compatibility fixture's events (written before ``auth``) through today's code:
    ``chain.event_hash`` reproduces their stored hashes, and so does the verifier's fast
    path for those it takes (not those with floats, which it hands to the canonical one)."""
    with gzip.open(COMPAT_EXPORT, "rb") as f:
        lines = [orjson.loads(line) for line in f]
    events = [line for line in lines if line["t"] == "event"]
    assert len(events) > 50
    fast = 0
    for e in events:
        state, kind = e["state"], TYPE_OF_TOPIC[e["topic"]]
        assert "auth" not in state
        fields = {**state, "stream": e["stream"], "version": e["version"], "type": kind}
        assert chain.event_hash(fields) == state["hash"]
        stored = orjson.dumps(state)
        # its hash leaves out its timestamp: without its seal it takes the slow path
        assert fast_hash(stored, e["stream"], e["version"], kind, None) is None
        quick = fast_hash(stored, e["stream"], e["version"], kind,
                          hashlib.sha256(stored).digest())
        if quick is not None and quick[0] == quick[1]:
            fast += 1
            assert quick[0] == state["hash"]
        else:  # orjson's bytes are not the canonical ones here
            members = chain.hashed_members(fields)
            assert chain.candidate(members) != chain.canonical_stdlib(members)
    assert fast > 40


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


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
@example({"b": 1e16, "a": [1e-05, -0.0]})
@example({"x": [2**64, 2**63 - 1, -(2**63) - 1]})
@example({"\ud800": "\udfff"})
@example({"\U0001f600": 1, "\uffff": 2, "é": 3, "z": 4})
@example({"nan": float("nan"), "inf": float("inf")})
@example({1: "int key", "1": "str key"})
@example({Text("b"): 1, "a": [Text("x"), Number.ONE]})  # subclasses, as keys and values
def test_the_canonical_encoding_is_the_standard_librarys_for_every_value(value: Any) -> None:
    assert outcome(chain.canonical, value) == outcome(by_definition, value)


WHOLE_OBJECTS = st.fixed_dictionaries(
    {k: JSON_VALUES for k in chain.HASHED_WHOLE if k != "restored_from_version"},
    optional={"restored_from_version": JSON_VALUES})


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(WHOLE_OBJECTS, st.randoms(use_true_random=False))
@example({**dict.fromkeys(chain.HASHED_WHOLE), "document": {"z": 1e16, "a": [-0.0, {1: 2}]},
          "class_version": 5}, None)
@example({**dict.fromkeys(chain.HASHED_WHOLE), "document": {Text("b"): 1, "a": 2},
          "patch": [{"op": Text("add")}], "class_version": 5}, None)
def test_the_ordered_encoding_is_the_standard_librarys_for_every_object(
        value: dict[str, Any], rng: Any) -> None:
    """Its members in ``HASHED_WHOLE``'s order however the object holds them, and those
    inside its values in theirs."""
    in_order = {k: value[k] for k in chain.HASHED_WHOLE if k in value}
    given = dict(value)
    if rng is not None:
        items = list(value.items())
        rng.shuffle(items)
        given = dict(items)
    by_definition = outcome(lambda obj: json.dumps(
        obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8"),
        in_order)
    assert outcome(chain.ordered, given) == by_definition


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
