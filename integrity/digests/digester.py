"""The digester: it follows the log, records a digest of it at a cadence and publishes
every digest on NATS, each role led by one process per database.

The digester follows the log (from the process's shared log tail, ``ledger/log_tail.py``:
woken by the store's NOTIFY, polling slowly too), folds new events
into a ``merkle.Frontier`` and, every ``every_events`` events or ``every_seconds`` seconds
(when there is a new event at all), records in one transaction the new leaves
(``merkle_leaves``), the perfect subtrees they completed (``merkle_nodes``) and a digest
(``digests``): so the stored leaves are exactly those some digest covers, and a crash
loses nothing but work to redo. One digester per database leads (its lease,
``ledger/leadership.py``).

The publisher puts every digest, as JSON (``Digest.as_json``), on NATS JetStream: stream
``<SSOT_NATS_STREAM>_DIGESTS``, subject ``<SSOT_NATS_SUBJECT_PREFIX>_digests`` (outside the
events' ``<prefix>.>``, whose stream the broadcaster alone writes in hash-chained order),
``Nats-Msg-Id`` the digest's seq and ``Nats-Expected-Last-Sequence`` the stream's sequence of
the previous digest, so the stream holds the digests in order without a gap (not the
previous digest's id, ``Nats-Expected-Last-Msg-Id``: a refusal for it stops a replicated
stream on nats-server 2.14-2.15, ledger/broadcaster.py). It resumes after the last digest the
stream holds, so every digest reaches NATS across outages of either side.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import nats
import orjson
import psycopg
from nats.js import JetStreamContext

from nexus_ssot.ledger import chain
from nexus_ssot.ledger.following import Following, followed
from nexus_ssot.ledger.jetstream import Chain, ensure_stream, nats_servers, stream_tail
from nexus_ssot.ledger.jetstream_acks import Acks
from nexus_ssot.ledger.leadership import Lease, retrying
from nexus_ssot.ledger.stopping import sleep_unless_stopped

from .. import merkle
from .record import (
    Digest,
    digest_by_seq,
    digest_content,
    digest_stream,
    digest_subject,
    digests_after,
    latest_digest,
)
from .signing import Signer
from .tree import frontier_parts, leaf_of, stored_nodes

# The logger the digester had before it was a module of its own: log filters name it.
log = logging.getLogger("nexus_ssot.integrity.digests")

_LOCK_RECORDER = 0x55_0700_0003  # arbitrary, fixed: "ssot digester"
_LOCK_PUBLISHER = 0x55_0700_0004  # arbitrary, fixed: "ssot digest publisher"
_LOCK_NAME = "digests"
#: NOTIFY channel of a newly recorded digest (the publisher listens).
CHANNEL = "ssot_digests"


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
        linger: float = 0.05,
        ack_timeout: float = 5.0,
        duplicate_window: float = 600.0,
        replicas: int = 1,
        gather: float = 0.0,
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
        #: Seconds at least between two ranges folded while caught up: under a trickle of
        #: one-event commits a range then holds the events of ``linger`` seconds, not one
        #: (each wake-up cost the followers' thread more than its event's leaf).
        self.linger = linger
        self.ack_timeout = ack_timeout
        self.duplicate_window = duplicate_window
        self.replicas = replicas
        #: The log tail's gather (``LogTail``) when it runs on a following of its own
        #: (``ssot digest``); run on a shared one, that one's.
        self.gather = gather
        self.progress = Progress()

    async def run(self, stop: asyncio.Event, following: Following | None = None) -> None:
        """Lead (or wait to lead) each role until ``stop`` is set; failures are retried.
        With ``following``, on the log tail and leases of the process's other followers."""

        async def roles(following: Following) -> None:
            following.tail.listen(CHANNEL)
            both = []
            if self.record:
                both.append(retrying("digester", lambda stop: self._record(stop, following),
                                     stop, self._failed, log))
            if self.publish:
                both.append(retrying("digest publisher",
                                     lambda stop: self._publish(stop, following), stop,
                                     self._failed, log))
            await asyncio.gather(*both)

        await followed(self.database_url, roles, following, stop, self.poll_interval,
                       gather=self.gather)

    def _failed(self, error: str) -> None:
        self.progress.last_error = error

    # recording

    async def _record(self, stop: asyncio.Event, following: Following) -> None:
        async with following.leases.lead(_LOCK_RECORDER, _LOCK_NAME, stop) as lease:
            if lease is None:
                return
            self.progress.recording = True
            log.info("digester leads")
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.database_url, autocommit=True) as conn:
                    await self._record_until(stop, conn, lease, following)
            finally:
                self.progress.recording = False

    async def _record_until(self, stop: asyncio.Event, conn: psycopg.AsyncConnection[Any],
                            lease: Lease, following: Following) -> None:
        tail = following.tail
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
            events = await tail.events_after(conn, tree.position, limit)
            for event in events:
                leaf = leaf_of(event.position, event.recorded_at, event.hash)
                completed = tree.frontier.add(leaf)
                tree.leaves.append((completed[0][1], event.position, leaf))
                tree.nodes.extend(completed[1:])
                tree.position = event.position
            if tree.leaves and (len(tree.leaves) >= self.every_events
                                or time.monotonic() >= due):
                await self._commit(conn, tree)
                due = time.monotonic() + self.every_seconds
                continue
            if len(events) < limit:
                lease.check()  # still the leader?
                if events and self.linger > 0:  # caught up: let the next range fill
                    await sleep_unless_stopped(stop, self.linger)
                    continue
                wait = tail.idle_timeout(self.poll_interval)
                if tree.leaves:
                    wait = max(0.01, min(wait, due - time.monotonic()))
                await tail.wait(stop, tree.position, wait)

    async def _load(self, conn: psycopg.AsyncConnection[Any]) -> _Tree:
        """The frontier from the stored tree, checked against the last digest (the
        frontier's subtrees only: ``ssot verify`` recomputes every leaf from the log)."""
        cur = await conn.execute(
            "SELECT idx, position FROM merkle_leaves ORDER BY idx DESC LIMIT 1")
        row = await cur.fetchone()
        size, position = (int(row[0]) + 1, int(row[1])) if row else (0, 0)
        parts = frontier_parts(size)
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

    async def _publish(self, stop: asyncio.Event, following: Following) -> None:
        assert self.nats_url
        tail = following.tail
        async with following.leases.lead(_LOCK_PUBLISHER, _LOCK_NAME, stop) as lease:
            if lease is None:
                return
            self.progress.publishing = True
            log.info("digest publisher leads (stream %s, subject %s)", self.stream,
                     self.subject)
            nc = await nats.connect(nats_servers(self.nats_url), allow_reconnect=False,
                                    connect_timeout=2)
            try:
                js = nc.jetstream(timeout=self.ack_timeout)
                await ensure_stream(js, self.stream, [self.subject],
                                    duplicate_window=self.duplicate_window,
                                    replicas=self.replicas)
                acks = Acks(nc)  # a refusal answered at once (jetstream_acks.py)
                try:
                    async with await psycopg.AsyncConnection.connect(
                            self.database_url, autocommit=True) as conn:
                        published, last_seq = await self._stream_tail(js, conn)
                        chain = Chain(self.stream, last_seq, self.ack_timeout)
                        self.progress.published_seq = published
                        while not stop.is_set():
                            heard = tail.heard(CHANNEL)
                            digests = await digests_after(conn, published, chain.limit(256))
                            if digests:
                                # those the stream holds; the rest go again next
                                held = await chain.publish(acks, [
                                    (self.subject, orjson.dumps(d.as_json()),
                                     {"Nats-Msg-Id": str(d.seq), "Ssot-Digest-Seq": str(d.seq),
                                      "Ssot-Position": str(d.position)}) for d in digests])
                                published = digests[held - 1].seq
                                self.progress.published_seq = published
                                self.progress.last_error = None
                                continue
                            lease.check()
                            # a NOTIFY wakes it; the tail's slow poll is the fallback
                            await tail.wait_for(CHANNEL, heard, stop,
                                                tail.idle_timeout(self.poll_interval))
                finally:
                    await acks.close()
            finally:
                self.progress.publishing = False
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _stream_tail(self, js: JetStreamContext,
                           conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
        """(the seq of the last digest the stream holds (0: none), checked to be this
        database's digest of that seq; the stream's last sequence)."""
        last_seq, msg = await stream_tail(js, self.stream, vanished_is_lost=False)
        if msg is None:  # never held one, or lost them all: publish every digest again
            return 0, last_seq
        held = orjson.loads(msg.data or b"null")
        if not isinstance(held, dict) or "seq" not in held or "hash" not in held:
            raise TreeMismatch(f"stream {self.stream} ends with a message that is no digest")
        ours = await digest_by_seq(conn, int(held["seq"]))
        if ours is None or ours.hash.hex() != held["hash"]:
            raise TreeMismatch(
                f"stream {self.stream} ends with digest {held['seq']} (hash {held['hash']}), "
                "which is not this database's: it holds another log's digests (publish to "
                "another SSOT_NATS_STREAM, or delete that stream)")
        return int(held["seq"]), last_seq

