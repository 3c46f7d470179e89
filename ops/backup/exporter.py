"""Export: the events after a position (or after an earlier export's end) with their Merkle
leaves, idempotency keys and digests, and the access log's rows, written from one snapshot
of the database, streaming (constant memory), to a file that appears complete or not at
all."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from nexus_ssot.ledger import chain

from .access_lines import export_access
from .compression import LineWriter
from .format import (
    FORMAT,
    MOMENT_SQL,
    VERSION,
    ZERO,
    BackupError,
    Progress,
    body_of,
    read_trailer,
)


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
    access: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


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
        # the access log has no positions: after the previous file's last access
        # record, else all of it (an import skips what it already holds)
        access_since = int(previous.get("last_access_seq") or 0) if previous else 0
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
                  "access_since": access_since,
                  "created_at": chain.timestamp(datetime.now(UTC))}
        rh = bytes.fromhex(previous["final_hash"]) if previous and previous["final_hash"] \
            else ZERO
        writer = LineWriter(partial, level, rh)
        try:
            writer.add(body_of(header))
            leaves = _export_leaves(conn, writer, known_leaves, since) if merkle_tables else 0
            count, last_hash, first, total_leaves = _export_events(
                conn, writer, since, head, merkle_tables, progress)
            total_leaves = max(total_leaves, known_leaves + leaves)
            idempotency = _export_idempotency(conn, writer, since, head)
            digests, last_seq = (_export_digests(conn, writer, after_seq) if merkle_tables
                                 else (0, after_seq))
            access, last_access_seq, last_access_hash = export_access(
                conn, writer, access_since,
                previous.get("last_access_hash") if previous else None)
            if count == 0 and previous:
                last_hash = previous["last_hash"]
            trailer = {"t": "trailer", "count": count, "leaves": leaves,
                       "idempotency": idempotency, "digests": digests,
                       "first_position": first, "last_position": head,
                       "last_hash": last_hash, "last_digest_seq": last_seq,
                       "total_leaves": total_leaves, "access": access,
                       "last_access_seq": last_access_seq,
                       "last_access_hash": last_access_hash, "lines": writer.lines + 1,
                       "running_hash": writer.rh.hex()}
            writer.add(body_of(trailer))
            writer.close()
            conn.rollback()
            os.replace(partial, target)
        except BaseException:
            writer.close()
            partial.unlink(missing_ok=True)
            raise
    return Exported(str(target), since, head, count, digests, idempotency, leaves,
                    writer.rh.hex(), time.monotonic() - started, target.stat().st_size,
                    access)


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


def _export_leaves(conn: psycopg.Connection[Any], w: LineWriter, known: int, since: int) -> int:
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


def _export_events(conn: psycopg.Connection[Any], w: LineWriter, since: int, head: int,
                   with_leaves: bool, progress: Progress | None
                   ) -> tuple[int, str | None, int | None, int]:
    leaf = ("l.idx, l.hash FROM ssot_events e LEFT JOIN merkle_leaves l"
            " ON l.position = e.notification_id" if with_leaves
            else "NULL::bigint, NULL::bytea FROM ssot_events e")
    query = (f"SELECT e.notification_id, e.originator_id::text, e.originator_version,"
             f" e.topic, {MOMENT_SQL.format('e.recorded_at')}, e.state, {leaf}"
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


def _export_idempotency(conn: psycopg.Connection[Any], w: LineWriter, since: int,
                        head: int) -> int:
    n = 0
    with conn.cursor("ssot_export_idempotency") as cur:
        cur.execute(f"SELECT actor, key, encode(request_hash, 'hex'), namespace, entry_key,"
                    f" version, position, {MOMENT_SQL.format('recorded_at')}, event_ids::text[]"
                    " FROM idempotency_keys WHERE position > %s AND position <= %s"
                    " ORDER BY position, actor, key", (since, head))
        for actor, key, request_hash, ns, entry_key, version, position, at, ids in cur:
            w.add(body_of({"t": "idempotency", "actor": actor, "key": key,
                           "request_hash": request_hash, "namespace": ns,
                           "entry_key": entry_key, "version": version,
                           "position": position, "recorded_at": at, "event_ids": ids}))
            n += 1
    return n


def _hex(value: Any) -> str | None:
    return None if value is None else bytes(value).hex()


def _export_digests(conn: psycopg.Connection[Any], w: LineWriter, after_seq: int
                    ) -> tuple[int, int]:
    n, last = 0, after_seq
    with conn.cursor("ssot_export_digests") as cur:
        cur.execute(f"SELECT seq, position, size, root, {MOMENT_SQL.format('recorded_at')}, prev,"
                    " hash, signature, key_id FROM digests WHERE seq > %s ORDER BY seq",
                    (after_seq,))
        for seq, position, size, root, at, prev, hash_, signature, key_id in cur:
            w.add(body_of({"t": "digest", "seq": seq, "position": position, "size": size,
                           "root": _hex(root), "recorded_at": at, "prev": _hex(prev),
                           "hash": _hex(hash_), "signature": _hex(signature),
                           "key_id": key_id}))
            n, last = n + 1, seq
    return n, last
