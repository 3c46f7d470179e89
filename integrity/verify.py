"""Verification of the log (promise 7): every event's hash, every stream's chain, the
digests and their Merkle trees, recomputed from the database and compared — reporting the
first problem in log order, precisely (``ssot verify``, ``GET /v1/integrity/verify``).

What is checked, over the positions ``(from, to]`` of one REPEATABLE READ snapshot:

- **each event's own hash**: the ``chain.HASHED`` members of its state (with ``stream``
  = its stream id, ``version`` = its stream version, ``type`` from its topic) hash to the
  ``hash`` its state holds; otherwise ``event_altered``, the field named by comparing the
  state with the independent copy in ``entry_history`` (or saying that the copy agrees:
  both were rewritten). An event without a hash is an ``unchained_event``.
- **each stream's chain**: versions 1, 2, 3… in log order, each ``prev_hash`` the previous
  event's ``hash``: a version gap is an ``event_missing`` (a later-arriving version makes it
  ``events_reordered``), a wrong link ``chain_broken`` (or, when the history copy shows the
  previous event was rewritten with a recomputed hash, ``event_altered`` there).
- **the copies** in ``entry_history`` (one row per event, same position) and ``entries``
  (each entry's last event): an event whose history row is gone, a history row whose event
  is gone, a differing commit time or version, a current state naming an event the log no
  longer has, or a later one it does not know (``event_missing``, ``event_inserted``,
  ``events_reordered``, ``event_altered`` field ``recorded_at``). A difference the digests
  vouch for (the event's Merkle leaf is the digested one) is a drift of the view, not of
  the log, and is left to ``ssot check``.
- **the digests**: each event's leaf ``merkle.leaf_hash(chain.leaf_data(position,
  recorded_at, hash))`` against the stored ``merkle_leaves`` (a stored leaf without its
  event is ``event_missing``, an event at a digested position without a leaf
  ``event_inserted``, two leaves exchanged ``events_reordered``, a changed commit time
  ``event_altered`` field ``recorded_at``), a ``merkle.Frontier`` over the log's leaves
  against each digest's root at its size, and the digests themselves: seq contiguous
  (``digest_missing``), content hash and ``prev`` links (``digest_altered``), Ed25519
  signatures by a known key (``digest_signature_invalid``), and, given the digests as
  published (``--digests FILE``), each row against its published copy
  (``digest_mismatch_external``), so a rewritten digest table cannot hide.

Problems are collected, deduplicated (one per kind and position) and ordered by position;
a problem explained by an earlier one (a root that differs because an event before it
changed) is not reported again. A run can resume: from a position (each stream's previous
event is read from the database when first met; the Merkle frontier from the stored tree)
or from a checkpoint file written every N events (position, frontier, digest chain head,
pending gaps and the problems so far).

Speed: one server-side cursor in position order, fetched on a thread of its own so the
database's work overlaps ours; orjson decodes and (with sorted keys,
``chain.candidate``) re-encodes each state, a fast path that is only trusted when it
yields exactly the stored hash (otherwise ``chain.canonical`` decides); the copies are
compared in SQL on a second connection in the same snapshot while the scan runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from nexus_ssot.ledger import chain
from nexus_ssot.ledger.addressing import stream_id
from nexus_ssot.ledger.errors import InvalidInput
from nexus_ssot.ledger.events import TYPE_OF_TOPIC

from . import merkle
from .digests import Digest, key_id

Conn = psycopg.Connection[tuple[Any, ...]]

# --- problem kinds ----------------------------------------------------------------------

EVENT_ALTERED = "event_altered"
EVENTS_REORDERED = "events_reordered"
EVENT_INSERTED = "event_inserted"
EVENT_MISSING = "event_missing"
CHAIN_BROKEN = "chain_broken"
UNCHAINED_EVENT = "unchained_event"
DIGEST_ALTERED = "digest_altered"
DIGEST_MISSING = "digest_missing"
DIGEST_SIGNATURE_INVALID = "digest_signature_invalid"
DIGEST_MISMATCH_EXTERNAL = "digest_mismatch_external"

#: Every problem code, what it means; at one position the first listed is reported first.
KINDS: dict[str, str] = {
    EVENT_ALTERED: "an event's content or commit time is not what was hashed or digested",
    EVENTS_REORDERED: "events stand at each other's positions",
    EVENT_INSERTED: "an event the ledger's writer did not write (no history copy, or no "
                    "Merkle leaf at a digested position)",
    EVENT_MISSING: "an event of a stream, the history or the digests is not in the log",
    CHAIN_BROKEN: "an event's prev_hash is not its stream's previous event's hash",
    UNCHAINED_EVENT: "an event without a hash (written with the chain off, or before it)",
    DIGEST_ALTERED: "a digest's content, hash, link or root is not what it was",
    DIGEST_MISSING: "a digest (or the last ones) is gone from the digests table",
    DIGEST_SIGNATURE_INVALID: "a digest's signature does not verify with a known key",
    DIGEST_MISMATCH_EXTERNAL: "a digest differs from its published copy (--digests)",
}
_PRIORITY = {kind: i for i, kind in enumerate(KINDS)}
_EVENT_KINDS = frozenset(list(KINDS)[:6])
_NOWHERE = 1 << 62

#: Problems kept in memory (the first ones in log order); beyond it they are only counted.
MAX_KEPT = 10_000
#: Doubted positions judged one by one at the end (the first ones in log order), and
#: of those whose Merkle leaf alone differs, how many are paired up (reordered events).
MAX_JUDGED = 20_000
MAX_PAIRED = 500

_N_HASHED = len(chain.HASHED)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TO_CHAR = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


@dataclass(frozen=True)
class Problem:
    """One problem: its ``kind`` (a code of ``KINDS``), where (``position``; for a digest
    its last covered position, with ``seq``), which entry and version when known, the
    ``field`` that changed (``event_altered``, ``digest_*``), the other position involved
    (``events_reordered``), and a sentence."""

    kind: str
    position: int | None
    detail: str
    namespace: str | None = None
    key: str | None = None
    version: int | None = None
    field: str | None = None
    seq: int | None = None
    other_position: int | None = None

    def order(self) -> tuple[int, int, int]:
        return (self.position if self.position is not None else _NOWHERE,
                _PRIORITY[self.kind], self.seq or 0)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "position": self.position, "namespace": self.namespace,
                "key": self.key, "version": self.version, "field": self.field,
                "seq": self.seq, "other_position": self.other_position,
                "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        if data.get("kind") not in KINDS:
            raise ValueError(f"unknown problem kind {data.get('kind')!r}")
        return cls(kind=data["kind"], position=data.get("position"),
                   detail=str(data.get("detail", "")), namespace=data.get("namespace"),
                   key=data.get("key"), version=data.get("version"),
                   field=data.get("field"), seq=data.get("seq"),
                   other_position=data.get("other_position"))

    def describe(self) -> str:
        """One line: ``kind at position P (ns/key version V, field F): detail``."""
        where = []
        if self.namespace is not None and self.key is not None:
            where.append(f"{self.namespace}/{self.key}")
        if self.version is not None:
            where.append(f"version {self.version}")
        if self.seq is not None:
            where.append(f"digest {self.seq}")
        if self.field is not None:
            where.append(f"field {self.field}")
        at = f" at position {self.position}" if self.position is not None else ""
        return f"{self.kind}{at}{' (' + ', '.join(where) + ')' if where else ''}: " \
               f"{self.detail}"


@dataclass
class Report:
    """The outcome of a verification: ``ok`` when no problem was found; ``first`` the
    first problem in log order, ``problems`` the first ``MAX_KEPT`` (or fewer, as asked)
    of ``problem_count``."""

    ok: bool
    first: Problem | None
    problems: list[Problem]
    problem_count: int
    from_position: int
    to_position: int
    head: int
    events: int
    events_total: int
    streams: int
    digests_checked: int
    digested_to: int | None
    external_digests: int
    signatures_checked: int
    notes: list[str]
    seconds: float
    next_from_position: int | None = None
    resumed_from: int | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self, max_problems: int | None = None) -> dict[str, Any]:
        problems = self.problems if max_problems is None else self.problems[:max_problems]
        return {
            "ok": self.ok,
            "first_problem": self.first.as_dict() if self.first else None,
            "problem_count": self.problem_count,
            "problems": [p.as_dict() for p in problems],
            "from_position": self.from_position,
            "to_position": self.to_position,
            "next_from_position": self.next_from_position,
            "head": self.head,
            "events": self.events,
            "events_total": self.events_total,
            "streams": self.streams,
            "digests_checked": self.digests_checked,
            "digested_to": self.digested_to,
            "external_digests": self.external_digests,
            "signatures_checked": self.signatures_checked,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.rate),
            "resumed_from": self.resumed_from,
        }


Progress = Callable[[int, int, int], None]
"""``progress(events done, events in the range, position reached)``."""


# --- inputs: public keys, published digests, checkpoints --------------------------------


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from ``path``: a PEM public key, a PKCS#8 PEM private key
    (its public half), the JSON ``GET /v1/integrity/public-key`` serves, or 64 hex digits."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"public key file {str(path)!r} cannot be read: {e.strerror}",
                           code="invalid_public_key", field="public_key") from None
    text = data.strip()
    try:
        if text.startswith(b"{"):
            served = orjson.loads(text)
            text = str(served.get("public_key_hex") or served.get("public_key_pem") or
                       "").strip().encode()
        if re.fullmatch(rb"[0-9a-fA-F]{64}", text):
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode()))
        if b"PRIVATE KEY" in text:
            private = serialization.load_pem_private_key(text, password=None)
            if isinstance(private, Ed25519PrivateKey):
                return private.public_key()
            raise ValueError(f"it holds a {type(private).__name__}, not an Ed25519 key")
        public = serialization.load_pem_public_key(text)
        if isinstance(public, Ed25519PublicKey):
            return public
        raise ValueError(f"it holds a {type(public).__name__}, not an Ed25519 key")
    except (ValueError, TypeError, UnsupportedAlgorithm, orjson.JSONDecodeError) as e:
        raise InvalidInput(
            f"public key file {str(path)!r} is not an Ed25519 public key (PEM, PKCS#8 PEM "
            f"private key, the JSON of GET /v1/integrity/public-key, or 64 hex digits): {e}",
            code="invalid_public_key", field="public_key") from None


def public_keys(keys: Sequence[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """Keys by their ``key_id`` (as digests name them)."""
    return {key_id(k): k for k in keys}


def _hex(value: Any, what: str, *, nullable: bool = False) -> bytes | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]*", value) or len(value) % 2:
        raise ValueError(f"{what} must be lowercase hex{' or null' if nullable else ''}")
    return bytes.fromhex(value)


def parse_published_digest(item: Any) -> Digest:
    """A digest as published on NATS (``Digest.as_json``); ValueError names the member."""
    if not isinstance(item, dict):
        raise ValueError("a digest must be a JSON object")
    for name in ("seq", "position", "size"):
        if not isinstance(item.get(name), int) or isinstance(item.get(name), bool) \
                or item[name] < (1 if name != "position" else 0):
            raise ValueError(f"{name} must be a positive integer")
    root = _hex(item.get("root"), "root")
    digest_hash = _hex(item.get("hash"), "hash")
    assert root is not None and digest_hash is not None
    if len(root) != 32 or len(digest_hash) != 32:
        raise ValueError("root and hash must be 64 hex digits")
    prev = _hex(item.get("prev"), "prev", nullable=True)
    if prev is not None and len(prev) != 32:
        raise ValueError("prev must be 64 hex digits or null")
    signature = _hex(item.get("signature"), "signature", nullable=True)
    kid = item.get("key_id")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("key_id must be text or null")
    at = item.get("recorded_at")
    try:
        recorded_at = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        recorded_at = None
    if recorded_at is None or recorded_at.tzinfo is None \
            or chain.timestamp(recorded_at) != at:
        raise ValueError("recorded_at must be a UTC time like 2026-01-31T12:00:00.123456Z")
    return Digest(item["seq"], item["position"], item["size"], root, recorded_at, prev,
                  digest_hash, signature, kid)


def read_published_digests(path: Path) -> list[Digest]:
    """The digests in ``path``: NDJSON, one digest per line as published on NATS (blank
    lines are skipped). A bad line raises ``InvalidInput`` naming the line and member."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise InvalidInput(f"digests file {str(path)!r} cannot be read: {e.strerror}",
                           code="invalid_digests_file", field="digests") from None
    found: dict[int, Digest] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            digest = parse_published_digest(orjson.loads(line))
        except (orjson.JSONDecodeError, ValueError) as e:
            raise InvalidInput(f"digests file {str(path)!r} line {number}: {e}",
                               code="invalid_digests_file", field="digests") from None
        if digest.seq in found and found[digest.seq] != digest:
            raise InvalidInput(f"digests file {str(path)!r} line {number}: digest "
                               f"{digest.seq} appears twice, differently",
                               code="invalid_digests_file", field="digests")
        found[digest.seq] = digest
    return [found[s] for s in sorted(found)]


CHECKPOINT_FORMAT = "ssot-verify-checkpoint/1"


@dataclass
class Checkpoint:
    """Where a verification got to: everything before ``position`` is verified, with
    ``problems`` found (and ``problem_count``), the Merkle frontier of the log's first
    ``frontier.size`` events, the last digest checked, and the streams whose versions
    were missing at that point (``gaps``: stream id -> version -> position noticed)."""

    database: str
    namespace: str | None
    position: int
    events: int
    frontier: merkle.Frontier | None
    digest_seq: int | None
    digest_hash: bytes | None
    digest_signed: bool
    gaps: dict[str, dict[int, int]]
    problems: list[Problem]
    problem_count: int
    #: Positions some check doubted, judged at the end of the run.
    suspects: list[int]
    chain_suspects: dict[int, tuple[str, int]]
    #: The copies (history, current state) are compared after this position.
    copies_from: int
    #: Digests whose root differed from the log's, with why (judged at the end).
    root_mismatches: list[tuple[Digest, str, bool]]

    def as_json(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "database": self.database,
            "namespace": self.namespace,
            "position": self.position,
            "events": self.events,
            "frontier": None if self.frontier is None else {
                "size": self.frontier.size, "levels": self.frontier.levels,
                "nodes": [n.hex() for n in self.frontier.nodes]},
            "digest": None if self.digest_seq is None else {
                "seq": self.digest_seq,
                "hash": self.digest_hash.hex() if self.digest_hash else None,
                "signed": self.digest_signed},
            "gaps": {s: {str(v): p for v, p in g.items()} for s, g in self.gaps.items()},
            "problems": [p.as_dict() for p in self.problems],
            "problem_count": self.problem_count,
            "suspects": self.suspects,
            "chain_suspects": {str(p): [s, v] for p, (s, v) in self.chain_suspects.items()},
            "copies_from": self.copies_from,
            "root_mismatches": [{"digest": d.as_json(), "why": why, "published": published}
                                for d, why, published in self.root_mismatches],
        }

    def save(self, path: Path) -> None:
        """Write atomically (a crash leaves the previous checkpoint)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(self.as_json(), option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            data = orjson.loads(path.read_bytes())
        except OSError as e:
            raise InvalidInput(f"checkpoint {str(path)!r} cannot be read: {e.strerror}",
                               code="invalid_checkpoint", field="checkpoint") from None
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f"checkpoint {str(path)!r} is not JSON: {e}",
                               code="invalid_checkpoint", field="checkpoint") from None
        try:
            if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"format must be {CHECKPOINT_FORMAT!r}")
            frontier = data["frontier"]
            digest = data["digest"]
            checkpoint = cls(
                database=str(data["database"]),
                namespace=data["namespace"],
                position=int(data["position"]),
                events=int(data["events"]),
                frontier=None if frontier is None else merkle.Frontier(
                    size=int(frontier["size"]), levels=[int(v) for v in frontier["levels"]],
                    nodes=[bytes.fromhex(n) for n in frontier["nodes"]]),
                digest_seq=None if digest is None else int(digest["seq"]),
                digest_hash=None if digest is None or digest["hash"] is None
                else bytes.fromhex(digest["hash"]),
                digest_signed=bool(digest and digest.get("signed")),
                gaps={str(s): {int(v): int(p) for v, p in g.items()}
                      for s, g in data["gaps"].items()},
                problems=[Problem.from_dict(p) for p in data["problems"]],
                problem_count=int(data["problem_count"]),
                suspects=[int(p) for p in data["suspects"]],
                chain_suspects={int(p): (str(sv[0]), int(sv[1]))
                                for p, sv in data["chain_suspects"].items()},
                copies_from=int(data["copies_from"]),
                root_mismatches=[(parse_published_digest(m["digest"]), str(m["why"]),
                                  bool(m["published"])) for m in data["root_mismatches"]],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InvalidInput(f"checkpoint {str(path)!r} is not a verify checkpoint: {e!r}",
                               code="invalid_checkpoint", field="checkpoint") from None
        if checkpoint.position < 0 or (checkpoint.frontier is not None and (
                len(checkpoint.frontier.levels) != len(checkpoint.frontier.nodes))):
            raise InvalidInput(f"checkpoint {str(path)!r} is inconsistent",
                               code="invalid_checkpoint", field="checkpoint")
        return checkpoint


# --- options -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What to verify. ``from_position``: start after it (each stream's previous event is
    read as needed); ``checkpoint``: a file to resume from when it exists, and to write
    every ``checkpoint_every`` events and at the end; ``max_events``: refuse a range with
    more events (an explicit ``to_position``) or end the range there (none given)."""

    namespace: str | None = None
    from_position: int | None = None
    to_position: int | None = None
    published: tuple[Digest, ...] = ()
    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    checkpoint: Path | None = None
    checkpoint_every: int = 250_000
    max_events: int | None = None
    fetch_size: int = 5_000

    def check(self) -> None:
        for name in ("from_position", "to_position"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidInput(f"{name} must be a position (an integer >= 0), not "
                                   f"{value!r}", code="invalid_position", field=name)
        if self.from_position is not None and self.to_position is not None \
                and self.to_position < self.from_position:
            raise InvalidInput(f"to_position {self.to_position} is before from_position "
                               f"{self.from_position}", code="invalid_position",
                               field="to_position")
        if self.checkpoint_every < 1 or self.fetch_size < 1:
            raise InvalidInput("checkpoint_every and fetch_size must be positive",
                               field="checkpoint_every")


# --- the verifier --------------------------------------------------------------------------


_EVENTS_SQL = (
    "SELECT notification_id, originator_id::text, originator_version, topic, state, "
    + _TO_CHAR.format("recorded_at") +
    " FROM ssot_events WHERE notification_id > %s AND notification_id <= %s"
    " ORDER BY notification_id")

_HISTORY_DIFF_SQL = """
SELECT coalesce(ev.notification_id, h.position) AS position,
       ev.notification_id IS NOT NULL, h.position IS NOT NULL
FROM (SELECT notification_id, recorded_at, originator_version FROM ssot_events
      WHERE notification_id > %(lo)s AND notification_id <= %(hi)s) ev
FULL JOIN (SELECT position, recorded_at, version FROM entry_history
      WHERE position > %(lo)s AND position <= %(hi)s) h ON h.position = ev.notification_id
WHERE ev.notification_id IS NULL OR h.position IS NULL
   OR h.recorded_at <> ev.recorded_at OR h.version <> ev.originator_version
ORDER BY 1 LIMIT %(limit)s"""

_ENTRIES_DIFF_SQL = """
SELECT e.namespace, e.key, e.version, e.position, ev.originator_version,
       (SELECT min(x.notification_id) FROM ssot_events x WHERE x.originator_id =
        ev.originator_id AND x.originator_version > e.version)
FROM entries e LEFT JOIN ssot_events ev ON ev.notification_id = e.position
WHERE e.position > %(lo)s AND (%(ns)s::text IS NULL OR e.namespace = %(ns)s)
  AND (ev.notification_id IS NULL OR ev.originator_version <> e.version
       OR EXISTS (SELECT 1 FROM ssot_events x WHERE x.originator_id = ev.originator_id
                  AND x.originator_version > e.version))
ORDER BY e.position LIMIT %(limit)s"""

_HISTORY_COLUMNS = ("namespace, key, version, position, event_type, event_id::text, actor, "
                    "reason, correlation_id, causation_id, idempotency_key, patch::text, "
                    "document::text, resolution::text, prev_hash, hash, recorded_at, "
                    + _TO_CHAR.format("recorded_at"))


@dataclass
class _History:
    """An ``entry_history`` row: the independent copy of one event."""

    namespace: str
    key: str
    version: int
    position: int
    event_type: str
    members: dict[str, Any]
    recorded_at: str

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> _History:
        (ns, key, version, position, event_type, event_id, actor, reason, correlation,
         causation, idempotency, patch, document, resolution, prev_hash, hash_, _at,
         at_text) = row
        members = {
            "namespace": ns, "key": key, "version": int(version), "type": event_type,
            "event_id": event_id, "actor": actor, "reason": reason,
            "correlation_id": correlation, "causation_id": causation,
            "idempotency_key": idempotency,
            "patch": None if patch is None else json.loads(patch),
            "document": None if document is None else json.loads(document),
            "resolution": None if resolution is None else json.loads(resolution),
            "prev_hash": prev_hash, "hash": hash_,
        }
        return cls(ns, key, int(version), int(position), event_type, members, at_text)


@dataclass
class _Event:
    """One event of the log as the verifier examines it off the fast path."""

    position: int
    stream: str
    version: int
    topic: str
    state: bytes
    recorded_at: str
    decoded: dict[str, Any] | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        try:
            value = json.loads(self.state)
        except (ValueError, UnicodeDecodeError) as e:
            self.error = f"its state is not JSON ({e})"
            return
        if not isinstance(value, dict):
            self.error = "its state is not a JSON object"
            return
        self.decoded = value

    def get(self, name: str) -> Any:
        return None if self.decoded is None else self.decoded.get(name)

    @property
    def namespace(self) -> str | None:
        ns = self.get("namespace")
        return ns if isinstance(ns, str) else None

    @property
    def key(self) -> str | None:
        key = self.get("key")
        return key if isinstance(key, str) else None

    @property
    def stored_hash(self) -> Any:
        return self.get("hash")

    def hashed(self) -> dict[str, Any]:
        state = self.decoded or {}
        return {**{k: state.get(k) for k in chain.HASHED}, "stream": self.stream,
                "version": self.version, "type": TYPE_OF_TOPIC.get(self.topic, self.topic)}

    def recomputed(self) -> str | None:
        """The hash its members give (``chain.canonical``)."""
        if self.decoded is None:
            return None
        try:
            return chain.hash_hex(self.hashed())
        except (ValueError, TypeError):
            return None

    def leaf(self) -> bytes:
        return _leaf(self.position, self.recorded_at, self.stored_hash)


def _leaf(position: int, recorded_at: str, hash_value: Any) -> bytes:
    """The Merkle leaf of an event as the digester makes it (``digests.leaf_of``): the
    hash member as ``->> 'hash'`` reads it (text, or null)."""
    if isinstance(hash_value, str) and _HEX64.fullmatch(hash_value):
        data = (f'{{"hash":"{hash_value}","position":{position},'
                f'"recorded_at":"{recorded_at}"}}').encode()
    else:
        text = None if hash_value is None else (
            hash_value if isinstance(hash_value, str) else json.dumps(hash_value))
        data = chain.canonical({"hash": text, "position": position,
                                    "recorded_at": recorded_at})
    return merkle.leaf_hash(data)


def _fast_hash(state: bytes, stream: str, version: int, event_type: str
               ) -> tuple[str | None, Any, dict[str, Any]] | None:
    """(recomputed hash, stored hash, decoded state) through orjson, or None when this
    state must take ``chain.canonical``'s path. The recomputed hash is trusted only
    when it equals the stored one: equal SHA-256 means these are byte for byte the bytes
    that were hashed."""
    try:
        s = orjson.loads(state)
        # Decoding was lossless only if re-encoding gives the stored bytes back (the
        # writer's orjson made them): an integer beyond 64 bits, say, would not.
        if not isinstance(s, dict) or orjson.dumps(s) != state:
            return None
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    stored = s.pop("hash", None)
    s.pop("timestamp", None)
    s.pop("class_version", None)
    if "restored_from_version" not in s:
        s["restored_from_version"] = None
    s["stream"], s["version"], s["type"] = stream, version, event_type
    if len(s) != _N_HASHED:
        return None
    try:
        computed = hashlib.sha256(chain.candidate(s)).hexdigest()
    except orjson.JSONEncodeError:
        return None
    return computed, stored, s


Heads = dict[str, tuple[int, Any]]


class _Batches:
    """The log's events in position order, fetched on a thread of their own; when the
    range starts mid-log (``resume_at``), with each batch the previous event (at or before
    ``resume_at``) of the streams it is the first to hold, as (version, stored hash)."""

    def __init__(self, conn: Conn, lo: int, hi: int, size: int,
                 resume_at: int | None) -> None:
        self.queue: queue.Queue[tuple[list[tuple[Any, ...]], Heads] | BaseException | None] \
            = queue.Queue(maxsize=4)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(conn, lo, hi, size, resume_at),
                                       name="ssot-verify-fetch", daemon=True)
        self.thread.start()

    def _run(self, conn: Conn, lo: int, hi: int, size: int, resume_at: int | None) -> None:
        seen: set[str] = set()
        try:
            with conn.cursor("ssot_verify_events", binary=True) as cur:
                cur.itersize = size
                cur.execute(_EVENTS_SQL, (lo, hi))
                while not self.stopped.is_set():
                    rows = cur.fetchmany(size)
                    if not rows:
                        break
                    heads: Heads = {}
                    if resume_at is not None:
                        first: dict[str, int] = {}
                        for row in rows:
                            if row[1] not in seen:
                                seen.add(row[1])
                                if row[2] > 1:
                                    first[row[1]] = row[2]
                        if first:
                            heads = _previous_events(conn, first, resume_at)
                    self.queue.put((rows, heads))
            self.queue.put(None)
        except BaseException as e:  # handed to the consumer, which raises it
            self.queue.put(e)

    def __iter__(self) -> Iterator[tuple[list[tuple[Any, ...]], Heads]]:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stopped.set()
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self.queue.get(timeout=0.05)
        self.thread.join()


def _previous_events(conn: Conn, first: dict[str, int], at: int) -> Heads:
    """Each stream's last event at or before position ``at``, as (version, stored hash),
    for streams whose first event after ``at`` has version ``first[stream]``: version
    ``first - 1`` if it stands there (one index probe), else the greatest that does."""
    heads: Heads = {}
    ids = sorted(first)
    rows = conn.execute(
        "SELECT e.originator_id::text, e.originator_version, e.state FROM unnest("
        "%s::uuid[], %s::bigint[]) AS s(id, version) JOIN ssot_events e"
        " ON e.originator_id = s.id AND e.originator_version = s.version - 1"
        " WHERE e.notification_id <= %s", (ids, [first[i] for i in ids], at)).fetchall()
    others = sorted(set(ids) - {r[0] for r in rows})
    if others:
        rows += conn.execute(
            "SELECT s.id::text, e.originator_version, e.state"
            " FROM unnest(%s::uuid[]) AS s(id) CROSS JOIN LATERAL ("
            "  SELECT originator_version, state FROM ssot_events"
            "  WHERE originator_id = s.id AND notification_id <= %s"
            "  ORDER BY originator_version DESC LIMIT 1) e", (others, at)).fetchall()
    for sid, version, state in rows:
        try:
            stored = orjson.loads(state).get("hash")
        except (orjson.JSONDecodeError, AttributeError):
            stored = None
        heads[sid] = (int(version), stored)
    return heads


class _Side(threading.Thread):
    """The copies compared with the log in SQL, on a second connection in the scan's
    snapshot, while the scan runs."""

    def __init__(self, database_url: str, snapshot: str, lo: int, hi: int,
                 namespace: str | None, entries: bool) -> None:
        super().__init__(name="ssot-verify-copies", daemon=True)
        self.args = (database_url, snapshot, lo, hi, namespace, entries)
        self.history: list[tuple[int, bool, bool]] = []
        self.entries: list[tuple[Any, ...]] = []
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        database_url, snapshot, lo, hi, namespace, entries = self.args
        try:
            with _snapshot_connection(database_url) as conn:
                conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                conn.execute("SET LOCAL jit = off")
                self.history = [(int(p), bool(e), bool(h)) for p, e, h in conn.execute(
                    _HISTORY_DIFF_SQL, {"lo": lo, "hi": hi, "limit": MAX_KEPT * 10})]
                if entries:
                    self.entries = conn.execute(_ENTRIES_DIFF_SQL, {
                        "lo": lo, "ns": namespace, "limit": MAX_KEPT * 10}).fetchall()
                conn.rollback()
        except BaseException as e:  # handed to the verifier, which raises it
            self.error = e
        finally:
            self.finished.set()


def _snapshot_connection(database_url: str) -> Conn:
    """A connection whose first statement opens a REPEATABLE READ READ ONLY transaction."""
    conn = psycopg.connect(database_url, connect_timeout=10)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return conn


#: Most missing versions of one stream remembered at once (a forged version 10**9 must
#: not make a billion of them).
_MAX_GAP = 1_000


class Verifier:
    """One verification run over one snapshot (see the module docstring)."""

    conn: Conn
    database: str

    def __init__(self, database_url: str, options: Options,
                 progress: Progress | None = None) -> None:
        options.check()
        self.url = database_url
        self.options = options
        self.progress = progress
        self.problems: dict[tuple[str, int | None, int | None], Problem] = {}
        self.dropped = 0
        self.notes: list[str] = []
        self.heads: Heads = {}
        self.gaps: dict[str, dict[int, int]] = {}
        self.suspects: set[int] = set()  # positions to judge at the end
        self.chain_suspects: dict[int, tuple[str, int]] = {}
        self.root_mismatches: list[tuple[Digest, str, bool]] = []
        self.frontier: merkle.Frontier | None = None
        self.digests_checked = 0
        self.signatures_checked = 0
        self.digested_to: int | None = None
        self.last_digest: tuple[int, bytes, bool] | None = None  # seq, hash, signed
        #: (position, (seq, hash, signed)) of the digests checked, in seq order.
        self.digest_chain: list[tuple[int, tuple[int, bytes, bool]]] = []
        self.previous_events = 0
        self.copies_from = 0
        self.side: _Side | None = None
        self.first_event_problem: int | None = None

    # --- problems ---------------------------------------------------------------------

    def report(self, problem: Problem) -> None:
        if problem.kind == EVENTS_REORDERED and problem.other_position is not None \
                and problem.position is not None \
                and problem.other_position < problem.position:
            problem = replace(problem, position=problem.other_position,
                              other_position=problem.position)
        if problem.kind in _EVENT_KINDS and problem.position is not None:
            # what explains a digest's root differing, in any namespace
            if self.first_event_problem is None or problem.position < self.first_event_problem:
                self.first_event_problem = problem.position
            if self.options.namespace is not None and problem.namespace is not None \
                    and problem.namespace != self.options.namespace:
                return
        # one problem per kind and position; a digest's per kind and seq (the earliest
        # position known for it wins: a published copy knows where a lost digest was)
        key = (problem.kind, problem.position, None) if problem.seq is None \
            else (problem.kind, None, problem.seq)
        known = self.problems.get(key)
        if known is not None:
            if problem.order() < known.order():
                self.problems[key] = problem
            return
        if len(self.problems) >= MAX_KEPT:
            worst_key = max(self.problems, key=lambda k: self.problems[k].order())
            self.dropped += 1
            if problem.order() >= self.problems[worst_key].order():
                return
            del self.problems[worst_key]
        self.problems[key] = problem

    def _event_problem_at_or_before(self, position: int) -> bool:
        return self.first_event_problem is not None and self.first_event_problem <= position

    # --- the run ----------------------------------------------------------------------

    def run(self) -> Report:
        started = time.perf_counter()
        opts = self.options
        with _snapshot_connection(self.url) as conn:
            self.conn = conn
            conn.execute("SET LOCAL jit = off")
            row = conn.execute(
                "SELECT (SELECT coalesce(max(notification_id), 0) FROM ssot_events),"
                " current_database(),"
                " (SELECT oid::text FROM pg_database WHERE datname = current_database()),"
                " to_regclass('digests') IS NOT NULL, pg_export_snapshot()").fetchone()
            assert row is not None
            head, dbname, oid, has_digests, snapshot = row
            head = int(head)
            self.database = f"{dbname}/{oid}"
            # the last events may be gone: scan up to the furthest position any copy or
            # the digests know of
            known = conn.execute(
                "SELECT greatest(%s, (SELECT max(position) FROM entry_history)"
                + (", (SELECT max(position) FROM merkle_leaves),"
                   " (SELECT max(position) FROM digests)" if has_digests else "")
                + ")", (head,)).fetchone()
            end = int(known[0]) if known and known[0] is not None else head
            checkpoint = self._load_checkpoint()
            lo = opts.from_position or 0
            resumed = None
            if checkpoint is not None:
                lo = checkpoint.position
                resumed = lo
            elif opts.from_position:
                resumed = lo
            self.copies_from = checkpoint.copies_from if checkpoint is not None else lo
            hi = end if opts.to_position is None else min(opts.to_position, end)
            hi = max(hi, lo)
            total = self._count(lo, hi)
            next_from = None
            if opts.max_events is not None and total > opts.max_events:
                if opts.to_position is not None:
                    raise InvalidInput(
                        f"positions {lo}..{hi} hold {total} events; at most "
                        f"{opts.max_events} are verified per call: give a to_position "
                        "closer to from_position", code="range_too_large",
                        field="to_position")
                cut = conn.execute(
                    "SELECT notification_id FROM ssot_events WHERE notification_id > %s"
                    " ORDER BY notification_id OFFSET %s LIMIT 1",
                    (lo, opts.max_events - 1)).fetchone()
                assert cut is not None
                hi, total, next_from = int(cut[0]), opts.max_events, int(cut[0])
            at_head = hi == end
            self.side = _Side(self.url, snapshot, self.copies_from, hi, opts.namespace,
                              at_head)
            self.side.start()
            try:
                digests = self._prepare_digests(bool(has_digests), lo, hi)
                events = self._scan(lo, hi, total, digests)
                self.side.join()
                self._side_results(hi)
                self._finish_streams()
                self._classify()
                if at_head:
                    self._entries_hashes(lo)
                self._finish_digests(digests, lo, hi, at_head)
            finally:
                self.side.join()
            conn.rollback()
        if opts.checkpoint is not None:
            self._checkpoint(hi, events).save(opts.checkpoint)
        problems = sorted(self.problems.values(), key=Problem.order)
        return Report(
            ok=not problems, first=problems[0] if problems else None, problems=problems,
            problem_count=len(problems) + self.dropped, from_position=lo, to_position=hi,
            head=head, events=events, events_total=self.previous_events + events,
            streams=len(self.heads), digests_checked=self.digests_checked,
            digested_to=self.digested_to, external_digests=len(opts.published),
            signatures_checked=self.signatures_checked, notes=self.notes,
            seconds=time.perf_counter() - started, next_from_position=next_from,
            resumed_from=resumed)

    def _count(self, lo: int, hi: int) -> int:
        row = self.conn.execute("SELECT count(*) FROM ssot_events WHERE notification_id > %s"
                                " AND notification_id <= %s", (lo, hi)).fetchone()
        return int(row[0]) if row else 0

    def _load_checkpoint(self) -> Checkpoint | None:
        path = self.options.checkpoint
        if path is None or not path.exists():
            return None
        if self.options.from_position is not None:
            raise InvalidInput("give either from_position or a checkpoint to resume from, "
                               f"not both ({str(path)!r} exists)", field="from_position",
                               code="invalid_position")
        checkpoint = Checkpoint.load(path)
        if checkpoint.database != self.database:
            raise InvalidInput(
                f"checkpoint {str(path)!r} is of database {checkpoint.database}, not "
                f"{self.database}", code="invalid_checkpoint", field="checkpoint")
        if checkpoint.namespace != self.options.namespace:
            raise InvalidInput(
                f"checkpoint {str(path)!r} verifies namespace {checkpoint.namespace!r}, "
                f"not {self.options.namespace!r}", code="invalid_checkpoint",
                field="namespace")
        for problem in checkpoint.problems:
            self.report(problem)
        self.dropped += max(0, checkpoint.problem_count - len(checkpoint.problems))
        self.gaps = {s: dict(g) for s, g in checkpoint.gaps.items()}
        self.suspects = set(checkpoint.suspects)
        self.chain_suspects = dict(checkpoint.chain_suspects)
        self.root_mismatches = list(checkpoint.root_mismatches)
        self.previous_events = checkpoint.events
        if checkpoint.digest_seq is not None and checkpoint.digest_hash is not None:
            self.last_digest = (checkpoint.digest_seq, checkpoint.digest_hash,
                                checkpoint.digest_signed)
        self.frontier = checkpoint.frontier
        return checkpoint

    def _checkpoint(self, position: int, events: int) -> Checkpoint:
        """What a run resumed at ``position`` needs; the copies' differences found so far
        are folded into the suspects when their comparison has finished."""
        copies_from = self.copies_from
        if self.side is not None and self.side.finished.is_set() and self.side.error is None:
            self._side_results(position)
            copies_from = max(copies_from, position)
        problems = sorted(self.problems.values(), key=Problem.order)
        digests_so_far = [d for at, d in self.digest_chain if at <= position]
        last_digest = (digests_so_far[-1] if digests_so_far
                       else self.last_digest if not self.digest_chain else None)
        return Checkpoint(
            database=self.database, namespace=self.options.namespace, position=position,
            events=self.previous_events + events,
            frontier=None if self.frontier is None else merkle.Frontier(
                self.frontier.size, list(self.frontier.levels), list(self.frontier.nodes)),
            digest_seq=last_digest[0] if last_digest else None,
            digest_hash=last_digest[1] if last_digest else None,
            digest_signed=last_digest[2] if last_digest else False,
            gaps={s: dict(g) for s, g in self.gaps.items()}, problems=problems,
            problem_count=len(problems) + self.dropped,
            suspects=sorted(p for p in self.suspects if p <= position),
            chain_suspects={p: v for p, v in self.chain_suspects.items() if p <= position},
            copies_from=copies_from,
            root_mismatches=[m for m in self.root_mismatches if m[0].position <= position])

    # --- digests ----------------------------------------------------------------------

    def _prepare_digests(self, has_digests: bool, lo: int, hi: int) -> list[Digest]:
        """The digest rows in range (checked now against each other, their roots during
        the scan), and the Merkle frontier at ``lo``."""
        if not has_digests:
            self.notes.append("no digests table: the digests were not checked")
            self.frontier = None
            return []
        conn = self.conn
        rows = [Digest.from_row(r) for r in conn.execute(
            f"SELECT {Digest.COLUMNS} FROM digests WHERE position > %s AND position <= %s"
            " ORDER BY seq", (lo, hi))]
        before = conn.execute(f"SELECT {Digest.COLUMNS} FROM digests WHERE position <= %s"
                              " ORDER BY seq DESC LIMIT 1", (lo,)).fetchone()
        previous = Digest.from_row(before) if before else None
        if previous is not None:
            if self.last_digest is not None and (previous.seq != self.last_digest[0]
                                                 or previous.hash != self.last_digest[1]):
                self.report(Problem(
                    DIGEST_ALTERED, previous.position,
                    f"the last digest before position {lo} is digest {previous.seq} with "
                    f"hash {previous.hash.hex()}; when the checkpoint was written it was "
                    f"digest {self.last_digest[0]} with hash {self.last_digest[1].hex()}",
                    seq=previous.seq, field="hash"))
            self.last_digest = (previous.seq, previous.hash, previous.signature is not None)
        if self.last_digest is not None:
            self.digest_chain.append((lo, self.last_digest))
        for digest in rows:
            self._check_digest(digest, fresh=lo == 0)
        any_digest = rows or previous is not None or conn.execute(
            "SELECT 1 FROM digests LIMIT 1").fetchone() is not None
        if not any_digest and not self.options.published:
            self.frontier = None  # nothing to compare a root with: no tree to keep
            return rows
        if self.frontier is None:
            self.frontier = self._stored_frontier(lo)
        if self.frontier is None:
            self.notes.append(f"no stored Merkle tree reaches position {lo}: the roots of "
                              "the digests in range were not recomputed")
        return rows

    def _stored_frontier(self, lo: int) -> merkle.Frontier | None:
        """The frontier of the log's events up to ``lo`` from the stored tree (trusted:
        the run that verified up to there checked it)."""
        if lo == 0:
            return merkle.Frontier()
        conn = self.conn
        row = conn.execute("SELECT idx, position FROM merkle_leaves WHERE position <= %s"
                           " ORDER BY position DESC LIMIT 1", (lo,)).fetchone()
        if row is None:
            return None
        size = int(row[0]) + 1
        if conn.execute("SELECT 1 FROM ssot_events WHERE notification_id > %s AND"
                        " notification_id <= %s LIMIT 1", (row[1], lo)).fetchone():
            return None  # events after the last stored leaf: the tree does not reach lo
        parts, start = [], 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                parts.append((level, start >> level))
                start += 1 << level
        nodes: list[bytes] = []
        for level, index in parts:
            found = conn.execute(
                "SELECT hash FROM merkle_leaves WHERE idx = %s", (index,)).fetchone() \
                if level == 0 else conn.execute(
                "SELECT hash FROM merkle_nodes WHERE level = %s AND idx = %s",
                (level, index)).fetchone()
            if found is None:
                return None
            nodes.append(bytes(found[0]))
        return merkle.Frontier(size=size, levels=[lv for lv, _ in parts], nodes=nodes)

    def _check_digest(self, digest: Digest, *, fresh: bool) -> None:
        """A digest row against itself, its predecessor and its signature."""
        self.digests_checked += 1
        if hashlib.sha256(digest.canonical()).digest() != digest.hash:
            self.report(Problem(
                DIGEST_ALTERED, digest.position,
                f"digest {digest.seq}'s content (seq, position, size, root, recorded_at, "
                "prev) does not hash to its stored hash: the row was changed",
                seq=digest.seq, field="content"))
        last = self.last_digest
        if last is not None:
            last_seq, last_hash, _signed = last
            if digest.seq > last_seq + 1:
                for seq in range(last_seq + 1, min(digest.seq, last_seq + 1 + _MAX_GAP)):
                    self.report(Problem(
                        DIGEST_MISSING, digest.position,
                        f"digest {seq} is not in the digests table: digest {last_seq} is, "
                        f"then digest {digest.seq} (up to position {digest.position})",
                        seq=seq))
            elif digest.prev != last_hash:
                self.report(Problem(
                    DIGEST_ALTERED, digest.position,
                    f"digest {digest.seq} chains to hash "
                    f"{digest.prev.hex() if digest.prev else None}, but digest {last_seq}'s"
                    f" hash is {last_hash.hex()}: one of them was rewritten",
                    seq=digest.seq, field="prev"))
        elif digest.seq != 1 and fresh:
            for seq in range(1, min(digest.seq, 1 + _MAX_GAP)):
                self.report(Problem(DIGEST_MISSING, digest.position,
                                    f"digest {seq} is not in the digests table (the first "
                                    f"one there is digest {digest.seq})", seq=seq))
        self._check_signature(digest, "digest", last[2] if last else False)
        self.last_digest = (digest.seq, digest.hash, digest.signature is not None)
        self.digest_chain.append((digest.position, self.last_digest))

    def _check_signature(self, digest: Digest, what: str, previous_signed: bool) -> None:
        keys = self.options.keys
        if digest.signature is None:
            if previous_signed:
                self.report(Problem(
                    DIGEST_SIGNATURE_INVALID, digest.position,
                    f"{what} {digest.seq} is unsigned although the digest before it was "
                    "signed", seq=digest.seq, field="signature"))
            return
        if not keys:
            note = ("signatures were not checked: no public key (give --public-key, or "
                    "configure SSOT_SIGNING_KEY_FILE)")
            if note not in self.notes:
                self.notes.append(note)
            return
        key = keys.get(digest.key_id or "")
        if key is None:
            self.report(Problem(
                DIGEST_SIGNATURE_INVALID, digest.position,
                f"{what} {digest.seq} is signed by key {digest.key_id!r}, which is not a "
                f"known key ({', '.join(sorted(keys))})", seq=digest.seq, field="key_id"))
            return
        self.signatures_checked += 1
        try:
            key.verify(digest.signature, digest.canonical())
        except InvalidSignature:
            self.report(Problem(
                DIGEST_SIGNATURE_INVALID, digest.position,
                f"{what} {digest.seq}'s signature does not verify with key {digest.key_id}",
                seq=digest.seq, field="signature"))

    def _checks_by_size(self, rows: list[Digest], lo: int, hi: int
                        ) -> dict[int, list[tuple[Digest, bool]]]:
        """Digest sizes at which the frontier's root is compared: (digest, published)."""
        checks: dict[int, list[tuple[Digest, bool]]] = {}
        if self.frontier is None:
            return checks
        for digest in rows:
            checks.setdefault(digest.size, []).append((digest, False))
        for digest in self.options.published:
            if lo < digest.position <= hi:
                checks.setdefault(digest.size, []).append((digest, True))
        return {s: c for s, c in checks.items() if s > self.frontier.size}

    def _finish_digests(self, rows: list[Digest], lo: int, hi: int, at_head: bool) -> None:
        conn = self.conn
        for digest, why, external in self.root_mismatches:
            if self._event_problem_at_or_before(digest.position):
                continue  # an event before it explains the difference
            if external:
                self.report(Problem(
                    DIGEST_MISMATCH_EXTERNAL, digest.position,
                    f"{why}, but published digest {digest.seq} says root "
                    f"{digest.root.hex()}: the log and its stored tree were rewritten at or "
                    f"before position {digest.position}", seq=digest.seq, field="root"))
            else:
                self.report(Problem(
                    DIGEST_ALTERED, digest.position,
                    f"{why}, but digest {digest.seq} says root {digest.root.hex()} (the "
                    "stored leaves agree with the log): the digest was changed, or the log "
                    "and its stored leaves were rewritten together (compare with the "
                    "published digests: --digests)", seq=digest.seq, field="root"))
        by_seq = {d.seq: d for d in rows}
        published = [d for d in self.options.published if lo < d.position <= hi
                     or (at_head and d.position > hi)]
        wanted = [d.seq for d in published if d.seq not in by_seq]
        if wanted:
            by_seq.update((d.seq, d) for d in (Digest.from_row(r) for r in conn.execute(
                f"SELECT {Digest.COLUMNS} FROM digests WHERE seq = ANY(%s)", (wanted,))))
        for copy in published:
            if hashlib.sha256(copy.canonical()).digest() != copy.hash:
                self.report(Problem(
                    DIGEST_MISMATCH_EXTERNAL, copy.position,
                    f"published digest {copy.seq}'s content does not hash to its hash: the "
                    "copy is corrupt", seq=copy.seq, field="hash"))
            self._check_signature(copy, "published digest", False)
            row = by_seq.get(copy.seq)
            if row is None:
                beyond = (f"; it covers up to position {copy.position}, beyond the log's "
                          f"head {hi}") if copy.position > hi else ""
                self.report(Problem(
                    DIGEST_MISSING, copy.position,
                    f"digest {copy.seq} (up to position {copy.position}) was published but "
                    f"is not in the digests table{beyond}", seq=copy.seq))
                continue
            differing = [name for name in ("position", "size", "root", "recorded_at",
                                           "prev", "hash", "signature", "key_id")
                         if getattr(row, name) != getattr(copy, name)]
            if differing:
                self.report(Problem(
                    DIGEST_MISMATCH_EXTERNAL, min(row.position, copy.position),
                    f"digest {copy.seq} differs from its published copy in "
                    f"{', '.join(differing)}: the table says "
                    + ", ".join(f"{n}={_show(getattr(row, n))}" for n in differing)
                    + "; published: "
                    + ", ".join(f"{n}={_show(getattr(copy, n))}" for n in differing),
                    seq=copy.seq, field=differing[0]))
        if rows:
            self.digested_to = max(d.position for d in rows)
        if not at_head:
            return
        last = conn.execute(f"SELECT {Digest.COLUMNS} FROM digests ORDER BY seq DESC"
                            " LIMIT 1").fetchone() if self.frontier is not None or rows \
            else None
        leaf = conn.execute("SELECT idx, position FROM merkle_leaves ORDER BY idx DESC"
                            " LIMIT 1").fetchone() if last is not None or rows or \
            self.frontier is not None else None
        last_size = int(last[2]) if last else 0
        if leaf is not None and int(leaf[0]) + 1 > last_size:
            self.report(Problem(
                DIGEST_MISSING, int(leaf[1]),
                f"the stored Merkle leaves reach position {leaf[1]} ({int(leaf[0]) + 1} "
                f"events), but the last digest covers {last_size}: the digests after "
                f"digest {last[0] if last else 0} are gone",
                seq=(int(last[0]) + 1) if last else 1))
        covered = int(last[1]) if last else 0
        if covered < hi and (last is not None or self.options.published):
            self.notes.append(f"no digest covers the positions after {covered} yet: only "
                              "the hash chains and the copies vouch for them")
        elif last is None and not self.options.published and hi > 0:
            self.notes.append("there are no digests: only the hash chains and the copies "
                              "vouch for the log")
        published_last = max((d.seq for d in self.options.published), default=0)
        if last is not None and published_last and published_last < int(last[0]):
            self.notes.append(f"the published digests end at digest {published_last}, "
                              f"the table at {last[0]}")

    # --- the scan ---------------------------------------------------------------------

    def _scan(self, lo: int, hi: int, total: int, digest_rows: list[Digest]) -> int:
        opts = self.options
        only = opts.namespace
        heads, gaps = self.heads, self.gaps
        frontier = self.frontier
        checks = self._checks_by_size(digest_rows, lo, hi)
        next_check = min(checks) if checks else None
        compare = self._has_leaves(lo, hi)
        leaves = frontier is not None or compare
        stored_leaves = self._stored_leaves(lo, hi) if compare else iter(())
        stored = next(stored_leaves, None)
        covered = self._max_leaf_position(lo, hi) if compare else 0
        sha256, types, fast = hashlib.sha256, TYPE_OF_TOPIC, _fast_hash
        tree = frontier if frontier is not None else merkle.Frontier()
        levels, nodes, size = tree.levels, tree.nodes, tree.size
        done = since_checkpoint = 0
        batches = _Batches(self.conn, lo, hi, opts.fetch_size, lo if lo > 0 else None)
        position = lo
        try:
            for rows, previous in batches:
                for sid, last in previous.items():
                    heads.setdefault(sid, last)
                for position, stream, version, topic, state, rec in rows:
                    quick = fast(state, stream, version, types.get(topic, topic))
                    if quick is not None and quick[0] == quick[1]:
                        stored_hash = quick[1]
                        namespace = quick[2]["namespace"]
                        prev_hash = quick[2]["prev_hash"]
                        intact = True
                    else:
                        event = _Event(position, stream, version, topic, state, rec)
                        stored_hash = event.stored_hash
                        namespace = event.namespace
                        prev_hash = event.get("prev_hash")
                        intact = (only is None or namespace == only) \
                            and self._examine_hash(event)
                    if leaves:
                        if intact:
                            leaf = sha256(
                                b"\x00" + f'{{"hash":"{stored_hash}","position":{position},'
                                f'"recorded_at":"{rec}"}}'.encode()).digest()
                        else:
                            leaf = _leaf(position, rec, stored_hash)
                        if compare:
                            while stored is not None and stored[1] < position:
                                self.suspects.add(stored[1])  # a leaf without its event
                                stored = next(stored_leaves, None)
                            if stored is not None and stored[1] == position:
                                if stored[2] != leaf:
                                    self.suspects.add(position)  # another leaf
                                stored = next(stored_leaves, None)
                            elif position <= covered:
                                self.suspects.add(position)  # digested, but no leaf
                        # merkle.Frontier.add, inlined
                        level, node = 0, leaf
                        while levels and levels[-1] == level:
                            node = sha256(b"\x01" + nodes.pop() + node).digest()
                            levels.pop()
                            level += 1
                        levels.append(level)
                        nodes.append(node)
                        size += 1
                        if size == next_check:
                            tree.size = size
                            self._check_roots(checks.pop(size), tree.root(), position)
                            next_check = min(checks) if checks else None
                    if only is not None and namespace != only:
                        continue
                    # the stream's chain
                    head = heads.get(stream)
                    if head is None:
                        expected, link = 1, None
                    else:
                        expected, link = head[0] + 1, head[1]
                    if version == expected:
                        if prev_hash != link and intact:
                            self.chain_suspects[position] = (stream, version)
                        heads[stream] = (version, stored_hash)
                    elif version > expected:
                        pending = gaps.setdefault(stream, {})
                        for missing in range(expected, min(version, expected + _MAX_GAP)):
                            pending.setdefault(missing, position)
                        heads[stream] = (version, stored_hash)
                    else:
                        self._version_behind(stream, version, position, expected - 1,
                                             namespace)
                done += len(rows)
                since_checkpoint += len(rows)
                tree.size = size
                if self.progress is not None:
                    self.progress(done, total, position)
                if opts.checkpoint is not None and since_checkpoint >= opts.checkpoint_every:
                    self._checkpoint(position, done).save(opts.checkpoint)
                    since_checkpoint = 0
        finally:
            batches.close()
        tree.size = size
        while stored is not None:
            self.suspects.add(stored[1])
            stored = next(stored_leaves, None)
        for digest, _published in (c for pending in checks.values() for c in pending):
            self.root_mismatches.append((
                digest, f"the log has only {size} events up to position {hi}, fewer than "
                f"the {digest.size} that digest {digest.seq} covers", _published))
        return done

    def _has_leaves(self, lo: int, hi: int) -> bool:
        return self.frontier is not None and self.conn.execute(
            "SELECT 1 FROM merkle_leaves WHERE position > %s AND position <= %s LIMIT 1",
            (lo, hi)).fetchone() is not None

    def _max_leaf_position(self, lo: int, hi: int) -> int:
        row = self.conn.execute(
            "SELECT max(position) FROM merkle_leaves WHERE position > %s AND position <= %s",
            (lo, hi)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _stored_leaves(self, lo: int, hi: int) -> Iterator[tuple[int, int, bytes]]:
        """The stored leaves in range, in position order (a server-side cursor beside the
        events'); a gap in their ordinals (a deleted leaf row) is reported as an altered
        digest tree."""
        expected: int | None = None
        with self.conn.cursor("ssot_verify_leaves", binary=True) as cur:
            cur.execute("SELECT idx, position, hash FROM merkle_leaves WHERE position > %s"
                        " AND position <= %s ORDER BY position", (lo, hi))
            while rows := cur.fetchmany(20_000):
                for idx, position, leaf in rows:
                    if expected is not None and idx != expected:
                        self.report(Problem(
                            DIGEST_ALTERED, int(position),
                            f"the stored Merkle leaf at position {position} has ordinal "
                            f"{idx}, the one before it {expected - 1}: leaf rows were "
                            "removed or renumbered", field="merkle_leaves"))
                    expected = int(idx) + 1
                    yield int(idx), int(position), bytes(leaf)

    def _check_roots(self, checks: list[tuple[Digest, bool]], root: bytes,
                     position: int) -> None:
        for digest, published in checks:
            if root != digest.root or position != digest.position:
                self.root_mismatches.append((
                    digest, f"the log's first {digest.size} events (up to position "
                    f"{position}) give the root {root.hex()}", published))

    def _version_behind(self, stream: str, version: int, position: int, head: int,
                        namespace: str | None) -> None:
        pending = self.gaps.get(stream, {})
        noticed = pending.pop(version, None)
        if not pending:
            self.gaps.pop(stream, None)
        event = self._event_at(position)
        key = event.key if event is not None else None
        if noticed is not None:
            self.report(Problem(
                EVENTS_REORDERED, noticed,
                f"a later version of this stream stands at position {noticed}, before "
                f"version {version} at position {position}", namespace=namespace,
                key=key, version=version, other_position=position))
        else:
            self.report(Problem(
                CHAIN_BROKEN, position,
                f"version {version} comes after version {head} of the same stream",
                namespace=namespace, key=key, version=version))

    # --- examining one event ----------------------------------------------------------

    def _history_at(self, position: int) -> _History | None:
        row = self.conn.execute(f"SELECT {_HISTORY_COLUMNS} FROM entry_history"
                                " WHERE position = %s", (position,)).fetchone()
        return None if row is None else _History.from_row(row)

    def _history_of(self, namespace: str, key: str, version: int) -> _History | None:
        row = self.conn.execute(f"SELECT {_HISTORY_COLUMNS} FROM entry_history"
                                " WHERE namespace = %s AND key = %s AND version = %s",
                                (namespace, key, version)).fetchone()
        return None if row is None else _History.from_row(row)

    def _event_at(self, position: int) -> _Event | None:
        row = self.conn.execute(
            "SELECT notification_id, originator_id::text, originator_version, topic, state, "
            + _TO_CHAR.format("recorded_at") + " FROM ssot_events WHERE notification_id = %s",
            (position,)).fetchone()
        return None if row is None else _Event(int(row[0]), row[1], int(row[2]), row[3],
                                                bytes(row[4]), row[5])

    def _position_of(self, stream: str, version: int) -> int | None:
        row = self.conn.execute("SELECT notification_id FROM ssot_events WHERE originator_id"
                                " = %s AND originator_version = %s",
                                (stream, version)).fetchone()
        return None if row is None else int(row[0])

    def _examine_hash(self, event: _Event) -> bool:
        """Off the fast path: whether the event's content gives its stored hash; if not,
        report how it was altered (or that it is unchained)."""
        stored = event.stored_hash
        if event.error is None and isinstance(stored, str) and event.recomputed() == stored:
            return True
        history = self._history_at(event.position)
        namespace = event.namespace or (history.namespace if history else None)
        key = event.key or (history.key if history else None)
        if event.error is not None:
            self.report(Problem(EVENT_ALTERED, event.position, event.error,
                                namespace=namespace, key=key, version=event.version,
                                field="state"))
            return False
        if stored is None:
            if history is not None and history.members["hash"] is not None:
                self.report(Problem(
                    EVENT_ALTERED, event.position,
                    f"its state has no hash, but its history copy has "
                    f"{history.members['hash']}: the hash was removed",
                    namespace=namespace, key=key, version=event.version, field="hash"))
            else:
                self.report(Problem(
                    UNCHAINED_EVENT, event.position,
                    "the event carries no hash (written with SSOT_HASH_CHAIN=false or "
                    "before the chain): nothing vouches for its content",
                    namespace=namespace, key=key, version=event.version))
            return False
        fields = self._compare(event, history)
        if fields:
            detail = (f"its {', '.join(fields)} differ(s) from the history copy; its "
                      f"content no longer hashes to {_show(stored)}")
        elif history is None:
            detail = (f"its content no longer hashes to {_show(stored)}, and it has no "
                      "history copy to say which field changed")
        else:
            detail = (f"its content no longer hashes to {_show(stored)}; the history copy "
                      "agrees with the altered state: both were rewritten")
        self.report(Problem(EVENT_ALTERED, event.position, detail, namespace=namespace,
                            key=key, version=event.version,
                            field=fields[0] if fields else None))
        return False

    def _compare(self, event: _Event, history: _History | None) -> list[str]:
        """The members in which the event differs from its history copy."""
        if history is None or event.decoded is None:
            return []
        members = event.hashed()
        fields = []
        if members["namespace"] == history.namespace and members["key"] == history.key \
                and event.stream != str(stream_id(history.namespace, history.key)):
            fields.append("stream")
        for name in ("namespace", "key", "version", "type", "event_id", "actor", "reason",
                     "correlation_id", "causation_id", "idempotency_key", "patch",
                     "document", "resolution", "prev_hash", "hash"):
            if name == "document" and history.event_type == "entry.deleted":
                continue  # the history keeps no document for a delete
            ours = members[name] if name != "hash" else event.stored_hash
            if _canon(ours) != _canon(history.members[name]):
                fields.append(name)
        if event.recorded_at != history.recorded_at:
            fields.append("recorded_at")
        return fields

    # --- judging at the end -----------------------------------------------------------

    def _side_results(self, upto: int) -> None:
        """Fold the copies' differences (up to ``upto``) into the suspects, once."""
        side = self.side
        if side is None or not side.finished.is_set():
            return
        if side.error is not None:
            raise side.error
        for position, _in_log, _in_history in side.history:
            if position <= upto:
                self.suspects.add(position)
        side.history = [h for h in side.history if h[0] > upto]
        keep = []
        for row in side.entries:
            namespace, key, version, position, log_version, later = row
            position = int(position)
            if position > upto:
                keep.append(row)
                continue
            if log_version is None or int(log_version) != int(version):
                self.suspects.add(position)
                if log_version is None and self._history_at(position) is None:
                    self.report(Problem(
                        EVENT_MISSING, position,
                        f"the current state of {namespace}/{key} is version {version} at "
                        f"position {position}; the log has no event there (and the history "
                        "copy is gone too)", namespace=namespace, key=key,
                        version=int(version)))
            if later is not None:
                event = self._event_at(int(later))
                self.report(Problem(
                    EVENT_INSERTED, int(later),
                    f"the current state of {namespace}/{key} is version {version}, but the "
                    f"log has version {event.version if event else '?'} at position "
                    f"{later}: the ledger's writer never made it current",
                    namespace=namespace, key=key,
                    version=event.version if event else None))
        side.entries = keep

    def _finish_streams(self) -> None:
        """Versions still missing at the end, and links that broke."""
        for _stream, pending in sorted(self.gaps.items()):
            for version, noticed in sorted(pending.items()):
                event = self._event_at(noticed)
                namespace = event.namespace if event else None
                key = event.key if event else None
                history = self._history_of(namespace, key, version) \
                    if namespace is not None and key is not None else None
                if history is not None:
                    self.report(Problem(
                        EVENT_MISSING, history.position,
                        f"version {version} is not in the log; its history copy records it "
                        f"at position {history.position} ({history.event_type} by "
                        f"{history.members['actor']})", namespace=namespace, key=key,
                        version=version))
                else:
                    self.report(Problem(
                        EVENT_MISSING, noticed,
                        f"version {version} is not in the log (nor in the history); the "
                        f"stream goes on at position {noticed}", namespace=namespace,
                        key=key, version=version))
        for position, (stream, version) in sorted(self.chain_suspects.items()):
            event = self._event_at(position)
            before = self._position_of(stream, version - 1)
            previous = self._event_at(before) if before is not None else None
            if previous is not None:
                history = self._history_at(previous.position)
                if history is not None and history.version == previous.version \
                        and history.members["hash"] != previous.stored_hash:
                    fields = [f for f in self._compare(previous, history) if f != "hash"]
                    self.report(Problem(
                        EVENT_ALTERED, previous.position,
                        "it was rewritten with a recomputed hash: its "
                        f"{', '.join(fields) or 'content'} differ(s) from the history copy, "
                        f"and version {version} still links to the original hash",
                        namespace=previous.namespace, key=previous.key,
                        version=previous.version, field=fields[0] if fields else "hash"))
                    continue
            self.report(Problem(
                CHAIN_BROKEN, position,
                f"its prev_hash {_show(event.get('prev_hash') if event else None)} is not "
                f"the hash of version {version - 1} "
                f"({_show(previous.stored_hash if previous else None)})",
                namespace=event.namespace if event else None,
                key=event.key if event else None, version=version))

    def _classify(self) -> None:
        """Judge every position some check doubted, with all the evidence."""
        explained = {p.position for p in self.problems.values() if p.kind in _EVENT_KINDS}
        leaf_only: list[_Event] = []
        doubted = sorted(self.suspects - explained)
        if len(doubted) > MAX_JUDGED:
            self.notes.append(f"{len(doubted):,} positions were doubted; the first "
                              f"{MAX_JUDGED:,} (to position {doubted[MAX_JUDGED - 1]}) were "
                              "judged")
            doubted = doubted[:MAX_JUDGED]
        for position in doubted:
            if self._judge(position):
                event = self._event_at(position)
                if event is not None:
                    leaf_only.append(event)
        # Leaves that differ with nothing else wrong: two events exchanged, or a commit
        # time (or position) rewritten everywhere but in the digests.
        paired: set[int] = set()
        for i, a in enumerate(leaf_only):
            if a.position in paired:
                continue
            want = self._stored_leaf(a.position)
            partner = None
            if i < MAX_PAIRED:
                partner = next((b for b in leaf_only[:MAX_PAIRED]
                                if b is not a and b.position not in paired and want in (
                                    _leaf(a.position, b.recorded_at, b.stored_hash),
                                    _leaf(a.position, a.recorded_at, b.stored_hash))), None)
            if partner is not None:
                paired.update((a.position, partner.position))
                self.report(Problem(
                    EVENTS_REORDERED, a.position,
                    f"the event digested at position {a.position} is the one now at "
                    f"position {partner.position} ({partner.namespace}/{partner.key} "
                    f"version {partner.version})", namespace=a.namespace, key=a.key,
                    version=a.version, other_position=partner.position))
                continue
            self.report(Problem(
                EVENT_ALTERED, a.position,
                "its Merkle leaf is not the digested one although its content hashes "
                f"right: its commit time ({a.recorded_at}) or position was changed, and the "
                "history copy with it", namespace=a.namespace, key=a.key, version=a.version,
                field="recorded_at"))

    def _stored_leaf(self, position: int) -> bytes | None:
        row = self.conn.execute("SELECT hash FROM merkle_leaves WHERE position = %s",
                                (position,)).fetchone()
        return None if row is None else bytes(row[0])

    def _covered(self, position: int) -> bool:
        return self.conn.execute("SELECT 1 FROM merkle_leaves WHERE position >= %s LIMIT 1",
                                 (position,)).fetchone() is not None

    def _judge(self, position: int) -> bool:
        """Classify one doubted position; True when only its Merkle leaf differs."""
        event = self._event_at(position)
        history = self._history_at(position)
        leaf = self._stored_leaf(position)
        if event is None:
            if history is not None:
                moved = self._position_of(str(stream_id(history.namespace, history.key)),
                                          history.version)
                if moved is not None and moved != position:
                    self.report(Problem(
                        EVENTS_REORDERED, position,
                        f"the history records {history.namespace}/{history.key} version "
                        f"{history.version} at position {position}; the log has it at "
                        f"position {moved}", namespace=history.namespace, key=history.key,
                        version=history.version, other_position=moved))
                else:
                    self.report(Problem(
                        EVENT_MISSING, position,
                        f"the log has no event at position {position}; its history copy "
                        f"records {history.event_type} of {history.namespace}/{history.key} "
                        f"version {history.version} there", namespace=history.namespace,
                        key=history.key, version=history.version))
            elif leaf is not None:
                self.report(Problem(
                    EVENT_MISSING, position,
                    f"the log has no event at position {position}, which the digests cover "
                    "(its history copy is gone too)"))
            return False
        if event.decoded is None:
            return False  # the scan reported it altered
        if leaf is not None and leaf == event.leaf():
            return False  # the digested event: only a copy drifted (ssot check says which)
        namespace, key, version = event.namespace, event.key, event.version
        same_event = history is not None and (history.namespace, history.key,
                                              history.version) == (namespace, key, version)
        if history is None or not same_event:
            elsewhere = self._history_of(namespace, key, version) \
                if namespace is not None and key is not None else None
            if elsewhere is not None and elsewhere.position != position:
                self.report(Problem(
                    EVENTS_REORDERED, position,
                    f"position {position} holds {namespace}/{key} version {version}, which "
                    f"the history records at position {elsewhere.position}"
                    + (f" (it has {history.namespace}/{history.key} version "
                       f"{history.version} here)" if history else ""),
                    namespace=namespace, key=key, version=version,
                    other_position=elsewhere.position))
            else:
                why = ("it has no history copy: the ledger's writer did not write it (or "
                       "its history row was deleted)") if history is None else (
                    f"the history records {history.namespace}/{history.key} version "
                    f"{history.version} at this position, and this event nowhere")
                if leaf is None and self._covered(position):
                    why += "; the digests cover its position but hold no leaf for it"
                self.report(Problem(EVENT_INSERTED, position, why, namespace=namespace,
                                    key=key, version=version))
            return False
        assert history is not None
        if history.recorded_at != event.recorded_at:
            self.report(Problem(
                EVENT_ALTERED, position,
                f"its commit time is {event.recorded_at}, its history copy's "
                f"{history.recorded_at}" + ("; its Merkle leaf is not the digested one"
                                            if leaf is not None else ""),
                namespace=namespace, key=key, version=version, field="recorded_at"))
            return False
        if history.members["hash"] != event.stored_hash:
            fields = [f for f in self._compare(event, history) if f != "hash"]
            self.report(Problem(
                EVENT_ALTERED, position,
                "it was rewritten with a recomputed hash: its "
                f"{', '.join(fields) or 'hash'} differ(s) from the history copy",
                namespace=namespace, key=key, version=version,
                field=fields[0] if fields else "hash"))
            return False
        if leaf is None:
            if self._covered(position):
                self.report(Problem(
                    EVENT_INSERTED, position,
                    "the digests cover its position but hold no leaf for it: it was "
                    "inserted after they were made (with a forged history copy)",
                    namespace=namespace, key=key, version=version))
            return False
        return True

    def _entries_hashes(self, lo: int) -> None:
        """Each entry's current hash is its stream's last event's: a last event rewritten
        with a recomputed hash (and not digested yet) shows only here."""
        known = {h for _v, h in self.heads.values() if isinstance(h, str)}
        only = self.options.namespace
        odd = [row for row in self.conn.execute(
            "SELECT hash, namespace, key, version, position FROM entries WHERE position > %s"
            " AND (%s::text IS NULL OR namespace = %s) AND hash IS NOT NULL",
            (lo, only, only)) if row[0] not in known]
        for copy_hash, namespace, key, version, position in odd[:MAX_KEPT]:
            event = self._event_at(int(position))
            if event is None or event.version != version or event.namespace != namespace \
                    or event.key != key or event.stored_hash == copy_hash:
                continue  # the comparison of positions reports it (or a later version)
            fields = [f for f in self._compare(event, self._history_at(int(position)))
                      if f != "hash"]
            self.report(Problem(
                EVENT_ALTERED, int(position),
                f"it was rewritten with a recomputed hash: the current state's copy has hash"
                f" {copy_hash}, the log's event {_show(event.stored_hash)}"
                + (f"; its {', '.join(fields)} differ(s) from the history copy"
                   if fields else ""),
                namespace=namespace, key=key, version=int(version),
                field=fields[0] if fields else "hash"))


def _canon(value: Any) -> bytes:
    try:
        return chain.canonical(value)
    except (ValueError, TypeError):
        return repr(value).encode()


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return chain.timestamp(value)
    return "null" if value is None else str(value)


def verify(database_url: str, options: Options = Options(),
           progress: Progress | None = None) -> Report:
    """Verify the log of ``database_url`` (see the module docstring)."""
    return Verifier(database_url, options, progress).run()
