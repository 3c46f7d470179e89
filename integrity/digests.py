"""Digests of the log: a Merkle tree over every event, its root recorded, chained, signed
and published at a cadence, and inclusion proofs against it (promise 7).

The tree (RFC 6962, ``merkle``) has one leaf per event of ``ssot_events`` in position
order — leaf ``i`` is the log's ``i``-th event, whatever the gaps in positions — and a
leaf is ``merkle.leaf_hash(chain.leaf_data(position, recorded_at, hash))`` with the
event's own hash from its state (so a digest covers each event's content through its hash,
and its global position and commit time directly). An unchained event (no ``hash``) has
the leaf data ``{"hash":null,"position":…,"recorded_at":…}``.

The digester follows the log (woken by the store's NOTIFY, polling too), folds new events
into a ``merkle.Frontier`` and, every ``every_events`` events or ``every_seconds`` seconds
(when there is a new event at all), records in one transaction the new leaves
(``merkle_leaves``), the perfect subtrees they completed (``merkle_nodes``) and a digest
(``digests``): so the stored leaves are exactly those some digest covers, and a crash
loses nothing but work to redo. One digester per database leads (a session advisory lock).

A digest's canonical content is ``chain.canonical`` of the object

    {"seq": 7, "position": 7012, "size": 7000, "root": "<64 hex>",
     "recorded_at": "2026-01-31T12:00:00.123456Z", "prev": "<64 hex>" | null}

that is, byte for byte, ``{"position":7012,"prev":"…","recorded_at":"…","root":"…",
"seq":7,"size":7000}`` (members sorted, no spaces; hex lower case; ``recorded_at`` the
digest's database clock as ``chain.timestamp`` spells it; ``position`` the last
covered event's, ``size`` the number of events covered, ``prev`` the previous digest's
hash, null for seq 1). Its ``hash`` is SHA-256 of that content (so digests form a chain of
their own), and with a signing key (``SSOT_SIGNING_KEY_FILE``, Ed25519, PKCS#8 PEM) its
``signature`` is Ed25519 over the same bytes, by the key named ``key_id`` (the first 16 hex
digits of SHA-256 of the raw 32-byte public key).

The publisher puts every digest, as JSON (``Digest.as_json``), on NATS JetStream: stream
``<SSOT_NATS_STREAM>_DIGESTS``, subject ``<SSOT_NATS_SUBJECT_PREFIX>_digests`` (outside the
events' ``<prefix>.>``, whose stream the broadcaster alone writes in hash-chained order),
``Nats-Msg-Id`` the digest's seq and ``Nats-Expected-Last-Msg-Id`` the previous seq, so the
stream holds the digests in order without a gap. It resumes after the last digest the
stream holds, so every digest reaches NATS across outages of either side.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import orjson
import psycopg
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from nexus_ssot.ledger import chain
from nexus_ssot.ledger.addressing import stream_id
from nexus_ssot.ledger.errors import EditConflict, NotFound, Unprocessable
from nexus_ssot.ledger.events import TYPE_OF_TOPIC
from nexus_ssot.ledger.leadership import leadership, retrying, wait_for_news

from . import merkle

log = logging.getLogger(__name__)

_LOCK_RECORDER = 0x55_0700_0003  # arbitrary, fixed: "ssot digester"
_LOCK_PUBLISHER = 0x55_0700_0004  # arbitrary, fixed: "ssot digest publisher"
_LOCK_NAME = "digests"
#: NOTIFY channel of a newly recorded digest (the publisher listens).
CHANNEL = "ssot_digests"


def digest_stream(events_stream: str) -> str:
    """The JetStream stream the digests go to, beside the events' stream."""
    return f"{events_stream}_DIGESTS"


def digest_subject(prefix: str) -> str:
    """The subject digests are published on: ``ssot_digests`` for prefix ``ssot``."""
    return f"{prefix}_digests"


# --- digests ---------------------------------------------------------------------------


def digest_content(seq: int, position: int, size: int, root: bytes, recorded_at: datetime,
                   prev: bytes | None) -> dict[str, Any]:
    """The members a digest's hash and signature cover (see the module docstring)."""
    return {"seq": seq, "position": position, "size": size, "root": root.hex(),
            "recorded_at": chain.timestamp(recorded_at),
            "prev": prev.hex() if prev is not None else None}


@dataclass(frozen=True)
class Digest:
    seq: int
    position: int
    size: int
    root: bytes
    recorded_at: datetime
    prev: bytes | None
    hash: bytes
    signature: bytes | None = None
    key_id: str | None = None

    COLUMNS = "seq, position, size, root, recorded_at, prev, hash, signature, key_id"

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Digest:
        seq, position, size, root, at, prev, hash_, signature, key_id = row
        return cls(int(seq), int(position), int(size), bytes(root), at,
                   bytes(prev) if prev is not None else None, bytes(hash_),
                   bytes(signature) if signature is not None else None, key_id)

    def content(self) -> dict[str, Any]:
        return digest_content(self.seq, self.position, self.size, self.root,
                              self.recorded_at, self.prev)

    def canonical(self) -> bytes:
        return chain.canonical(self.content())

    def as_json(self) -> dict[str, Any]:
        """The digest as published on NATS and served by the API (bytes as hex)."""
        return {**self.content(), "hash": self.hash.hex(),
                "signature": self.signature.hex() if self.signature is not None else None,
                "key_id": self.key_id}


# --- signing ---------------------------------------------------------------------------


class SigningKeyError(ValueError):
    """The configured signing key cannot be used (the message names the file)."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """The Ed25519 key in the PKCS#8 PEM file ``path`` (SSOT_SIGNING_KEY_FILE)."""
        try:
            data = path.read_bytes()
        except OSError as e:
            raise SigningKeyError(
                f"SSOT_SIGNING_KEY_FILE {str(path)!r} cannot be read: {e.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise SigningKeyError(
                f"SSOT_SIGNING_KEY_FILE {str(path)!r} is not an unencrypted PKCS#8 PEM "
                f"private key: {e}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"SSOT_SIGNING_KEY_FILE {str(path)!r} holds a "
                                  f"{type(key).__name__}, not an Ed25519 key")
        return cls(key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def public_json(self) -> dict[str, str]:
        """What ``GET /v1/integrity/public-key`` serves."""
        public = self.public_key
        return {
            "algorithm": "Ed25519",
            "key_id": key_id(public),
            "public_key_pem": public.public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
            "public_key_hex": public.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex(),
        }

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


# --- the tree in the database ----------------------------------------------------------


def leaf_of(position: int, recorded_at: datetime, hash_hex: str | None) -> bytes:
    """The leaf hash of the log event at ``position``."""
    if hash_hex is None:
        data = chain.canonical({"position": position,
                                    "recorded_at": chain.timestamp(recorded_at),
                                    "hash": None})
    else:
        data = chain.leaf_data(position, recorded_at, hash_hex)
    return merkle.leaf_hash(data)


def _perfect(start: int, end: int) -> tuple[int, int] | None:
    """(level, index) of [start, end) if it is a perfect aligned subtree."""
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        return n.bit_length() - 1, start // n
    return None


def _compose(start: int, end: int, node: Callable[[int, int], bytes]) -> bytes:
    """MTH of leaves [start, end) from the stored perfect subtrees ``node(level, index)``:
    perfect ranges are read, a ragged right edge is hashed from its perfect parts."""
    whole = _perfect(start, end)
    if whole is not None:
        return node(*whole)
    k = 1 << ((end - start - 1).bit_length() - 1)
    return merkle.node_hash(_compose(start, start + k, node),
                            _compose(start + k, end, node))


async def stored_nodes(conn: psycopg.AsyncConnection[Any],
                       wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored hashes of perfect subtrees (level, index); level 0 are the leaves."""
    found: dict[tuple[int, int], bytes] = {}
    leaves = sorted(i for level, i in wanted if level == 0)
    if leaves:
        cur = await conn.execute("SELECT idx, hash FROM merkle_leaves WHERE idx = ANY(%s)",
                                 (leaves,))
        found.update(((0, int(i)), bytes(h)) for i, h in await cur.fetchall())
    nodes = sorted((level, i) for level, i in wanted if level > 0)
    if nodes:
        cur = await conn.execute(
            "SELECT n.level, n.idx, n.hash FROM merkle_nodes n"
            " JOIN unnest(%s::int[], %s::bigint[]) AS w(level, idx) USING (level, idx)",
            ([level for level, _ in nodes], [i for _, i in nodes]))
        found.update(((int(lv), int(i)), bytes(h)) for lv, i, h in await cur.fetchall())
    missing = wanted - found.keys()
    if missing:
        raise RuntimeError(f"the stored Merkle tree lacks the subtrees {sorted(missing)[:5]}")
    return found


async def stored_audit_path(conn: psycopg.AsyncConnection[Any], index: int,
                            size: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of the first ``size`` stored leaves."""
    wanted: set[tuple[int, int]] = set()

    def want(level: int, i: int) -> bytes:
        wanted.add((level, i))
        return merkle.EMPTY_ROOT

    merkle.audit_path(index, size, lambda s, e: _compose(s, e, want))
    nodes = await stored_nodes(conn, wanted)
    return merkle.audit_path(index, size, lambda s, e: _compose(s, e,
                                                                lambda lv, i: nodes[lv, i]))


def _frontier_parts(size: int) -> list[tuple[int, int]]:
    """(level, index) of the perfect subtrees covering ``size`` leaves, largest first."""
    parts, start = [], 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            parts.append((level, start >> level))
            start += 1 << level
    return parts


async def latest_digest(conn: psycopg.AsyncConnection[Any]) -> Digest | None:
    cur = await conn.execute(f"SELECT {Digest.COLUMNS} FROM digests ORDER BY seq DESC LIMIT 1")
    row = await cur.fetchone()
    return Digest.from_row(row) if row else None


async def digest_by_seq(conn: psycopg.AsyncConnection[Any], seq: int) -> Digest | None:
    cur = await conn.execute(f"SELECT {Digest.COLUMNS} FROM digests WHERE seq = %s", (seq,))
    row = await cur.fetchone()
    return Digest.from_row(row) if row else None


async def digests_after(conn: psycopg.AsyncConnection[Any], after: int,
                        limit: int) -> list[Digest]:
    cur = await conn.execute(f"SELECT {Digest.COLUMNS} FROM digests WHERE seq > %s"
                             " ORDER BY seq LIMIT %s", (after, limit))
    return [Digest.from_row(r) for r in await cur.fetchall()]


# --- proofs ----------------------------------------------------------------------------


class NotYetDigested(EditConflict):
    """409: no digest covers the event yet (the next is expected by ``expected_at``)."""

    code = "not_yet_digested"


async def proof(conn: psycopg.AsyncConnection[Any], namespace: str, key: str, version: int,
                seq: int | None, every_seconds: float) -> dict[str, Any]:
    """The event ``version`` of ``namespace/key`` from the log, its leaf and audit path to
    digest ``seq`` (default: the latest), and that digest."""
    cur = await conn.execute(
        "SELECT notification_id, recorded_at, topic, state FROM ssot_events"
        " WHERE originator_id = %s AND originator_version = %s",
        (stream_id(namespace, key), version))
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute("SELECT 1 FROM ssot_events WHERE originator_id = %s LIMIT 1",
                                 (stream_id(namespace, key),))
        if await cur.fetchone() is None:
            raise NotFound(f"entry {namespace}/{key} has no history", code="entry_not_found",
                           field="key")
        raise NotFound(f"entry {namespace}/{key} has no version {version}",
                       code="version_not_found", field="version")
    position, recorded_at, topic, state = int(row[0]), row[1], row[2], orjson.loads(row[3])
    digest = await latest_digest(conn) if seq is None else await digest_by_seq(conn, seq)
    if seq is not None and digest is None:
        raise NotFound(f"there is no digest {seq}", code="digest_not_found", field="digest")
    cur = await conn.execute("SELECT idx FROM merkle_leaves WHERE position = %s", (position,))
    leaf_row = await cur.fetchone()
    if leaf_row is None or digest is None:
        last = digest if seq is None else await latest_digest(conn)
        expected = (last.recorded_at if last else recorded_at) + timedelta(seconds=every_seconds)
        raise NotYetDigested(
            f"version {version} of {namespace}/{key} (position {position}) is in no digest "
            f"yet; the next one is expected by {chain.timestamp(expected)} while a "
            "digester runs", field="version", position=position,
            digested_through=last.position if last else 0,
            next_digest_expected_at=chain.timestamp(expected))
    index = int(leaf_row[0])
    if index >= digest.size:
        raise Unprocessable(
            f"digest {digest.seq} covers the log up to position {digest.position}, before "
            f"version {version} of {namespace}/{key} (position {position}): name a later "
            "digest, or none for the latest", code="not_in_digest", field="digest")
    fields = {**state, "stream": str(stream_id(namespace, key)), "version": version,
              "type": TYPE_OF_TOPIC.get(topic, topic)}
    event: dict[str, Any] = {k: fields.get(k) for k in chain.HASHED}
    event.update(position=position, recorded_at=chain.timestamp(recorded_at),
                 event_type=event["type"], hash=state.get("hash"))
    leaf = leaf_of(position, recorded_at, state.get("hash"))
    path = await stored_audit_path(conn, index, digest.size)
    return {
        "event": event,
        "leaf": {"index": index, "hash": leaf.hex(), "data": chain.canonical(
            {"position": position, "recorded_at": event["recorded_at"],
             "hash": event["hash"]}).decode()},
        "audit_path": [p.hex() for p in path],
        "digest": digest.as_json(),
    }


# --- the digester ----------------------------------------------------------------------


@dataclass
class Progress:
    recording: bool = False  # leads the recording of digests
    publishing: bool = False  # leads their publication
    size: int = 0  # events digested
    position: int = 0  # the last digested event's position
    seq: int = 0  # the last digest recorded
    published_seq: int = 0  # the last digest the stream holds
    last_error: str | None = None


class TreeMismatch(RuntimeError):
    """The stored tree does not give the stored digests' root: refuse to extend it."""


@dataclass
class _Tree:
    frontier: merkle.Frontier
    position: int
    last: Digest | None
    leaves: list[tuple[int, int, bytes]] = field(default_factory=list)
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)


class Digester:
    """Records digests (``record``) and publishes them on NATS (``publish``); each role
    has its own leader per database, so a process may do one, the other or both."""

    def __init__(
        self,
        database_url: str,
        nats_url: str | None,
        *,
        stream: str = "SSOT",
        prefix: str = "ssot",
        every_events: int = 1000,
        every_seconds: float = 60.0,
        signer: Signer | None = None,
        record: bool = True,
        publish: bool = True,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        ack_timeout: float = 5.0,
        duplicate_window: float = 600.0,
    ) -> None:
        if publish and not nats_url:
            raise ValueError("publishing digests needs a NATS URL")
        self.database_url = database_url
        self.nats_url = nats_url
        self.stream = digest_stream(stream)
        self.subject = digest_subject(prefix)
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.signer = signer
        self.record = record
        self.publish = publish
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.ack_timeout = ack_timeout
        self.duplicate_window = duplicate_window
        self.progress = Progress()

    async def run(self, stop: asyncio.Event) -> None:
        """Lead (or wait to lead) each role until ``stop`` is set; failures are retried."""
        roles = []
        if self.record:
            roles.append(retrying("digester", self._record, stop, self._failed, log))
        if self.publish:
            roles.append(retrying("digest publisher", self._publish, stop, self._failed, log))
        await asyncio.gather(*roles)

    def _failed(self, error: str) -> None:
        self.progress.last_error = error

    # recording

    async def _record(self, stop: asyncio.Event) -> None:
        async with leadership(self.database_url, _LOCK_RECORDER, _LOCK_NAME, stop,
                              self.poll_interval) as lock_conn:
            if lock_conn is None:
                return
            self.progress.recording = True
            log.info("digester leads")
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.database_url, autocommit=True) as conn, \
                        await psycopg.AsyncConnection.connect(
                            self.database_url, autocommit=True) as listen_conn:
                    await listen_conn.execute("LISTEN ssot_events")
                    await self._record_until(stop, conn, listen_conn, lock_conn)
            finally:
                self.progress.recording = False

    async def _record_until(self, stop: asyncio.Event, conn: psycopg.AsyncConnection[Any],
                            listen_conn: psycopg.AsyncConnection[Any],
                            lock_conn: psycopg.AsyncConnection[Any]) -> None:
        tree = await self._load(conn)
        due = time.monotonic()
        if tree.last is not None:
            cur = await conn.execute("SELECT clock_timestamp() - %s", (tree.last.recorded_at,))
            row = await cur.fetchone()
            age = row[0].total_seconds() if row else 0.0
            due += max(0.0, self.every_seconds - age)
        while not stop.is_set():
            room = self.every_events - len(tree.leaves)
            limit = min(self.batch_size, room)
            cur = await conn.execute(
                "SELECT notification_id, recorded_at, state FROM ssot_events"
                " WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
                (tree.position, limit), prepare=True)
            rows = await cur.fetchall()
            for position, recorded_at, state in rows:
                leaf = leaf_of(position, recorded_at, orjson.loads(state).get("hash"))
                completed = tree.frontier.add(leaf)
                tree.leaves.append((completed[0][1], position, leaf))
                tree.nodes.extend(completed[1:])
                tree.position = position
            if tree.leaves and (len(tree.leaves) >= self.every_events
                                or time.monotonic() >= due):
                await self._commit(conn, tree)
                due = time.monotonic() + self.every_seconds
                continue
            if len(rows) < limit:
                await lock_conn.execute("SELECT 1")  # still the leader's session?
                wait = self.poll_interval
                if tree.leaves:
                    wait = max(0.01, min(wait, due - time.monotonic()))
                await wait_for_news(stop, listen_conn, wait)

    async def _load(self, conn: psycopg.AsyncConnection[Any]) -> _Tree:
        """The frontier from the stored tree, checked against the last digest (the
        frontier's subtrees only: ``ssot verify`` recomputes every leaf from the log)."""
        cur = await conn.execute(
            "SELECT idx, position FROM merkle_leaves ORDER BY idx DESC LIMIT 1")
        row = await cur.fetchone()
        size, position = (int(row[0]) + 1, int(row[1])) if row else (0, 0)
        parts = _frontier_parts(size)
        nodes = await stored_nodes(conn, set(parts))
        frontier = merkle.Frontier(size=size, levels=[lv for lv, _ in parts],
                                   nodes=[nodes[p] for p in parts])
        last = await latest_digest(conn)
        if last is not None and (last.size != size or last.position != position
                                 or last.root != frontier.root()):
            raise TreeMismatch(
                f"digest {last.seq} covers {last.size} events up to position "
                f"{last.position} with root {last.root.hex()}, the stored tree has {size} "
                f"leaves up to position {position} with root {frontier.root().hex()}: "
                "the digest tables were altered (run ssot verify)")
        self._report(last)
        return _Tree(frontier, position, last)

    async def _commit(self, conn: psycopg.AsyncConnection[Any], tree: _Tree) -> None:
        """Record the pending leaves and nodes and a digest of the tree, atomically."""
        last = tree.last
        async with conn.transaction():
            cur = await conn.execute("SELECT clock_timestamp()")
            row = await cur.fetchone()
            assert row is not None
            seq = last.seq + 1 if last else 1
            content = digest_content(seq, tree.position, tree.frontier.size,
                                     tree.frontier.root(), row[0],
                                     last.hash if last else None)
            canonical = chain.canonical(content)
            digest = Digest(seq, tree.position, tree.frontier.size, tree.frontier.root(),
                            row[0], last.hash if last else None,
                            hashlib.sha256(canonical).digest(),
                            self.signer.sign(canonical) if self.signer else None,
                            self.signer.key_id if self.signer else None)
            async with conn.cursor() as c:
                async with c.copy("COPY merkle_leaves (idx, position, hash) FROM STDIN") as cp:
                    for leaf in tree.leaves:
                        await cp.write_row(leaf)
                if tree.nodes:
                    async with c.copy("COPY merkle_nodes (level, idx, hash) FROM STDIN") as cp:
                        for node in tree.nodes:
                            await cp.write_row(node)
                await c.execute(
                    f"INSERT INTO digests ({Digest.COLUMNS})"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (digest.seq, digest.position, digest.size, digest.root,
                     digest.recorded_at, digest.prev, digest.hash, digest.signature,
                     digest.key_id))
                await c.execute(f"NOTIFY {CHANNEL}")
        tree.last, tree.leaves, tree.nodes = digest, [], []
        self._report(digest)

    def _report(self, digest: Digest | None) -> None:
        if digest is not None:
            self.progress.seq, self.progress.size = digest.seq, digest.size
            self.progress.position = digest.position
        self.progress.last_error = None

    # publishing

    async def _publish(self, stop: asyncio.Event) -> None:
        assert self.nats_url
        async with leadership(self.database_url, _LOCK_PUBLISHER, _LOCK_NAME, stop,
                              self.poll_interval) as lock_conn:
            if lock_conn is None:
                return
            self.progress.publishing = True
            log.info("digest publisher leads (stream %s, subject %s)", self.stream,
                     self.subject)
            nc = await nats.connect(self.nats_url, allow_reconnect=False, connect_timeout=2)
            try:
                js = nc.jetstream(timeout=self.ack_timeout)
                await self._ensure_stream(js)
                async with await psycopg.AsyncConnection.connect(
                        self.database_url, autocommit=True) as conn, \
                        await psycopg.AsyncConnection.connect(
                            self.database_url, autocommit=True) as listen_conn:
                    await listen_conn.execute(f"LISTEN {CHANNEL}")
                    published = await self._stream_tail(js, conn)
                    self.progress.published_seq = published
                    while not stop.is_set():
                        digests = await digests_after(conn, published, 256)
                        if digests:
                            published = await self._send(js, digests, published)
                            self.progress.published_seq = published
                            self.progress.last_error = None
                            continue
                        await lock_conn.execute("SELECT 1")
                        await wait_for_news(stop, listen_conn, self.poll_interval)
            finally:
                self.progress.publishing = False
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(StreamConfig(name=self.stream, subjects=[self.subject],
                                             duplicate_window=self.duplicate_window))

    async def _stream_tail(self, js: JetStreamContext,
                           conn: psycopg.AsyncConnection[Any]) -> int:
        """The seq of the last digest the stream holds (0: none), checked to be this
        database's digest of that seq."""
        info = await js.stream_info(self.stream)
        if not info.state.messages or not info.state.last_seq:
            return 0  # never held one, or lost them all: publish every digest again
        msg = await js.get_msg(self.stream, seq=info.state.last_seq)
        held = orjson.loads(msg.data or b"null")
        if not isinstance(held, dict) or "seq" not in held or "hash" not in held:
            raise TreeMismatch(f"stream {self.stream} ends with a message that is no digest")
        ours = await digest_by_seq(conn, int(held["seq"]))
        if ours is None or ours.hash.hex() != held["hash"]:
            raise TreeMismatch(
                f"stream {self.stream} ends with digest {held['seq']} (hash {held['hash']}), "
                "which is not this database's: it holds another log's digests (publish to "
                "another SSOT_NATS_STREAM, or delete that stream)")
        return int(held["seq"])

    async def _send(self, js: JetStreamContext, digests: list[Digest], published: int) -> int:
        """Publish ``digests`` pipelined; return the last seq once every one is acked."""
        pending = []
        for digest in digests:
            headers = {"Nats-Msg-Id": str(digest.seq), "Ssot-Digest-Seq": str(digest.seq),
                       "Ssot-Position": str(digest.position)}
            if published:
                headers["Nats-Expected-Last-Msg-Id"] = str(published)
            pending.append(await js.publish_async(
                self.subject, orjson.dumps(digest.as_json()), headers=headers))
            published = digest.seq
        try:
            for future in pending:
                await asyncio.wait_for(future, self.ack_timeout)
        finally:
            for future in pending:
                future.cancel()
        return published

