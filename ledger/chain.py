"""Tamper evidence: the canonical encoding and hash of an event, and the leaf an event
becomes in the log's Merkle tree.

Canonical encoding of a JSON value: UTF-8 bytes of JSON with object members sorted by key,
no whitespace, non-ASCII characters as themselves, numbers as Python writes them
(integers in decimal, floats as ``repr``), no NaN or infinities — byte for byte what
``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)`` produces, so a verifier needs nothing but the standard library.

An event's hash is SHA-256 (hex) of the encoding of its hashed object. From event class
version 5 (``WHOLE_STATE``) that object is every member its stored state holds but the hash
itself, in the order the state stores them, then stream id, version and type
(``HASHED_WHOLE``), encoded in that order with the members inside each value in theirs
(``ordered``): so the hash covers the stored state whole, and the state's own members,
decoded, are the object once its hash is taken out and those three put in. Before it, the
object was the ``HASHED`` fields: stream id,
version, type, namespace, key, document, patch, actor, reason, correlation id, causation
id, idempotency key, event id, resolution, the version a restore came from, and
``prev_hash``, the hash of the stream's previous event (null for version 1); and the
``OPTIONAL`` members — ``auth``, how the actor authenticated — only when they are not null
(class version 4), so that an event without them hashes exactly as events did before they
existed; encoded canonically. Those events keep verifying by that rule (``ssot verify``
checks what it leaves out against the state's seal, ``integrity/verify``). So each stream
is a hash chain. The commit time and global position are assigned by the database after
the hash is made: they are covered by the digests, whose leaves are
``leaf(position, recorded_at, hash)``.

The bytes come from orjson (a fraction of the standard library's cost, which was most of
what the chain added to a write) when they are provably the standard library's: the value
holds only dicts with ``str`` keys, lists, strings, integers, booleans and None, and orjson
encodes it (it refuses integers beyond 64 bits, lone surrogates and nesting deeper than
255; told to, a subclass of ``str``, ``int``, ``dict`` or ``list``, as a key too, so only
the values' types are left to check). Any other value — floats above all: orjson writes
``1e-05`` as ``0.00001`` and NaN as null — is encoded by the standard library.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson

#: The members of the hashed object, in the order docs/integrity.md documents them.
HASHED = ("stream", "version", "type", "namespace", "key", "document", "patch", "actor",
          "reason", "correlation_id", "causation_id", "idempotency_key", "event_id",
          "resolution", "restored_from_version", "prev_hash")
#: Members the hashed object holds only when they are not null (an event without them
#: hashes as every event did before they were added), in documentation order.
OPTIONAL = ("auth",)
#: The event class version from which the hash covers the whole stored state, and the
#: members of its hashed object in their encoded order, the state's (``stored_state``):
#: each present (null when missing), but ``restored_from_version``, a member only of the
#: events that store it (``entry.restored``).
WHOLE_STATE = 5
HASHED_WHOLE = ("timestamp", "event_id", "namespace", "key", "document", "patch", "actor",
                "reason", "correlation_id", "causation_id", "idempotency_key", "resolution",
                "prev_hash", "auth", "restored_from_version", "class_version", "stream",
                "version", "type")
_ONLY_WHEN_STORED = "restored_from_version"
#: HASHED_WHOLE with and without its member stored only when set.
_WHOLE_UNRESTORED = tuple(k for k in HASHED_WHOLE if k != _ONLY_WHEN_STORED)
_WHOLE_ORDERS = frozenset({HASHED_WHOLE, _WHOLE_UNRESTORED})


_SORT_KEYS = orjson.OPT_SORT_KEYS
#: orjson refuses (with no ``default`` to pass them to) every subclass of ``str``, ``int``,
#: ``dict`` and ``list``, among values and keys: what it encodes has exact types there.
_EXACT = orjson.OPT_PASSTHROUGH_SUBCLASS


def canonical(value: Any) -> bytes:
    """The canonical encoding of ``value`` (see the module docstring); raises ValueError
    or TypeError for what is not JSON (NaN, infinities, other types, lone surrogates)."""
    try:
        fast = candidate(value)
    except orjson.JSONEncodeError:
        return canonical_stdlib(value)
    return fast if _plain(value) else canonical_stdlib(value)


def candidate(value: Any) -> bytes:
    """orjson's encoding with sorted keys: the canonical encoding when ``value`` is plain
    JSON (see the module docstring), otherwise perhaps not, so a caller must prove it:
    ``canonical`` by the value's types, ``ssot verify`` by the stored hash it reproduces.
    Raises ``orjson.JSONEncodeError`` for what orjson cannot encode, and for a subclass of
    ``str``, ``int``, ``dict`` or ``list`` (``_EXACT``; decoded JSON holds none)."""
    return orjson.dumps(value, option=_SORT_KEYS | _EXACT)


def canonical_stdlib(value: Any) -> bytes:
    """The canonical encoding by its definition (what ``canonical`` always equals)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _plain(value: Any) -> bool:
    """Whether ``value`` holds only dicts, lists, strings, integers, booleans and None.
    Called once orjson has encoded it with ``_EXACT``, so it is finite and acyclic and its
    keys are exactly ``str`` (a subclass could sort otherwise): only the values are
    looked at."""
    level = [value]
    while level:
        deeper: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is str or item is None:  # the commonest leaves first
                continue
            if kind is dict:
                deeper.extend(item.values())
            elif kind is list:
                deeper.extend(item)
            elif kind is not int and kind is not bool:
                return False
        level = deeper
    return True


def hash_hex(value: Any) -> str:
    """SHA-256 (hex) of the canonical encoding of ``value``."""
    return hashlib.sha256(canonical(value)).hexdigest()


def covers_whole_state(fields: dict[str, Any]) -> bool:
    """Whether an event of these fields (or this hashed object) is hashed whole: its
    ``class_version`` is an integer of at least ``WHOLE_STATE``."""
    version = fields.get("class_version")
    return type(version) is int and version >= WHOLE_STATE


def hashed_members(fields: dict[str, Any]) -> dict[str, Any]:
    """The object an event's hash is made of. From class version 5: its ``HASHED_WHOLE``
    fields in that order (a missing one counts as null; ``restored_from_version`` only
    when it has one). Before: its ``HASHED`` fields (likewise) and those of its
    ``OPTIONAL`` ones that are not null."""
    if covers_whole_state(fields):
        names = HASHED_WHOLE if _ONLY_WHEN_STORED in fields else _WHOLE_UNRESTORED
        get = fields.get
        return {k: get(k) for k in names}
    members = {k: fields.get(k) for k in HASHED}
    for k in OPTIONAL:
        if (value := fields.get(k)) is not None:
            members[k] = value
    return members


def ordered(members: dict[str, Any]) -> bytes:
    """The encoding of a class version 5 hashed object: the canonical encoding, except that
    no object's members are sorted: the object's own are in ``HASHED_WHOLE``'s order (it
    has no others), those of the objects inside its values (a document, a patch's
    operations, a resolution, auth) in the order they have, which is the order the event's
    state stores them in."""
    top = _in_whole_order(members)
    try:
        fast = orjson.dumps(top, option=_EXACT)
    except orjson.JSONEncodeError:
        return _ordered_stdlib(top)
    return fast if _plain(top) else _ordered_stdlib(top)


def _in_whole_order(members: dict[str, Any]) -> dict[str, Any]:
    if (given := tuple(members)) in _WHOLE_ORDERS:  # as hashed_members builds them
        return members
    order = tuple(k for k in HASHED_WHOLE if k in members)
    if len(order) != len(members):
        raise ValueError(f"not a hashed object: {sorted(set(members) - set(order))}")
    return members if given == order else {k: members[k] for k in order}


def _ordered_stdlib(top: dict[str, Any]) -> bytes:
    return json.dumps(top, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def encoding(members: dict[str, Any]) -> bytes:
    """The bytes an event's hash is made of: ``ordered`` for a class version 5 hashed
    object, ``canonical`` for an older one."""
    return ordered(members) if covers_whole_state(members) else canonical(members)


def encoding_candidate(members: dict[str, Any]) -> bytes:
    """orjson's encoding of a hashed object (``candidate`` before class version 5, its
    members in order from it): ``encoding`` when the values are plain JSON, otherwise
    perhaps not, so a caller must prove it by the stored hash it reproduces. Raises
    ``orjson.JSONEncodeError`` for what orjson cannot encode."""
    if covers_whole_state(members):
        return orjson.dumps(_in_whole_order(members), option=_EXACT)
    return candidate(members)


def members_hash(members: dict[str, Any]) -> str:
    """SHA-256 (hex) of ``encoding(members)``: the hash of an event's hashed object."""
    return hashlib.sha256(encoding(members)).hexdigest()


def event_hash(fields: dict[str, Any]) -> str:
    """The hash of an event given its fields (see ``hashed_members``)."""
    return members_hash(hashed_members(fields))


def timestamp(moment: datetime) -> str:
    """A commit time as the leaves spell it: RFC 3339 UTC with microseconds
    (``%Y-%m-%dT%H:%M:%S.%fZ``; ``isoformat`` writes the same for the years from 1000 on,
    in a fraction of ``strftime``'s time)."""
    utc = moment.astimezone(UTC)
    if utc.year < 1000:  # strftime's %Y does not pad them: spelled as they always were
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.isoformat(timespec="microseconds")[:26] + "Z"


def leaf_data(position: int, recorded_at: datetime, hash_hex: str) -> bytes:
    """What a log event contributes to the Merkle tree (before ``merkle.leaf_hash``)."""
    return canonical({"position": position, "recorded_at": timestamp(recorded_at),
                      "hash": hash_hex})
