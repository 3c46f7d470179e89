"""The ``nats_kv_mirror`` view: every entry's current document in a JetStream key-value
bucket, so services read (``kv.get``) and follow (``kv.watch``) entries without HTTP.

Buckets: one per namespace, ``<prefix><namespace>`` (``ssot_config``), created on first
use with history 1 (the ledger keeps the history, the bucket only the present), file
storage, direct gets, and no TTL or size limits. Keys: an entry key's ``/``-separated
segments become ``.``-separated tokens, so ``kv.watch("services.>")`` follows a folder;
every character outside ``[A-Za-z0-9_-]`` is written ``=XX`` (its UTF-8 bytes in upper-case
hex; KV keys do not allow ``%``): ``services/payments/db.url`` is
``services.payments.db=2Eurl``. Values: the document as JSON. A deleted entry's key is
deleted (a delete marker: ``kv.get`` finds nothing, watchers see the delete). Namespace
settings (the system namespace) are not mirrored.

Writes are at least once and idempotent by content: every write's acknowledgement is
awaited before the range is recorded (``range_statement`` returns only then, and the
runner commits the table's rows and the view's position in one statement), so the position
moves only once NATS has the range; a crash in between makes the next runner write the
range again, each key's latest document of the range once more (a watcher may see a value
twice). The view's table records what the mirror holds (live entries only).

``effects = False`` (a rebuild's replay) folds the table without writing to NATS;
``reconcile()`` then brings every bucket level with ``entries``, and with ``dry_run`` is the
mirror's consistency check.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import nats
import nats.errors
import nats.js.errors
import orjson
import psycopg
from nats.aio.client import Client
from nats.js.api import Header, KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.kv import KV_DEL, KV_OP, KeyValue

from nexus_ssot.ledger.addressing import NAMESPACE_PATTERN, is_system_namespace
from nexus_ssot.ledger.jetstream import nats_servers
from nexus_ssot.ledger.jetstream_acks import Acks
from nexus_ssot.ledger.log_tail import LogEvent
from nexus_ssot.ledger.redaction import redact_url
from nexus_ssot.ledger.stopping import deadline
from nexus_ssot.ledger.subjects import decode_token, encode_token

from .runtime import Tables, apply_ctes, next_upto, read_log

log = logging.getLogger(__name__)
T = TypeVar("T")

NAME = "nats_kv_mirror"  # views.KV_MIRROR, which names it without importing this

#: A bucket prefix: with a namespace it makes a valid bucket name.
BUCKET_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_TOKEN = re.compile(r"(?:[A-Za-z0-9_-]|=[0-9A-F]{2})+")
#: Writes awaited together (acknowledgements in flight).
_IN_FLIGHT = 256
#: JetStream's "wrong last sequence" errors: a conditional write lost a race.
_WRONG_LAST_SEQUENCE = (10071, 10164)
_DELETED_OPS = ("DEL", "PURGE")
_EXAMPLES = 10

_DDL = """
CREATE TABLE IF NOT EXISTS {mirror} (
    namespace text NOT NULL,
    key text NOT NULL,
    version bigint NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (namespace, key)
)
"""


def kv_key(key: str) -> str:
    """The KV key of an entry key (``services/payments/db.url`` →
    ``services.payments.db=2Eurl``)."""
    segments = key.split("/")
    if not all(segments):
        raise ValueError(f"key {key!r} has an empty segment")
    # subjects.py escapes as %XX and escapes every '%' and '=' it meets: swapping the
    # escape character keeps the encoding exact.
    return ".".join(encode_token(s).replace("%", "=") for s in segments)


def entry_key(kv: str) -> str:
    """The entry key of a KV key written by ``kv_key``; ValueError for any other key."""
    tokens = kv.split(".")
    if not all(_TOKEN.fullmatch(t) for t in tokens):
        raise ValueError(f"{kv!r} is not a KV key of an entry")
    key = "/".join(decode_token(t.replace("=", "%")) for t in tokens)
    if kv_key(key) != kv:  # e.g. "=41" for "A": not what kv_key writes
        raise ValueError(f"{kv!r} is not a KV key of an entry")
    return key


class KvMirrorError(OSError):
    """NATS did not take (or answer) a mirror write or read. An ``OSError`` so the view
    runner treats it like a lost database connection: it rolls the range back, reports
    the error, and retries."""


@dataclass(slots=True)
class _Write:
    namespace: str
    key: str  # the KV key
    value: bytes | None  # None: delete
    #: Conditional on the key's last revision (0: the key has no message); None: not.
    last: int | None = None


@dataclass(slots=True)
class _Held:
    revision: int
    value: bytes | None  # None: a delete marker


@dataclass
class _Report:
    dry_run: bool
    namespaces: int = 0
    found: dict[str, list[str]] = field(
        default_factory=lambda: {"missing": [], "stale": [], "extra": []})
    counts: dict[str, int] = field(
        default_factory=lambda: {"missing": 0, "stale": 0, "extra": 0})
    repaired: int = 0
    changed_meanwhile: int = 0

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.found[kind]) < _EXAMPLES:
            self.found[kind].append(example)

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "namespaces": self.namespaces, **self.counts,
                "examples": self.found, "repaired": self.repaired,
                "changed_meanwhile": self.changed_meanwhile}


class KvMirror:
    """The view. One NATS connection per instance, opened on first use and dropped on any
    failure (the runner retries the range on a fresh one)."""

    name: ClassVar[str] = NAME
    tables: ClassVar[tuple[str, ...]] = ("view_kv_mirror",)
    side_effects: ClassVar[bool] = True

    def __init__(self, nats_url: str, bucket_prefix: str = "ssot_", *,
                 timeout: float = 5.0, replicas: int = 1) -> None:
        if not BUCKET_PREFIX_PATTERN.fullmatch(bucket_prefix):
            raise ValueError(f"bucket_prefix {bucket_prefix!r} is invalid: use 1-32 letters, "
                             "digits, '_' or '-'")
        self.nats_url = nats_url
        self.bucket_prefix = bucket_prefix
        self.timeout = timeout
        self.replicas = replicas
        #: False while replaying (a rebuild): the table is folded, NATS is not written.
        self.effects = True
        #: Events read from the log at a time.
        self.read_slice = 10_000
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._acks: Acks | None = None
        self._buckets: dict[str, KeyValue] = {}

    def bucket(self, namespace: str) -> str:
        """The bucket name of a namespace."""
        return self.bucket_prefix + namespace

    def ddl(self, t: Tables) -> str:
        return _DDL.format(mirror=t[self.tables[0]])

    async def apply(self, conn: psycopg.AsyncConnection[Any], after: int, upto: int,
                    t: Tables) -> None:
        # Each key's last event in the range, read a bounded slice at a time (a rebuild
        # or a check may hand over the whole log).
        latest: dict[tuple[str, str], LogEvent] = {}
        position = after
        while (end := await next_upto(conn, position, self.read_slice, upto)) is not None:
            _latest_of(await read_log(conn, position, end), latest)
            position = end
        fold = await self._fold(conn, latest, t)
        if fold is not None:
            await apply_ctes(conn, *fold)

    async def range_statement(self, conn: psycopg.AsyncConnection[Any], after: int,
                              upto: int, t: Tables, events: Sequence[LogEvent]
                              ) -> tuple[bytes, dict[str, Any]] | None:
        return await self._fold(conn, _latest_of(events, {}), t)

    async def _fold(self, conn: psycopg.AsyncConnection[Any],
                    latest: dict[tuple[str, str], LogEvent], t: Tables
                    ) -> tuple[bytes, dict[str, Any]] | None:
        """Write (with ``effects``) each key's ``latest`` event to NATS, and return what
        records it in the table (common table expressions and their parameters; None:
        nothing to record)."""
        if not latest:
            return None
        live = [e for e in latest.values() if e.event_type != "entry.deleted"]
        gone = [e for e in latest.values() if e.event_type == "entry.deleted"]
        mirror = t[self.tables[0]]
        # Each as one JSON array, made by orjson: a list parameter costs psycopg's list
        # dumper ~20K instructions of Python whatever its length (four of them a range).
        params: dict[str, Any] = {}
        if gone:
            params["gone"] = orjson.dumps([(e.namespace, e.key) for e in gone]).decode()
        if live:
            params["live"] = orjson.dumps(
                [(e.namespace, e.key, e.version, e.position) for e in live]).decode()
        if self.effects:
            held: set[tuple[str, str]] = set()
            if gone:  # only keys the mirror holds need a delete marker
                cur = await conn.execute(_held(mirror), params)
                held = {(ns, key) for ns, key in await cur.fetchall()}
            await self._guarded(self._send([
                *(_Write(e.namespace, kv_key(e.key), orjson.dumps(e.document)) for e in live),
                *(_Write(e.namespace, kv_key(e.key), None) for e in gone
                  if (e.namespace, e.key) in held)]))
        return _record(mirror, bool(gone), bool(live)), params

    async def reconcile(self, conn: psycopg.AsyncConnection[Any], *,
                        namespaces: Iterable[str] | None = None,
                        dry_run: bool = False) -> dict[str, Any]:
        """Compare the buckets with ``entries`` and repair them (or, ``dry_run``, only
        report): a live entry whose key is absent is *missing*, one whose value is not its
        document (as JSON values) is *stale*, a key with a value that is no live entry
        (deleted, never written, or not an entry's key at all) is *extra*. Returns the
        counts, up to 10 ``namespace/key`` examples of each, how many keys were repaired,
        and how many changed meanwhile (left alone: a newer write got there first).

        Every namespace written (default) or those given. Per namespace the bucket is read
        before ``entries``, and repairs are conditional on the revision read, so a repair
        never overwrites a newer write of a running mirror. While the mirror lags, its lag
        shows as differences: check at rest, or expect them.
        """
        if namespaces is None:
            cur = await conn.execute(
                "SELECT DISTINCT namespace FROM entries WHERE namespace NOT LIKE %s",
                ("\\_%",))
            names = sorted(ns for (ns,) in await cur.fetchall())
        else:
            names = sorted(set(namespaces))
            for ns in names:
                if not NAMESPACE_PATTERN.fullmatch(ns):
                    raise ValueError(f"namespaces: {ns!r} is not a namespace")
        report = _Report(dry_run)
        for ns in names:
            await self._guarded(self._reconcile(conn, ns, report))
            report.namespaces += 1
        return report.as_dict()

    async def close(self) -> None:
        """Close the NATS connection (a later use opens a new one)."""
        nc, self._nc, self._js, self._acks = self._nc, None, None, None
        self._buckets.clear()
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception as e:  # closing a broken connection: nothing left to do
                log.debug("closing the KV mirror's NATS connection: %r", e)

    # --- NATS ---------------------------------------------------------------------------

    async def _guarded(self, work: Awaitable[T]) -> T:
        """Await ``work``; a NATS failure drops the connection and becomes KvMirrorError."""
        try:
            return await work
        except (nats.errors.Error, OSError, TimeoutError) as e:
            if isinstance(e, KvMirrorError):
                raise
            await self.close()
            raise KvMirrorError(
                f"NATS KV mirror at {redact_url(self.nats_url)}: {redact_url(repr(e))}") from e

    async def _jetstream(self) -> JetStreamContext:
        if self._nc is None or self._js is None or not self._nc.is_connected:
            await self.close()

            async def error(e: Exception) -> None:
                log.debug("KV mirror NATS connection: %r", e)  # the runner warns

            # nats-py retries a first connect up to max_reconnect_attempts times, waiting
            # between them, even without reconnects: fail fast, the runner retries.
            self._nc = await nats.connect(nats_servers(self.nats_url), name="ssot-kv-mirror",
                                          allow_reconnect=False, max_reconnect_attempts=1,
                                          reconnect_time_wait=0.1,
                                          connect_timeout=self.timeout, error_cb=error)
            self._js = self._nc.jetstream(timeout=self.timeout)
            self._acks = Acks(self._nc)
        return self._js

    async def _existing_bucket(self, namespace: str) -> KeyValue | None:
        kv = self._buckets.get(namespace)
        if kv is None:
            js = await self._jetstream()
            try:
                kv = await js.key_value(self.bucket(namespace))
            except nats.js.errors.BucketNotFoundError:
                return None
            self._buckets[namespace] = kv
        return kv

    async def _bucket(self, namespace: str) -> KeyValue:
        """The namespace's bucket, created the first time."""
        kv = await self._existing_bucket(namespace)
        if kv is None:
            js = await self._jetstream()
            kv = await js.create_key_value(KeyValueConfig(
                bucket=self.bucket(namespace), history=1, storage=StorageType.FILE,
                replicas=self.replicas,
                direct=True, description=f"NEXUS SSOT: current documents of namespace "
                                         f"{namespace} (written by the ledger only)"))
            self._buckets[namespace] = kv
        return kv

    async def _send(self, writes: list[_Write]) -> int:
        """Write (or delete) pipelined, as the broadcaster publishes (``Acks``): each write
        is a JetStream publish, all of them awaited together within ``timeout``. The number
        of conditional writes that lost to a newer one."""
        lost = 0
        for i in range(0, len(writes), _IN_FLIGHT):
            chunk = writes[i:i + _IN_FLIGHT]
            for w in chunk:
                await self._bucket(w.namespace)  # created the first time
            await self._jetstream()
            acks = self._acks
            assert acks is not None
            pending = []
            try:
                for w in chunk:
                    pending.append(await acks.publish(
                        f"$KV.{self.bucket(w.namespace)}.{w.key}", w.value or b"",
                        headers=_headers(w)))
                timer = deadline(self.timeout, pending)
                try:
                    for w, acknowledged in zip(chunk, pending, strict=True):
                        try:
                            await acknowledged
                        except nats.js.errors.APIError as e:
                            if w.last is None or e.err_code not in _WRONG_LAST_SEQUENCE:
                                raise
                            lost += 1
                finally:
                    timer.cancel()
            finally:
                for acknowledged in pending:
                    acknowledged.cancel()
        return lost

    async def _reconcile(self, conn: psycopg.AsyncConnection[Any], namespace: str,
                         report: _Report) -> None:
        kv = await self._existing_bucket(namespace)
        held = await self._snapshot(kv) if kv is not None else {}
        repairs: list[_Write] = []
        seen: set[str] = set()
        cur = conn.cursor()
        async for key, text in cur.stream(
                "SELECT key, document::text FROM entries"
                " WHERE namespace = %s AND NOT deleted ORDER BY key", (namespace,)):
            document = orjson.loads(text) if text is not None else None
            k = kv_key(key)
            seen.add(k)
            have = held.get(k)
            if have is None or have.value is None:
                kind = "missing"
            elif _canonical(have.value) != _canonical_of(document):
                kind = "stale"
            else:
                continue
            report.add(kind, f"{namespace}/{key}")
            repairs.append(_Write(namespace, k, orjson.dumps(document),
                                  last=have.revision if have else 0))
        for k, have in sorted(held.items()):
            if k in seen or have.value is None:
                continue
            try:
                shown = entry_key(k)
            except ValueError:
                shown = k
            report.add("extra", f"{namespace}/{shown}")
            repairs.append(_Write(namespace, k, None, last=have.revision))
        if repairs and not report.dry_run:
            lost = await self._send(repairs)
            report.repaired += len(repairs) - lost
            report.changed_meanwhile += lost

    async def _snapshot(self, kv: KeyValue) -> dict[str, _Held]:
        """Every key of the bucket: its last revision and value (None: deleted).

        Read until a message with nothing pending after it (or the bucket's last message as
        it was when the snapshot began), not until the watcher's "caught up" marker: nats-py
        sends that marker when the consumer has nothing pending on the server and the client
        has handled nothing yet, which on a busy machine happens while the whole bucket is
        still in the socket's buffer — the snapshot then came back short and a reconcile
        reported live keys as missing."""
        state = (await kv.status()).stream_info.state
        held: dict[str, _Held] = {}
        if not state.messages:
            return held
        watcher = await kv.watchall()
        try:
            while True:
                entry = await watcher.updates(  # type: ignore[no-untyped-call]
                    timeout=self.timeout)
                if entry is None:  # the marker, possibly early: read on to the last
                    continue
                held[entry.key] = _Held(entry.revision or 0, None
                                        if entry.operation in _DELETED_OPS else entry.value)
                if entry.delta == 0 or (entry.revision or 0) >= state.last_seq:
                    return held  # nothing left on the server for this watcher
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]


#: The deleted entries of a range (``gone``: ``[namespace, key]`` each) as rows ``g``.
_GONE = ("(SELECT g.x->>0 AS namespace, g.x->>1 AS key"
         " FROM json_array_elements(%(gone)s::json) g(x)) g")


@functools.lru_cache(maxsize=16)
def _held(mirror: str) -> bytes:
    """Which of the deleted entries (``gone``) the mirror holds: each looked up by the
    table's index (a LATERAL subquery, which a prepared statement's generic plan cannot
    turn into a scan of the whole mirror, as it did for ``namespace_stats``' keys)."""
    return (f"SELECT g.namespace, g.key FROM {_GONE} JOIN LATERAL (SELECT 1 FROM"
            f" {mirror} m WHERE m.namespace = g.namespace AND m.key = g.key LIMIT 1) m"
            " ON true").encode()


@functools.lru_cache(maxsize=64)
def _record(mirror: str, gone: bool, live: bool) -> bytes:
    """Common table expressions recording a range in the mirror's table: the deleted
    entries (``gone``) removed, the live ones (``live``) upserted."""
    ctes = []
    if gone:
        ctes.append(f"_gone AS (DELETE FROM {mirror} m USING {_GONE}"
                    " WHERE m.namespace = g.namespace AND m.key = g.key)")
    if live:
        ctes.append(f"_live AS (INSERT INTO {mirror} (namespace, key, version, position)"
                    " SELECT l.x->>0, l.x->>1, (l.x->>2)::bigint, (l.x->>3)::bigint"
                    " FROM json_array_elements(%(live)s::json) l(x)"
                    " ON CONFLICT (namespace, key) DO UPDATE"
                    " SET version = EXCLUDED.version, position = EXCLUDED.position)")
    return ", ".join(ctes).encode()


def _latest_of(events: Iterable[LogEvent], latest: dict[tuple[str, str], LogEvent]
               ) -> dict[tuple[str, str], LogEvent]:
    """``latest`` with each entry's last event of ``events`` (settings are not mirrored)."""
    for event in events:
        namespace = event.namespace
        if not is_system_namespace(namespace):
            latest[(namespace, event.key)] = event
    return latest


def _headers(w: _Write) -> dict[str, str] | None:
    """A write's JetStream headers, as nats-py's ``put``, ``update`` and ``delete`` make
    them: a delete marker is an empty message marked ``DEL``; a conditional write expects
    the key's last revision (0: no message yet)."""
    headers: dict[str, str] = {}
    if w.value is None:
        headers[KV_OP] = KV_DEL
        if w.last:
            headers[Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(w.last)
    elif w.last is not None:
        headers[Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(w.last)
    return headers or None


def _canonical(value: bytes) -> bytes | None:
    try:
        return _canonical_of(orjson.loads(value))
    except orjson.JSONDecodeError:
        return None


def _canonical_of(document: Any) -> bytes:
    """JSON values compare equal exactly when these bytes do (not Python's ``1 == True``)."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
