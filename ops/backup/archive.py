"""Verified logical backups of the log: export to a file, import into an empty database.

The file is gzip-compressed NDJSON (a series of gzip members of ~2 MB, compressed on
threads; any gzip reader reads them as one stream), one JSON object per line, each with a
member ``t`` naming its kind, written in this order:

``header``
    ``format`` ("nexus-ssot-export"), ``version`` (1), ``source`` (the exporting
    database: PostgreSQL system identifier and database name), ``since_position`` (the
    events are those after it), ``upto_position`` (…up to this one, the head of the
    export's snapshot), ``previous`` (null for a full export; for an incremental one the
    previous export's trailer: ``last_position``, ``last_hash``, ``last_digest_seq``,
    ``leaves``, ``final_hash``) and ``created_at``.
``leaf``
    ``idx``, ``position``, ``hash``: a Merkle leaf the source added, after the previous
    export, for an event that export already held.
``event``
    One per event in position order: ``position`` (notification_id), ``stream``
    (originator_id), ``version``, ``topic``, ``recorded_at`` (RFC 3339 UTC, microseconds),
    ``leaf`` ([idx, hex] of its Merkle leaf, or null when the source had none yet) and
    last ``state``: the stored event state, byte for byte (it is JSON already), whose
    ``hash``/``prev_hash`` members are the event's hash chain (ledger/chain.py).
``idempotency``
    The ``idempotency_keys`` rows of those events (not derivable from the log).
``digest``
    The ``digests`` rows made after the previous export, byte columns in hex.
``trailer``
    ``count`` (events), ``leaves`` (leaf lines), ``idempotency``, ``digests``,
    ``first_position``, ``last_position``, ``last_hash`` (the last event's hash),
    ``last_digest_seq``, ``total_leaves`` (the source's leaves so far), ``lines`` (all
    lines, the trailer included) and ``running_hash`` (the line before's).

Every line ends with ``"rh":"<64 hex>"}``, its running hash: ``rh = SHA-256(rh of the line
before || the line's bytes up to the comma before "rh")``; the header's "line before" is
the previous export's final hash (an incremental export) or 32 zero bytes. The trailer's
``rh`` is the file's final hash, the next incremental export's starting point, so a chain
of files is one hash chain. A changed or missing line breaks the running hash at that
line; a truncated file has no trailer.

An import verifies each line as it reads it (JSON, running hash, kind and members,
positions increasing, each stream's versions 1, 2, 3… and ``prev_hash`` chain, each
event's hash recomputed with ``chain.event_hash``, each leaf recomputed, the digests'
chain and roots) and writes it with COPY in one transaction: the first bad line refuses
the whole file, naming the line and the reason, and nothing is written. The file is
decompressed on a thread; the lines are checked ``BATCH`` at a time, their events sent
by a COPY kept open while they are checked (PostgreSQL stores them meanwhile); after
each batch its Merkle leaves and the nodes they complete (computed as the leaves are
verified) are stored and, into an empty database, its ``entry_history`` rows folded,
while the next batch is checked. ``entry_history`` is filled without its indexes and
primary key, made again at the end (faster than maintaining them row by row). Then the
current state is folded over the imported range, all in the same transaction, and the
asynchronous views rebuilt.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import hashlib
import json
import os
import queue
import re
import struct
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
import psycopg
from psycopg import sql

from nexus_ssot.integrity import merkle
from nexus_ssot.ledger import chain
from nexus_ssot.ledger.documents import surrogate_refusal
from nexus_ssot.ledger.events import TYPE_OF_TOPIC
from nexus_ssot.ledger.migrate import migrate

FORMAT = "nexus-ssot-export"
VERSION = 1
ZERO = bytes(32)
BATCH = 10_000
#: Each line ends with this, 64 hex digits and ``"}`` and a newline.
_RH = b',"rh":"'
_TAIL = len(_RH) + 64 + 3
_TS = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MOMENT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
#: Imports done into a database, so an incremental file can be checked to continue the
#: last one (created by the first import).
IMPORTS_DDL = """
CREATE TABLE IF NOT EXISTS ssot_backup_imports (
    seq bigserial PRIMARY KEY,
    source text NOT NULL,
    file text NOT NULL,
    since_position bigint NOT NULL,
    last_position bigint NOT NULL,
    last_hash text,
    last_digest_seq bigint NOT NULL,
    leaves bigint NOT NULL,
    final_hash text NOT NULL,
    events bigint NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now()
)"""

Progress = Callable[[int, int], None]


class BackupError(Exception):
    """An export or import that cannot be done; nothing was changed. ``path`` is the file
    of a multi-file import that failed (the files before it were imported)."""

    path: str | None = None


class BadFile(BackupError):
    """The file is not a valid export: ``line`` (1-based) is the first bad one."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class NotEmpty(BackupError):
    """A full export can only go into an empty database."""


class OutOfOrder(BackupError):
    """An incremental export that does not continue what the database holds."""


@dataclass(frozen=True)
class Exported:
    path: str
    since_position: int
    last_position: int
    events: int
    digests: int
    idempotency: int
    leaves: int
    final_hash: str
    seconds: float
    bytes: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Imported:
    path: str
    since_position: int
    last_position: int
    events: int
    unchained: int
    digests: int
    idempotency: int
    leaves: int
    final_hash: str
    seconds: float
    views_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# --- lines ------------------------------------------------------------------------------


def _line(body: bytes, previous: bytes) -> tuple[bytes, bytes]:
    """The line of ``body`` (a JSON object without its closing brace) and its running
    hash (raw)."""
    rh = hashlib.sha256(previous + body).digest()
    return body + _RH + rh.hex().encode() + b'"}\n', rh


def _obj_body(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)[:-1]


def source_id(conn: psycopg.Connection[Any]) -> str:
    """The exporting database: its cluster's system identifier and its name."""
    name = conn.execute("SELECT current_database()").fetchone()
    try:
        with conn.transaction():
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
            system = str(row[0]) if row else "unknown"
    except psycopg.Error:  # pg_control_system needs pg_monitor or a superuser
        system = "unknown"
    return f"{system}/{name[0] if name else ''}"


def read_trailer(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The trailer of an export file, with its header's ``source`` and its final hash
    (``final_hash``): where the next incremental export continues. The file is read to
    the end; a file without a trailer is refused."""
    header: dict[str, Any] | None = None
    last: bytes = b""
    number = 0
    try:
        with gzip.open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if header is None:
                    header = _loads(raw, number)
                last = raw
    except (OSError, EOFError) as e:
        raise BackupError(f"{path}: cannot read it after line {number}: {e}") from None
    if header is None or header.get("t") != "header":
        raise BackupError(f"{path}: line 1 is not an export header")
    trailer = _loads(last, number)
    if trailer.get("t") != "trailer" or not last.endswith(b"\n"):
        raise BackupError(f"{path}: it ends without a trailer after line {number}: "
                          "a truncated export cannot be continued")
    return {**trailer, "source": header.get("source"), "final_hash": trailer["rh"]}


def _loads(raw: bytes, number: int) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        refused = None
        if "surrogate" in str(e):  # JSON text holding no text: the domain says where
            with contextlib.suppress(ValueError, RecursionError):
                refused = surrogate_refusal(json.loads(raw), "")
        if refused is not None:
            raise BadFile(number, refused.message) from refused
        raise BadFile(number, f"not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise BadFile(number, "not a JSON object")
    return obj


# --- export -----------------------------------------------------------------------------


def export(database_url: str, out: str | os.PathLike[str], *, since: int | None = None,
           after: str | os.PathLike[str] | None = None, level: int = 3,
           progress: Progress | None = None) -> Exported:
    """Write the events after ``since`` (or after the export ``after`` ended) to ``out``,
    in one snapshot, streaming (constant memory). The file appears complete or not at all
    (written as ``out.partial``, then renamed)."""
    started = time.monotonic()
    target = Path(out)
    partial = target.with_name(target.name + ".partial")
    with psycopg.connect(database_url, autocommit=True) as conn:
        source = source_id(conn)
        conn.autocommit = False
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        previous = _previous(conn, source, since, after)
        since = previous["last_position"] if previous else (since or 0)
        row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM ssot_events"
                           ).fetchone()
        head = int(row[0]) if row else 0
        if since > head:
            raise BackupError(f"--since-position {since} is beyond the log's head ({head})")
        merkle_tables = _has(conn, "merkle_leaves") and _has(conn, "digests")
        if previous:
            after_seq, known_leaves = previous["last_digest_seq"], previous["total_leaves"]
        elif merkle_tables and since:
            r = conn.execute("SELECT coalesce(max(seq), 0) FROM digests WHERE position <= %s",
                             (since,)).fetchone()
            after_seq = int(r[0]) if r else 0
            r = conn.execute("SELECT count(*) FROM merkle_leaves WHERE position <= %s",
                             (since,)).fetchone()
            known_leaves = int(r[0]) if r else 0
        else:
            after_seq = known_leaves = 0
        if previous is None and since:  # no previous file: name where it ended
            previous = {"last_position": since, "last_hash": _hash_at(conn, since),
                        "last_digest_seq": after_seq, "total_leaves": known_leaves,
                        "final_hash": None}
        header = {"t": "header", "format": FORMAT, "version": VERSION, "source": source,
                  "since_position": since, "upto_position": head,
                  "previous": ({k: previous[k] for k in ("last_position", "last_hash",
                                                         "last_digest_seq", "total_leaves",
                                                         "final_hash")}
                               if previous else None),
                  "created_at": chain.timestamp(datetime.now(UTC))}
        rh = bytes.fromhex(previous["final_hash"]) if previous and previous["final_hash"] \
            else ZERO
        writer = _Writer(partial, level, rh)
        try:
            writer.add(_obj_body(header))
            leaves = _export_leaves(conn, writer, known_leaves, since) if merkle_tables else 0
            count, last_hash, first, total_leaves = _export_events(
                conn, writer, since, head, merkle_tables, progress)
            total_leaves = max(total_leaves, known_leaves + leaves)
            idempotency = _export_idempotency(conn, writer, since, head)
            digests, last_seq = (_export_digests(conn, writer, after_seq) if merkle_tables
                                 else (0, after_seq))
            if count == 0 and previous:
                last_hash = previous["last_hash"]
            trailer = {"t": "trailer", "count": count, "leaves": leaves,
                       "idempotency": idempotency, "digests": digests,
                       "first_position": first, "last_position": head,
                       "last_hash": last_hash, "last_digest_seq": last_seq,
                       "total_leaves": total_leaves, "lines": writer.lines + 1,
                       "running_hash": writer.rh.hex()}
            writer.add(_obj_body(trailer))
            writer.close()
            conn.rollback()
            os.replace(partial, target)
        except BaseException:
            writer.close()
            partial.unlink(missing_ok=True)
            raise
    return Exported(str(target), since, head, count, digests, idempotency, leaves,
                    writer.rh.hex(), time.monotonic() - started, target.stat().st_size)


def _has(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def _hash_at(conn: psycopg.Connection[Any], position: int) -> str | None:
    row = conn.execute("SELECT state FROM ssot_events WHERE notification_id = %s",
                       (position,)).fetchone()
    if row is None:
        raise BackupError(f"the log has no event at position {position}")
    found: str | None = orjson.loads(bytes(row[0])).get("hash")
    return found


def _previous(conn: psycopg.Connection[Any], source: str, since: int | None,
              after: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    if after is None:
        return None
    if since is not None:
        raise BackupError("give --since-position or --after, not both")
    trailer = read_trailer(after)
    if trailer["source"] != source:
        raise BackupError(f"{after} was exported from {trailer['source']}, not from this "
                          f"database ({source}): an incremental export continues its own "
                          "database's chain")
    last = int(trailer["last_position"])
    if last and _hash_at(conn, last) != trailer["last_hash"]:
        raise BackupError(f"the event at position {last} is not the one {after} ended with "
                          "(its hash differs)")
    return trailer


#: Uncompressed bytes per gzip member of an export.
_MEMBER = 1 << 21
#: Members compressed at once (on threads: zlib lets go of the GIL while it compresses).
_COMPRESSORS = 2


class _Writer:
    """Lines into a gzip file, each with its running hash. The lines are compressed in
    chunks of ``_MEMBER`` bytes, each a gzip member of its own (a gzip file may hold
    several; every gzip reader reads them as one stream), on threads while the next rows
    are fetched and encoded, and written in order."""

    def __init__(self, path: Path, level: int, rh: bytes) -> None:
        self.raw: IO[bytes] = open(path, "wb")  # noqa: SIM115  (closed in close())
        self.level = level
        self.compressors = ThreadPoolExecutor(_COMPRESSORS,
                                              thread_name_prefix="ssot-export-gzip")
        self.compressing: collections.deque[Future[bytes]] = collections.deque()
        self.rh = rh
        self.lines = 0
        self.buffer: list[bytes] = []
        self.size = 0

    def add(self, body: bytes) -> None:
        line, self.rh = _line(body, self.rh)
        self.buffer.append(line)
        self.size += len(line)
        self.lines += 1
        if self.size >= _MEMBER:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.compressing.append(self.compressors.submit(
                gzip.compress, b"".join(self.buffer), self.level, mtime=0))
            self.buffer.clear()
            self.size = 0
        while self.compressing and (len(self.compressing) > _COMPRESSORS
                                    or self.compressing[0].done()):
            self.raw.write(self.compressing.popleft().result())

    def close(self) -> None:
        """Write what is left and sync the file (called again after a failure: then it
        only lets go of the file and the threads)."""
        if self.raw.closed:
            return
        try:
            self.flush()
            while self.compressing:
                self.raw.write(self.compressing.popleft().result())
            self.raw.flush()
            os.fsync(self.raw.fileno())
        finally:
            self.compressors.shutdown(cancel_futures=True)
            self.raw.close()


def _export_leaves(conn: psycopg.Connection[Any], w: _Writer, known: int, since: int) -> int:
    """Leaves added since the previous export for events that export already held."""
    n = 0
    with conn.cursor("ssot_export_leaves") as cur:
        cur.execute("SELECT idx, position, hash FROM merkle_leaves WHERE idx >= %s"
                    " AND position <= %s ORDER BY idx", (known, since))
        for idx, position, hash_ in cur:
            w.add(b'{"t":"leaf","idx":%d,"position":%d,"hash":"%s"'
                  % (idx, position, bytes(hash_).hex().encode()))
            n += 1
    return n


def _fetched(cur: psycopg.Cursor[Any], size: int) -> Iterator[list[Any]]:
    """``cur``'s rows, ``size`` at a time: the next ones are fetched on a thread (and
    PostgreSQL makes them) while the caller encodes these."""
    with ThreadPoolExecutor(1, thread_name_prefix="ssot-export-fetch") as fetcher:
        pending = fetcher.submit(cur.fetchmany, size)
        while rows := pending.result():
            pending = fetcher.submit(cur.fetchmany, size)
            yield rows


def _export_events(conn: psycopg.Connection[Any], w: _Writer, since: int, head: int,
                   with_leaves: bool, progress: Progress | None
                   ) -> tuple[int, str | None, int | None, int]:
    leaf = ("l.idx, l.hash FROM ssot_events e LEFT JOIN merkle_leaves l"
            " ON l.position = e.notification_id" if with_leaves
            else "NULL::bigint, NULL::bytea FROM ssot_events e")
    query = (f"SELECT e.notification_id, e.originator_id::text, e.originator_version,"
             f" e.topic, {_TS.format('e.recorded_at')}, e.state, {leaf}"
             " WHERE e.notification_id > %s AND e.notification_id <= %s"
             " ORDER BY e.notification_id")
    topics: dict[str, bytes] = {}
    count, total_leaves = 0, 0
    first: int | None = None
    state = b""
    total = max(head - since, 1)
    with conn.cursor("ssot_export_events", binary=True) as cur:
        cur.itersize = 10_000
        cur.execute(query.encode(), (since, head))
        for rows in _fetched(cur, 10_000):
            for position, stream, version, topic, recorded_at, state, idx, hash_ in rows:
                t = topics.get(topic)
                if t is None:
                    t = topics[topic] = orjson.dumps(topic)
                leaf_json = (b"null" if idx is None
                             else b'[%d,"%s"]' % (idx, bytes(hash_).hex().encode()))
                w.add(b'{"t":"event","position":%d,"stream":"%s","version":%d,"topic":%s,'
                      b'"recorded_at":"%s","leaf":%s,"state":%s'
                      % (position, stream.encode(), version, t, recorded_at.encode(),
                         leaf_json, state))
                if idx is not None:
                    total_leaves = idx + 1
            if first is None:
                first = rows[0][0]
            count += len(rows)
            if progress is not None:
                progress(count, max(total, count))
    last_hash = orjson.loads(state).get("hash") if count else None
    return count, last_hash, first, total_leaves


def _export_idempotency(conn: psycopg.Connection[Any], w: _Writer, since: int,
                        head: int) -> int:
    n = 0
    with conn.cursor("ssot_export_idempotency") as cur:
        cur.execute(f"SELECT actor, key, encode(request_hash, 'hex'), namespace, entry_key,"
                    f" version, position, {_TS.format('recorded_at')}, event_ids::text[]"
                    " FROM idempotency_keys WHERE position > %s AND position <= %s"
                    " ORDER BY position, actor, key", (since, head))
        for actor, key, request_hash, ns, entry_key, version, position, at, ids in cur:
            w.add(_obj_body({"t": "idempotency", "actor": actor, "key": key,
                             "request_hash": request_hash, "namespace": ns,
                             "entry_key": entry_key, "version": version,
                             "position": position, "recorded_at": at, "event_ids": ids}))
            n += 1
    return n


def _hex(value: Any) -> str | None:
    return None if value is None else bytes(value).hex()


def _export_digests(conn: psycopg.Connection[Any], w: _Writer, after_seq: int
                    ) -> tuple[int, int]:
    n, last = 0, after_seq
    with conn.cursor("ssot_export_digests") as cur:
        cur.execute(f"SELECT seq, position, size, root, {_TS.format('recorded_at')}, prev,"
                    " hash, signature, key_id FROM digests WHERE seq > %s ORDER BY seq",
                    (after_seq,))
        for seq, position, size, root, at, prev, hash_, signature, key_id in cur:
            w.add(_obj_body({"t": "digest", "seq": seq, "position": position, "size": size,
                             "root": _hex(root), "recorded_at": at, "prev": _hex(prev),
                             "hash": _hex(hash_), "signature": _hex(signature),
                             "key_id": key_id}))
            n, last = n + 1, seq
    return n, last


# --- import -----------------------------------------------------------------------------


def _lines(path: str | os.PathLike[str]) -> Generator[tuple[int, bytes], None, None]:
    """(line number, line) of a gzip file, decompressed on a thread meanwhile; a cut in the
    compressed stream or a last line without its newline is reported as truncation after
    the last complete line."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
    stop = threading.Event()
    reader = threading.Thread(target=_decompress, args=(path, chunks, stop), daemon=True,
                              name="ssot-import-gunzip")
    reader.start()
    number, tail = 0, b""
    try:
        while (chunk := chunks.get()) is not None:
            if isinstance(chunk, EOFError):
                raise BadFile(number + 1, "the file is truncated: the compressed stream ends "
                                          f"early (the last complete line is {number})")
            if isinstance(chunk, zlib.error):
                raise BadFile(number + 1, f"not a gzip-compressed export ({chunk})")
            if isinstance(chunk, BaseException):
                raise BackupError(f"{path}: {chunk}")
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for raw in lines:
                number += 1
                yield number, raw + b"\n"
        if tail:
            raise BadFile(number + 1, "the file is truncated: this line is incomplete "
                                      f"(the last complete line is {number})")
    finally:
        stop.set()
        reader.join(5)


def _decompress(path: str | os.PathLike[str],
                chunks: queue.Queue[bytes | BaseException | None],
                stop: threading.Event) -> None:
    """Put the bytes of the gzip file ``path`` on ``chunks``, member after member, then
    None, or the error that ended them (EOFError: the last member is cut short)."""
    def put(item: bytes | BaseException | None) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                chunks.put(item, timeout=0.1)
                return

    try:
        with open(path, "rb") as f:
            member, fed = zlib.decompressobj(31), False
            while not stop.is_set() and (data := f.read(1 << 18)):
                while data:
                    out = member.decompress(data, 1 << 20)  # bounded, whatever the ratio
                    fed = True
                    if out:
                        put(out)
                    if member.eof:
                        data = member.unused_data
                        member, fed = zlib.decompressobj(31), False
                    else:
                        data = member.unconsumed_tail
            put(EOFError() if fed else None)
    except Exception as e:  # handed over: the reader raises it (zlib.error: not gzip)
        put(e)


def _require(obj: dict[str, Any], number: int, name: str, kind: type | tuple[type, ...],
             optional: bool = False) -> Any:
    value = obj.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadFile(number, f"{obj.get('t', 'line')} member {name!r} is missing or not "
                              f"{getattr(kind, '__name__', 'valid')}: {value!r}")
    return value


@dataclass
class _Import:
    """The verifying state of one file's import."""

    path: str
    rh: bytes
    position: int
    streams: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    frontier: merkle.Frontier = field(default_factory=merkle.Frontier)
    incremental: bool = False
    leaves_stopped: bool = False
    events: int = 0
    unchained: int = 0
    last_hash: str | None = None
    digests: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    digest_prev: bytes | None = None
    digest_seq: int = 0
    idempotency: int = 0
    leaf_lines: int = 0
    first_position: int | None = None
    start_leaves: int = 0
    #: COPY rows of the batch's verified Merkle leaves and of the nodes they complete.
    leaf_rows: bytearray = field(default_factory=bytearray)
    node_rows: bytearray = field(default_factory=bytearray)

    def add_leaf(self, position: int, leaf: bytes) -> None:
        """Append a verified leaf hash: its row and the rows of the nodes it completes."""
        done = self.frontier.add(leaf)
        self.leaf_rows += b"%d\t%d\t\\\\x%s\n" % (done[0][1], position, leaf.hex().encode())
        for level, idx, node in done[1:]:
            self.node_rows += b"%d\t%d\t\\\\x%s\n" % (level, idx, node.hex().encode())


async def import_files(database_url: str, paths: Sequence[str | os.PathLike[str]], *,
                       views: Sequence[Any] = (), progress: Progress | None = None
                       ) -> list[Imported]:
    """Import exports in order (a full one into an empty database, then incremental ones
    that continue it), each in one transaction; then rebuild ``views`` (asynchronous
    views) once."""
    migrate(database_url)
    done: list[Imported] = []
    for path in paths:
        try:
            done.append(await import_file(database_url, path, progress=progress))
        except BackupError as e:
            e.path = str(path)
            raise
    if views and done:
        from nexus_ssot.projections.rebuild import rebuild

        started = time.monotonic()
        for view in views:
            result = await rebuild(database_url, view)
            if not result.complete:  # pragma: no cover - no stop event is given
                raise BackupError(f"rebuilding view {view.name} did not complete")
        done[-1] = replace(done[-1], views_seconds=time.monotonic() - started)
    return done


async def import_file(database_url: str, path: str | os.PathLike[str], *,
                      progress: Progress | None = None) -> Imported:
    """Verify and import one export file in one transaction (see the module doc)."""
    started = time.monotonic()
    with contextlib.closing(_lines(path)) as lines:  # closed: its reading thread ends
        return await _import(database_url, path, lines, started, progress)


async def _import(database_url: str, path: str | os.PathLike[str],
                  lines: Iterator[tuple[int, bytes]], started: float,
                  progress: Progress | None) -> Imported:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(IMPORTS_DDL)
        await conn.commit()
        await conn.execute("LOCK TABLE ssot_events IN EXCLUSIVE MODE")
        await conn.execute("LOCK TABLE ssot_backup_imports IN EXCLUSIVE MODE")
        first = next(lines, None)
        if first is None:
            raise BadFile(1, "the file is empty")
        number, raw = first
        header = _check_header(raw, number)
        st = _Import(str(path), bytes.fromhex(raw[-_TAIL + len(_RH):-3].decode()),
                     int(header["since_position"]))
        await _check_target(conn, header, st)
        total = max(int(header["upto_position"]) - st.position, 1)
        copier = _Copier(conn)
        fold, unindexed, unkeyed = None, [], []
        if not st.incremental:  # an empty database: entry_history is folded by batch
            fold = _history_fold(conn)
            unindexed = await _drop_indexes(conn, _UNINDEXED)
            unkeyed = await _drop_indexes(conn, "ssot_events", constraints_only=True)
        try:
            trailer = await _load(conn, st, lines, number, copier, progress, total, fold)
            await copier.end()
        except BaseException as e:
            await copier.fail(e)
            raise
        await _make_indexes(conn, unkeyed)
        await _check_digests(conn, st)
        last_position = int(trailer["last_position"])
        await _finish(conn, st, header, trailer, last_position)
        await _make_indexes(conn, unindexed)
        await conn.commit()
        if progress is not None:
            progress(st.events, st.events)
    return Imported(str(path), int(header["since_position"]), last_position, st.events,
                    st.unchained, len(st.digests), st.idempotency, st.leaf_lines,
                    str(trailer["rh"]), time.monotonic() - started)


def _check_header(raw: bytes, number: int) -> dict[str, Any]:
    header = _loads(raw, number)
    if header.get("t") != "header" or header.get("format") != FORMAT:
        raise BadFile(number, f"not a {FORMAT} header")
    if header.get("version") != VERSION:
        raise BadFile(number, f"format version {header.get('version')!r} is not "
                              f"supported (this ledger reads version {VERSION})")
    for name in ("since_position", "upto_position"):
        _require(header, number, name, int)
    _require(header, number, "source", str)
    previous = header.get("previous")
    if header["since_position"] and not isinstance(previous, dict):
        raise BadFile(number, "an incremental export (since_position > 0) must name its "
                              "previous export")
    rh = previous.get("final_hash") if isinstance(previous, dict) else None
    start = bytes.fromhex(rh) if isinstance(rh, str) and _HEX64.match(rh) else ZERO
    _check_rh(raw, number, start)
    return header


def _check_rh(raw: bytes, number: int, previous: bytes) -> bytes:
    tail = raw[-_TAIL:]
    if not (tail.startswith(_RH) and tail.endswith(b'"}\n')):
        raise BadFile(number, "the line does not end with its running hash (\"rh\")")
    rh = hashlib.sha256(previous + raw[:-_TAIL]).digest()
    if rh.hex().encode() != tail[len(_RH):-3]:
        raise BadFile(number, "running hash mismatch: this line (or one before it) was "
                              "changed, added or removed")
    return rh


async def _check_target(conn: psycopg.AsyncConnection[Any], header: dict[str, Any],
                        st: _Import) -> None:
    """A full export needs an empty database; an incremental one the database its
    previous export was imported into, at that export's end."""
    cur = await conn.execute("SELECT source, last_position, final_hash"
                             " FROM ssot_backup_imports ORDER BY seq DESC LIMIT 1")
    last = await cur.fetchone()
    cur = await conn.execute("SELECT coalesce(max(notification_id), 0), count(*)"
                             " FROM ssot_events")
    row = await cur.fetchone()
    head, events = (int(row[0]), int(row[1])) if row else (0, 0)
    if not header["since_position"]:
        counts = []
        for table in ("entries", "entry_history", "idempotency_keys", "digests",
                      "merkle_leaves"):
            cur = await conn.execute(f"SELECT count(*) FROM {table}")  # names from above
            found = await cur.fetchone()
            if found and found[0]:
                counts.append(f"{table} {found[0]}")
        if events or counts or last:
            raise NotEmpty("the database is not empty (ssot_events "
                           f"{events}{''.join(', ' + c for c in counts)}): a full export is "
                           "imported into an empty database only (create a new one)")
        return
    previous = header["previous"]
    if last is None or events == 0:
        raise OutOfOrder(f"this incremental export continues position "
                         f"{header['since_position']}, but the database holds no imported "
                         "export: import the full export first")
    if head != header["since_position"] or head != last[1]:
        raise OutOfOrder(f"the database's log ends at position {head}; this export "
                         f"continues position {header['since_position']}: import the "
                         "exports in order")
    if last[0] != header["source"]:
        raise OutOfOrder(f"this export is of {header['source']}; the database holds "
                         f"exports of {last[0]}")
    final = previous.get("final_hash")
    if final is not None and last[2] != final:
        raise OutOfOrder(f"this export continues an export whose final hash is {final}; "
                         f"the last one imported here ended with {last[2]}")
    cur = await conn.execute("SELECT state FROM ssot_events WHERE notification_id = %s",
                             (head,))
    found = await cur.fetchone()
    held = orjson.loads(bytes(found[0])).get("hash") if found else None
    if held != previous.get("last_hash"):
        raise OutOfOrder(f"the event at position {head} is not the one this export "
                         "continues (its hash differs)")
    st.incremental = True
    cur = await conn.execute("SELECT seq, hash FROM digests ORDER BY seq DESC LIMIT 1")
    found = await cur.fetchone()
    st.digest_seq, st.digest_prev = (int(found[0]), bytes(found[1])) if found else (0, None)
    cur = await conn.execute("SELECT count(*) FROM merkle_leaves")
    found = await cur.fetchone()
    st.start_leaves = int(found[0]) if found else 0
    st.frontier = await _frontier(conn, st.start_leaves)


async def _frontier(conn: psycopg.AsyncConnection[Any], size: int) -> merkle.Frontier:
    """The frontier of the first ``size`` leaves, from the stored leaves and nodes."""
    frontier = merkle.Frontier(size=size)
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size & (1 << level):
            frontier.levels.append(level)
            frontier.nodes.append(await _node(conn, level, start >> level))
            start += 1 << level
    return frontier


async def _node(conn: psycopg.AsyncConnection[Any], level: int, idx: int) -> bytes:
    if level == 0:
        cur = await conn.execute("SELECT hash FROM merkle_leaves WHERE idx = %s", (idx,))
    else:
        cur = await conn.execute("SELECT hash FROM merkle_nodes WHERE level = %s AND idx = %s",
                                 (level, idx))
    row = await cur.fetchone()
    if row is None:
        raise BackupError(f"the database lacks Merkle node ({level}, {idx})")
    return bytes(row[0])


async def _known_streams(conn: psycopg.AsyncConnection[Any], st: _Import,
                         streams: set[str]) -> None:
    """The last version and hash of streams the database held before this file (version
    0 for the others: they begin in this file)."""
    cur = await conn.execute(
        "SELECT DISTINCT ON (originator_id) originator_id::text, originator_version, state"
        " FROM ssot_events WHERE originator_id = ANY(%s::uuid[])"
        " ORDER BY originator_id, originator_version DESC", (list(streams),))
    st.streams.update(dict.fromkeys(streams, (0, None)))
    for stream, version, state in await cur.fetchall():
        st.streams[stream] = (int(version), orjson.loads(bytes(state)).get("hash"))


_STREAM = re.compile(rb'"stream":"([0-9a-f-]{36})"')


def _take(lines: Iterator[tuple[int, bytes]], n: int
          ) -> tuple[list[tuple[int, bytes]], BadFile | None]:
    """The next ``n`` lines, and the truncation that ended them early, if one did."""
    batch: list[tuple[int, bytes]] = []
    try:
        for item in lines:
            batch.append(item)
            if len(batch) >= n:
                break
    except BadFile as e:
        return batch, e
    return batch, None


async def _load(conn: psycopg.AsyncConnection[Any], st: _Import,
                lines: Iterator[tuple[int, bytes]], number: int, copier: _Copier,
                progress: Progress | None, total: int,
                fold: Callable[[int, int], Awaitable[None]] | None) -> dict[str, Any]:
    """Verify the lines after the header one by one and COPY what they hold; the first
    bad line raises (the transaction is then rolled back by the caller's connection
    close). Lines are taken ``BATCH`` at a time so that an incremental file's streams the
    database already holds are looked up with one query per batch, and ``fold(after,
    upto)`` (if given) runs over each batch's events while the next batch is checked. The
    trailer, checked."""
    trailer: dict[str, Any] | None = None
    while True:
        batch, pending = _take(lines, BATCH)
        if not batch and pending is None:
            break
        after = st.position
        if st.incremental:
            unknown = {s.decode() for _, raw in batch if (m := _STREAM.search(raw))
                       and (s := m.group(1)) and s.decode() not in st.streams}
            if unknown:
                await copier.end()
                await _known_streams(conn, st, unknown)
        for number, raw in batch:
            if trailer is not None:
                raise BadFile(number, "a line after the trailer")
            if raw.startswith(b'{"t":"trailer"'):
                trailer = _check_trailer(raw, number, st)
                continue
            st.rh = _check_rh(raw, number, st.rh)
            obj = _loads(raw, number)
            kind = obj.get("t")
            if kind == "event":
                stream = obj.get("stream")
                if st.incremental and isinstance(stream, str) and stream not in st.streams \
                        and _UUID.match(stream):  # missed above (spelled otherwise)
                    await copier.end()
                    await _known_streams(conn, st, {stream})
                await copier.add(_EVENTS_COPY, _event_row(st, number, raw, obj))
            elif kind == "leaf":
                await copier.end()
                await _leaf_line(conn, st, number, obj)
            elif kind == "idempotency":
                await copier.add(_IDEMPOTENCY_COPY, _idempotency_row(st, number, obj))
            elif kind == "digest":
                _digest_line(st, number, obj)
            else:
                raise BadFile(number, f"unexpected line kind {kind!r}")
        if pending is not None:  # the lines before a cut in the file are checked first
            raise pending
        leaves, nodes = bytes(st.leaf_rows), bytes(st.node_rows)
        st.leaf_rows.clear()
        st.node_rows.clear()
        await copier.meanwhile(_store_batch(conn, leaves, nodes, fold, after, st.position))
        number = batch[-1][0]
        if progress is not None:
            progress(st.events, max(total, st.events))
    if trailer is None:
        raise BadFile(number + 1, "the file is truncated: it ends without a trailer (the "
                                  f"last complete line is {number})")
    return trailer


def _hash_matches(fields: dict[str, Any], own: str) -> bool:
    """Whether ``own`` is the hash of the event of ``fields``. orjson's encoding
    (``chain.candidate``) is trusted when it reproduces ``own`` exactly (equal SHA-256:
    these are the bytes that were hashed), as ``ssot verify`` trusts it; otherwise
    ``chain.event_hash`` decides (which proves the encoding canonical first)."""
    hashed = {k: fields.get(k) for k in chain.HASHED}
    with contextlib.suppress(orjson.JSONEncodeError):
        if hashlib.sha256(chain.candidate(hashed)).hexdigest() == own:
            return True
    return bool(chain.event_hash(fields) == own)


def _event_row(st: _Import, number: int, raw: bytes, obj: dict[str, Any]) -> bytes:
    position = _require(obj, number, "position", int)
    stream = _require(obj, number, "stream", str)
    version = _require(obj, number, "version", int)
    topic = _require(obj, number, "topic", str)
    recorded_at = _require(obj, number, "recorded_at", str)
    state = _require(obj, number, "state", dict)
    if position <= st.position:
        raise BadFile(number, f"position {position} does not follow position {st.position}")
    if position >= _BIGINT:
        raise BadFile(number, f"position {position} is beyond PostgreSQL's bigint")
    if not _UUID.match(stream):
        raise BadFile(number, f"stream {stream!r} is not a lowercase UUID")
    try:
        if not _MOMENT.match(recorded_at):
            raise ValueError
        microseconds = (datetime.fromisoformat(recorded_at) - _PG_EPOCH) // _MICROSECOND
    except ValueError:
        raise BadFile(number, f"recorded_at {recorded_at!r} is not RFC 3339 UTC with "
                              "microseconds") from None
    type_name = TYPE_OF_TOPIC.get(topic)
    if type_name is None:
        raise BadFile(number, f"unknown event topic {topic!r}")
    last_version, last_hash = st.streams.get(stream, (0, None))
    if version != last_version + 1:
        raise BadFile(number, f"stream {stream} version {version} does not follow version "
                              f"{last_version}")
    prev_hash, own = state.get("prev_hash"), state.get("hash")
    if prev_hash != last_hash:
        raise BadFile(number, f"stream {stream} version {version}: prev_hash {prev_hash!r} "
                              f"is not the previous event's hash {last_hash!r}")
    if own is None:
        st.unchained += 1
    elif not _hash_matches({**state, "stream": stream, "version": version,
                            "type": type_name}, own):
        raise BadFile(number, f"stream {stream} version {version}: the event's hash does "
                              "not match its content (recomputed with chain.event_hash)")
    leaf = obj.get("leaf")
    if leaf is not None:
        if st.leaves_stopped:
            raise BadFile(number, "a leaf after an event without one")
        if not (isinstance(leaf, list) and len(leaf) == 2 and leaf[0] == st.frontier.size
                and isinstance(leaf[1], str)):
            raise BadFile(number, f"leaf {leaf!r} is not [{st.frontier.size}, hash]")
        computed = merkle.leaf_hash(chain.canonical(
            {"position": position, "recorded_at": recorded_at, "hash": own}))
        if computed.hex() != leaf[1]:
            raise BadFile(number, "the Merkle leaf does not match the event")
        st.add_leaf(position, computed)
    else:
        st.leaves_stopped = True
    start = raw.find(b',"state":') + 9
    st.streams[stream] = (version, own)
    st.position = position
    st.last_hash = own
    st.events += 1
    if st.first_position is None:
        st.first_position = position
    state_bytes = raw[start:-_TAIL]
    return b"".join((
        _ROW_HEAD.pack(6, 8, position, 16, bytes.fromhex(stream.replace("-", "")), 8, version),
        _TOPIC_CELLS[topic], _INT4.pack(len(state_bytes)), state_bytes,
        _ROW_TAIL.pack(8, microseconds)))


async def _leaf_line(conn: psycopg.AsyncConnection[Any], st: _Import, number: int,
                     obj: dict[str, Any]) -> None:
    """A leaf for an event an earlier export held: recomputed from that event here."""
    idx = _require(obj, number, "idx", int)
    position = _require(obj, number, "position", int)
    given = _require(obj, number, "hash", str)
    if idx != st.frontier.size or st.events:
        raise BadFile(number, f"leaf {idx} is out of order (expected leaf "
                              f"{st.frontier.size}, before the events)")
    cur = await conn.execute(f"SELECT {_TS.format('recorded_at')}, state FROM ssot_events"
                             " WHERE notification_id = %s", (position,))
    row = await cur.fetchone()
    if row is None:
        raise BadFile(number, f"leaf {idx} names position {position}, which the database "
                              "does not hold")
    own = orjson.loads(bytes(row[1])).get("hash")
    computed = merkle.leaf_hash(chain.canonical(
        {"position": position, "recorded_at": row[0], "hash": own}))
    if computed.hex() != given:
        raise BadFile(number, f"leaf {idx} does not match the event at position {position}")
    st.add_leaf(position, computed)
    st.leaf_lines += 1


def _copy_text(value: Any) -> bytes:
    if value is None:
        return b"\\N"
    text = str(value)
    return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r").encode())


def _idempotency_row(st: _Import, number: int, obj: dict[str, Any]) -> bytes:
    values = [_require(obj, number, "actor", str), _require(obj, number, "key", str)]
    request_hash = _require(obj, number, "request_hash", str)
    if not re.fullmatch(r"(?:[0-9a-f]{2})*", request_hash):
        raise BadFile(number, "idempotency member 'request_hash' is not hex")
    position = _require(obj, number, "position", int)
    if position > st.position or (st.first_position is None or position < st.first_position):
        raise BadFile(number, f"idempotency key names position {position}, not an event of "
                              "this file")
    at = _require(obj, number, "recorded_at", str)
    if not _MOMENT.match(at):
        raise BadFile(number, f"recorded_at {at!r} is not RFC 3339 UTC")
    ids = _require(obj, number, "event_ids", list, optional=True)
    if ids is not None and not all(isinstance(i, str) and _UUID.match(i) for i in ids):
        raise BadFile(number, "idempotency member 'event_ids' is not a list of UUIDs")
    st.idempotency += 1
    cells = [*values, "\\x" + request_hash, _require(obj, number, "namespace", str),
             _require(obj, number, "entry_key", str), _require(obj, number, "version", int),
             position, at, None if ids is None else "{" + ",".join(ids) + "}"]
    return b"\t".join(_copy_text(c) for c in cells) + b"\n"


def _digest_line(st: _Import, number: int, obj: dict[str, Any]) -> None:
    seq = _require(obj, number, "seq", int)
    for name in ("position", "size"):
        _require(obj, number, name, int)
    for name in ("root", "hash"):
        if not _HEX64.match(_require(obj, number, name, str)):
            raise BadFile(number, f"digest member {name!r} is not 64 hex digits")
    if not _MOMENT.match(_require(obj, number, "recorded_at", str)):
        raise BadFile(number, "digest member 'recorded_at' is not RFC 3339 UTC")
    prev = _require(obj, number, "prev", str, optional=True)
    signature = _require(obj, number, "signature", str, optional=True)
    key_id = _require(obj, number, "key_id", str, optional=True)
    if seq != st.digest_seq + 1:
        raise BadFile(number, f"digest {seq} does not follow digest {st.digest_seq}")
    expected = st.digest_prev.hex() if st.digest_prev is not None else None
    if prev != expected:
        raise BadFile(number, f"digest {seq}: prev {prev!r} is not the previous digest's "
                              f"hash {expected!r}")
    if signature is not None and not re.fullmatch(r"(?:[0-9a-f]{2})+", signature):
        raise BadFile(number, "digest member 'signature' is not hex")
    if (signature is None) != (key_id is None):
        raise BadFile(number, "digest members 'signature' and 'key_id' go together")
    if obj["size"] < 1 or obj["size"] > st.frontier.size:
        raise BadFile(number, f"digest {seq} covers {obj['size']} leaves; "
                              f"{st.frontier.size} are known")
    content = {"seq": seq, "position": obj["position"], "size": obj["size"],
               "root": obj["root"], "recorded_at": obj["recorded_at"], "prev": prev}
    if hashlib.sha256(chain.canonical(content)).hexdigest() != obj["hash"]:
        raise BadFile(number, f"digest {seq}: its hash does not match its content")
    st.digest_seq, st.digest_prev = seq, bytes.fromhex(obj["hash"])
    st.digests.append((number, obj))


# The events go by a binary COPY: the state as it is (not in hex), which halves
# PostgreSQL's work for them. A row: the number of fields, then each one's length and
# bytes: notification_id int8, originator_id uuid, originator_version int8, topic text,
# state bytea, recorded_at timestamptz (microseconds since 2000-01-01 UTC).
_EVENTS_COPY = (b"COPY ssot_events (notification_id, originator_id, originator_version, topic,"
                b" state, recorded_at) FROM STDIN (FORMAT binary)")
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
_BINARY_TRAILER = b"\xff\xff"
_ROW_HEAD = struct.Struct(">hiqi16siq")
_INT4 = struct.Struct(">i")
_ROW_TAIL = struct.Struct(">iq")
_TOPIC_CELLS = {topic: _INT4.pack(len(topic.encode())) + topic.encode()
                for topic in TYPE_OF_TOPIC}
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_BIGINT = 1 << 63
_IDEMPOTENCY_COPY = (b"COPY idempotency_keys (actor, key, request_hash, namespace, entry_key,"
                     b" version, position, recorded_at, event_ids) FROM STDIN")
#: Bytes of rows sent to PostgreSQL in one write.
_CHUNK = 1 << 18


class _Copier:
    """Rows into one table at a time, by one COPY kept open while the lines go by: its
    rows are sent in large writes and PostgreSQL stores them while the next lines are
    checked (a COPY ends, and the checks wait for PostgreSQL, only when another table's
    rows come or a query needs the connection). A statement may run on the connection
    ``meanwhile``: the rows wait in memory (at most a batch of lines') until it is done."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self.statement: bytes | None = None
        self.stack = contextlib.AsyncExitStack()
        self.copy: Any = None
        self.rows: list[bytes] = []
        self.size = 0
        self.sent = 0
        self.running: asyncio.Task[None] | None = None

    async def add(self, statement: bytes, row: bytes) -> None:
        if statement != self.statement:
            await self.end()
            self.statement = statement
        self.rows.append(row)
        self.size += len(row)
        if self.size - self.sent >= _CHUNK:
            self.sent = self.size
            if self.running is not None:
                await asyncio.sleep(0)  # let the statement go out / its answer come in
                if not self.running.done():
                    return
                await self._done()
            await self._send()

    async def meanwhile(self, statement: Coroutine[Any, Any, None]) -> None:
        """Run ``statement`` while the next lines are checked (the COPY is ended first)."""
        try:
            await self.end()
        except BaseException:
            statement.close()
            raise
        self.running = asyncio.ensure_future(statement)
        await asyncio.sleep(0)

    async def _done(self) -> None:
        running, self.running = self.running, None
        if running is not None:
            await running

    async def _send(self) -> None:
        if self.copy is None:
            assert self.statement is not None
            cur = await self.stack.enter_async_context(self.conn.cursor())
            self.copy = await self.stack.enter_async_context(cur.copy(self.statement))
            if self.statement == _EVENTS_COPY:
                self.rows.insert(0, _BINARY_HEADER)
        await self.copy.write(b"".join(self.rows))
        self.rows.clear()
        self.size = self.sent = 0

    async def end(self) -> None:
        """Send what is left and end the COPY (waiting for PostgreSQL to store it, and for
        a statement running meanwhile)."""
        await self._done()
        if self.rows:
            await self._send()
        if self.copy is not None:
            if self.statement == _EVENTS_COPY:
                await self.copy.write(_BINARY_TRAILER)
            self.copy = None
            await self.stack.aclose()
        self.statement = None

    async def fail(self, error: BaseException) -> None:
        """Abandon an open COPY, or a statement running meanwhile, after ``error`` (the
        transaction is rolled back)."""
        self.rows.clear()
        if self.running is not None:
            self.running.cancel()
            with contextlib.suppress(BaseException):
                await self.running
            self.running = None
        if self.copy is not None:
            self.copy = None
            with contextlib.suppress(psycopg.Error):
                await self.stack.__aexit__(type(error), error, error.__traceback__)


async def _store_batch(conn: psycopg.AsyncConnection[Any], leaves: bytes, nodes: bytes,
                       fold: Callable[[int, int], Awaitable[None]] | None, after: int,
                       upto: int) -> None:
    """A batch's Merkle leaves and the nodes they completed (COPY rows, computed as they
    were verified), then ``fold`` over its events (after, upto], stored by now."""
    for statement, rows in ((b"COPY merkle_leaves (idx, position, hash) FROM STDIN", leaves),
                            (b"COPY merkle_nodes (level, idx, hash) FROM STDIN", nodes)):
        if rows:
            async with conn.cursor() as cur, cur.copy(statement) as copy:
                await copy.write(rows)
    if fold is not None and upto > after:
        await fold(after, upto)


async def _check_digests(conn: psycopg.AsyncConnection[Any], st: _Import) -> None:
    """Each digest's position is the event of its size-th leaf and its root the root of
    that many leaves (leaves and nodes are in the database by now)."""
    for number, d in st.digests:
        cur = await conn.execute("SELECT position FROM merkle_leaves WHERE idx = %s",
                                 (d["size"] - 1,))
        row = await cur.fetchone()
        if row is None or row[0] != d["position"]:
            raise BadFile(number, f"digest {d['seq']}: leaf {d['size'] - 1} is not the event "
                                  f"at position {d['position']}")
        frontier = await _frontier(conn, d["size"])
        if frontier.root().hex() != d["root"]:
            raise BadFile(number, f"digest {d['seq']}: its root is not the root of the "
                                  f"first {d['size']} leaves")
    rows = [b"%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n" % (
        d["seq"], d["position"], d["size"], b"\\\\x" + d["root"].encode(),
        d["recorded_at"].encode(),
        b"\\N" if d["prev"] is None else b"\\\\x" + d["prev"].encode(),
        b"\\\\x" + d["hash"].encode(),
        b"\\N" if d["signature"] is None else b"\\\\x" + d["signature"].encode(),
        _copy_text(d["key_id"])) for _, d in st.digests]
    if rows:
        async with conn.cursor() as cur, cur.copy(
                b"COPY digests (seq, position, size, root, recorded_at, prev, hash,"
                b" signature, key_id) FROM STDIN") as copy:
            await copy.write(b"".join(rows))





def _check_trailer(raw: bytes, number: int, st: _Import) -> dict[str, Any]:
    previous = st.rh
    st.rh = _check_rh(raw, number, st.rh)
    trailer = _loads(raw, number)
    checks = {"count": st.events, "leaves": st.leaf_lines, "idempotency": st.idempotency,
              "digests": len(st.digests), "lines": number,
              "running_hash": previous.hex(), "first_position": st.first_position}
    for name, value in checks.items():
        if trailer.get(name) != value:
            raise BadFile(number, f"trailer member {name!r} is {trailer.get(name)!r}; the "
                                  f"file holds {value!r}")
    last = _require(trailer, number, "last_position", int)
    if last < st.position or (st.events and last != st.position):
        raise BadFile(number, f"trailer member 'last_position' is {last}; the last event is "
                              f"at position {st.position}")
    if st.events and trailer.get("last_hash") != st.last_hash:
        raise BadFile(number, "trailer member 'last_hash' is not the last event's hash")
    if trailer.get("total_leaves") != st.frontier.size:
        raise BadFile(number, f"trailer member 'total_leaves' is "
                              f"{trailer.get('total_leaves')!r}; the file makes "
                              f"{st.frontier.size}")
    st.position = last
    return {**trailer, "rh": st.rh.hex()}


#: The inline view whose table a full import fills without its indexes (its eight indexes,
#: maintained row by row, tripled the cost of filling it), then indexes.
_UNINDEXED = "entry_history"


def _history_fold(conn: psycopg.AsyncConnection[Any]) -> Callable[[int, int], Awaitable[None]]:
    """The fold of the history view over a range of positions."""
    from nexus_ssot.projections.inline import INLINE_VIEWS
    from nexus_ssot.projections.runtime import Tables

    [view] = [make() for make in INLINE_VIEWS.values() if _UNINDEXED in make.tables]
    tables = Tables(view.tables)
    return lambda after, upto: view.apply(conn, after, upto, tables)


async def _drop_indexes(conn: psycopg.AsyncConnection[Any], table: str, *,
                        constraints_only: bool = False) -> list[str]:
    """Drop ``table``'s indexes and the constraints they back (or only those: the events'
    primary key, random uuids, cost a full import more to maintain row by row than to
    build at the end; the batches' folds need the position index) in the import's
    transaction; the statements that make them again."""
    cur = await conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), c.conname,"
        " pg_get_constraintdef(c.oid) FROM pg_index i"
        " LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid"
        " WHERE i.indrelid = %s::regclass ORDER BY c.conname IS NULL, i.indexrelid",
        (table,))
    again = []
    for index, definition, constraint, constraint_definition in await cur.fetchall():
        if constraint is None:
            if constraints_only:
                continue
            await conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(index)))
            again.append(definition)
        else:
            await conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(table), sql.Identifier(constraint)))
            again.append(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.Identifier(table), sql.Identifier(constraint),
                sql.SQL(constraint_definition)).as_string(conn))
    return again


async def _make_indexes(conn: psycopg.AsyncConnection[Any], statements: list[str]) -> None:
    await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    for statement in statements:
        await conn.execute(statement.encode())


async def _finish(conn: psycopg.AsyncConnection[Any], st: _Import, header: dict[str, Any],
                  trailer: dict[str, Any], last_position: int) -> None:
    """Fold the inline views over the imported range, move the position sequence and
    record the import."""
    from nexus_ssot.projections.inline import INLINE_VIEWS
    from nexus_ssot.projections.runtime import Tables

    since = int(header["since_position"])
    if st.events:
        for make in INLINE_VIEWS.values():
            view = make()
            if st.incremental or _UNINDEXED not in view.tables:  # else folded by batch
                await view.apply(conn, since, last_position, Tables(view.tables))
    await conn.execute("SELECT setval(pg_get_serial_sequence('ssot_events', "
                       "'notification_id'), %s, %s)", (max(last_position, 1),
                                                       last_position > 0))
    await conn.execute(
        "INSERT INTO ssot_backup_imports (source, file, since_position, last_position,"
        " last_hash, last_digest_seq, leaves, final_hash, events)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (header["source"], os.path.basename(st.path), since, last_position,
         trailer.get("last_hash"), st.digest_seq, st.frontier.size, trailer["rh"],
         st.events))
