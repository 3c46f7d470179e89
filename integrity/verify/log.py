"""The log as verification reads it: its events in position order with their seals,
fetched on a thread of their own (with, mid-log, each stream's previous event); one event,
or its independent copy in ``entry_history``, at a time; an event's hash recomputed
(orjson's fast path, or ``chain.encoding``'s) and its Merkle leaf as the digester makes
it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from nexus_ssot.ledger import chain
from nexus_ssot.ledger.addressing import stream_id
from nexus_ssot.ledger.events import TYPE_OF_TOPIC
from nexus_ssot.ledger.stored_state import expected_members

from .. import merkle

Conn = psycopg.Connection[tuple[Any, ...]]

_OPTIONAL = chain.OPTIONAL
_WHOLE = chain.WHOLE_STATE
RESTORED = "entry.restored"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TO_CHAR = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

_EVENTS_SQL = (
    "SELECT e.notification_id, e.originator_id::text, e.originator_version, e.topic,"
    " e.state, " + _TO_CHAR.format("e.recorded_at") + ", s.state_sha256"
    " FROM ssot_events e LEFT JOIN state_seals s ON s.position = e.notification_id"
    " WHERE e.notification_id > %s AND e.notification_id <= %s"
    " ORDER BY e.notification_id")

_HISTORY_COLUMNS = ("namespace, key, version, position, event_type, event_id::text, actor, "
                    "reason, correlation_id, causation_id, idempotency_key, patch::text, "
                    "document::text, resolution::text, prev_hash, hash, auth::text, "
                    "recorded_at, " + _TO_CHAR.format("recorded_at"))


@dataclass
class History:
    """An ``entry_history`` row: the independent copy of one event."""

    namespace: str
    key: str
    version: int
    position: int
    event_type: str
    members: dict[str, Any]
    recorded_at: str

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> History:
        (ns, key, version, position, event_type, event_id, actor, reason, correlation,
         causation, idempotency, patch, document, resolution, prev_hash, hash_, auth, _at,
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
            "auth": None if auth is None else json.loads(auth),
        }
        return cls(ns, key, int(version), int(position), event_type, members, at_text)


@dataclass
class Event:
    """One event of the log as the verifier examines it off the fast path."""

    position: int
    stream: str
    version: int
    topic: str
    state: bytes
    recorded_at: str
    #: SHA-256 of its state when it was sealed (``state_seals``), None if it was not.
    seal: bytes | None = None
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

    @property
    def event_type(self) -> str:
        name: str = TYPE_OF_TOPIC.get(self.topic, self.topic)
        return name

    @property
    def whole(self) -> bool:
        """Whether its hash covers its whole state (class version 5 and later)."""
        return self.decoded is not None and chain.covers_whole_state(self.decoded)

    def hashed(self, **changed: Any) -> dict[str, Any]:
        """Its hashed object (of its state with ``changed`` members, if given)."""
        return {**chain.hashed_members({**(self.decoded or {}), **changed}),
                "stream": self.stream, "version": self.version, "type": self.event_type}

    def recomputed(self, **changed: Any) -> str | None:
        """The hash its members give (``chain.encoding``), or with ``changed`` members."""
        if self.decoded is None:
            return None
        try:
            return chain.members_hash(self.hashed(**changed))
        except (ValueError, TypeError):
            return None

    def sealed_intact(self) -> bool:
        """Whether its state is the one its seal was made of (False: no seal)."""
        return self.seal is not None and hashlib.sha256(self.state).digest() == self.seal

    def leaf(self) -> bytes:
        return event_leaf(self.position, self.recorded_at, self.stored_hash)


def event_leaf(position: int, recorded_at: str, hash_value: Any) -> bytes:
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


def fast_hash(state: bytes, stream: str, version: int, event_type: str, seal: bytes | None,
              decoded: dict[str, Any] | None = None
              ) -> tuple[str | None, Any, dict[str, Any]] | None:
    """(recomputed hash, stored hash, decoded state) through orjson, or None when this
    state must take the slow path (``Event``, ``chains.StreamChecks.examine_hash``): it is
    not exactly the writer's bytes for its members (``stored_state``), or its class
    version's hash leaves something out and its seal does not match (or is missing). The
    recomputed hash is trusted only when it equals the stored one: equal SHA-256 means
    these are byte for byte the bytes that were hashed. ``decoded``: ``state`` already
    decoded by the caller (an import decodes it with its line), taken over and changed
    (its hash popped, stream, version and type added); the bytes are still held to its
    encoding, so a ``decoded`` that is not theirs is refused like altered bytes."""
    try:
        s = orjson.loads(state) if decoded is None else decoded
        # Decoding was lossless only if re-encoding gives the stored bytes back (the
        # writer's orjson made them): an integer beyond 64 bits, say, would not; nor
        # would other spacing, escapes or number forms, or a repeated member.
        if not isinstance(s, dict) or orjson.dumps(s) != state:
            return None
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    class_version = s.get("class_version", 1)
    if tuple(s) != expected_members(class_version, event_type == RESTORED):
        return None  # a member added, renamed, removed or moved
    if seal is not None and hashlib.sha256(state).digest() != seal:
        return None
    stored = s.pop("hash", None)
    s["stream"], s["version"], s["type"] = stream, version, event_type
    if class_version >= _WHOLE:  # its members, in their order, are its hashed object
        try:
            computed = hashlib.sha256(orjson.dumps(s)).hexdigest()
        except orjson.JSONEncodeError:
            return None
        return computed, stored, s
    if seal is None:
        return None  # the hash leaves out its timestamp and class_version: unsealed
    s.setdefault("restored_from_version", None)
    del s["timestamp"]
    del s["class_version"]
    for name in _OPTIONAL:  # hashed only when not null
        if name in s and s[name] is None:
            del s[name]
    try:
        computed = hashlib.sha256(chain.candidate(s)).hexdigest()
    except orjson.JSONEncodeError:
        return None
    return computed, stored, s


Heads = dict[str, tuple[int, Any]]


class Batches:
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


def snapshot_connection(database_url: str) -> Conn:
    """A connection whose first statement opens a REPEATABLE READ READ ONLY transaction."""
    conn = psycopg.connect(database_url, connect_timeout=10)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return conn


def history_at(conn: Conn, position: int) -> History | None:
    row = conn.execute(f"SELECT {_HISTORY_COLUMNS} FROM entry_history"
                       " WHERE position = %s", (position,)).fetchone()
    return None if row is None else History.from_row(row)


def history_of(conn: Conn, namespace: str, key: str, version: int) -> History | None:
    row = conn.execute(f"SELECT {_HISTORY_COLUMNS} FROM entry_history"
                       " WHERE namespace = %s AND key = %s AND version = %s",
                       (namespace, key, version)).fetchone()
    return None if row is None else History.from_row(row)


def event_at(conn: Conn, position: int) -> Event | None:
    row = conn.execute(
        "SELECT notification_id, originator_id::text, originator_version, topic, state, "
        + _TO_CHAR.format("recorded_at") + " FROM ssot_events WHERE notification_id = %s",
        (position,)).fetchone()
    return None if row is None else Event(int(row[0]), row[1], int(row[2]), row[3],
                                          bytes(row[4]), row[5])


def seal_at(conn: Conn, position: int) -> bytes | None:
    row = conn.execute("SELECT state_sha256 FROM state_seals WHERE position = %s",
                       (position,)).fetchone()
    return None if row is None else bytes(row[0])


def position_of(conn: Conn, stream: str, version: int) -> int | None:
    row = conn.execute("SELECT notification_id FROM ssot_events WHERE originator_id"
                       " = %s AND originator_version = %s",
                       (stream, version)).fetchone()
    return None if row is None else int(row[0])


#: The members whose history copy keeps the order of the members inside them (``json``
#: columns; ``auth`` is ``jsonb``, which orders them its own way).
_ORDER_KEPT = frozenset({"document", "patch", "resolution"})


def differences(event: Event, history: History | None, *, in_order: bool | None = None
                ) -> list[str]:
    """The members in which the event differs from its history copy; ``in_order``
    (default: when its hash keeps their order, class version 5) also compares the order
    of the members inside the document, the patch and the resolution."""
    if history is None or event.decoded is None:
        return []
    members = event.hashed()
    ordered = event.whole if in_order is None else in_order
    fields = []
    if members["namespace"] == history.namespace and members["key"] == history.key \
            and event.stream != str(stream_id(history.namespace, history.key)):
        fields.append("stream")
    for name in ("namespace", "key", "version", "type", "event_id", "actor", "reason",
                 "correlation_id", "causation_id", "idempotency_key", "patch",
                 "document", "resolution", "prev_hash", "hash", "auth"):
        if name == "document" and history.event_type == "entry.deleted":
            continue  # the history keeps no document for a delete
        ours = event.stored_hash if name == "hash" else members.get(name)
        theirs = history.members[name]
        if _canon(ours) != _canon(theirs) or (
                ordered and name in _ORDER_KEPT and _as_stored(ours) != _as_stored(theirs)):
            fields.append(name)
    if event.recorded_at != history.recorded_at:
        fields.append("recorded_at")
    return fields


def _canon(value: Any) -> bytes:
    try:
        return chain.canonical(value)
    except (ValueError, TypeError):
        return repr(value).encode()


def _as_stored(value: Any) -> bytes:
    """``value`` encoded with the members of its objects in their order."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except (ValueError, TypeError):
        return repr(value).encode()
