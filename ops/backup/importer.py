"""Import: verify an export file line by line and write it in one transaction, into an
empty database (a full export) or one whose last import it continues (an incremental one).

An import verifies each line as it reads it (JSON, running hash, kind and members,
positions increasing, each stream's versions 1, 2, 3… and ``prev_hash`` chain, each
event's state the writer's bytes for its members (``ledger.stored_state``) and its hash
recomputed, through ``ssot verify``'s fast path with the state the line decoded, or
``chain.event_hash`` when that path does not vouch for it; each leaf recomputed, the
digests' chain and roots)
and writes it with COPY in one transaction, sealing (``state_seals``) the events whose
hash leaves members out (class version before 5) as the file holds them: the first bad line refuses
the whole file, naming the line and the reason, and nothing is written. The file is
decompressed on a thread; the lines are checked ``BATCH`` at a time, their events sent
by a COPY kept open while they are checked (PostgreSQL stores them meanwhile); after
each batch its Merkle leaves and the nodes they complete (computed as the leaves are
verified) are stored and, into an empty database, its ``entry_history`` rows folded,
while the next batch is checked. ``entry_history`` is filled without its indexes and
primary key, made again at the end (faster than maintaining them row by row). Then the
current state is folded over the imported range (``entries`` without its secondary
indexes, made again after the fold), all in the same transaction, and the asynchronous
views rebuilt (the search's trigram index among them). The access log's lines
(``access_lines``) are checked and copied in the same transaction, under the lock its
appenders take.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
import psycopg
from psycopg import sql

from nexus_ssot.integrity import merkle
from nexus_ssot.ledger.migrate import migrate

from .access_lines import ACCESS_COPY, access_row, check_overlap, prepare
from .checks import (
    ImportState,
    check_header,
    check_trailer,
    digest_line,
    event_row,
    idempotency_row,
    leaf_line,
)
from .compression import read_lines
from .copier import EVENTS_COPY, IDEMPOTENCY_COPY, Copier, copy_text
from .format import (
    RH,
    TAIL,
    UUID,
    BackupError,
    BadFile,
    NotEmpty,
    OutOfOrder,
    Progress,
    check_running_hash,
    parse_line,
)

#: Lines checked before their batch is stored (and an incremental file's streams looked up).
BATCH = 10_000
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
    #: Access log rows written (lines the database already held are not counted).
    access: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


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
    with contextlib.closing(read_lines(path)) as lines:  # closed: its reading thread ends
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
        header = check_header(raw, number)
        st = ImportState(str(path), bytes.fromhex(raw[-TAIL + len(RH):-3].decode()),
                         int(header["since_position"]), int(header["version"]))
        st.access.since = st.access.seq = int(header.get("access_since") or 0)
        await _check_target(conn, header, st)
        await prepare(conn, st.access, full=not st.incremental)
        total = max(int(header["upto_position"]) - st.position, 1)
        copier = Copier(conn)
        fold, unindexed, unkeyed = None, [], []
        if not st.incremental:  # an empty database: entry_history is folded by batch
            fold = _history_fold(conn)
            unindexed = [*await _drop_indexes(conn, _UNINDEXED),
                         *await _drop_indexes(conn, _DEFERRED_SECONDARY, secondary_only=True)]
            unkeyed = await _drop_indexes(conn, "ssot_events", constraints_only=True)
        try:
            trailer = await _load(conn, st, lines, number, copier, progress, total, fold)
            await copier.end()
        except BaseException as e:
            await copier.fail(e)
            raise
        await _make_indexes(conn, unkeyed)
        await _check_digests(conn, st)
        await check_overlap(conn, st.access)
        last_position = int(trailer["last_position"])
        await _finish(conn, st, header, trailer, last_position)
        await _make_indexes(conn, unindexed)
        await conn.commit()
        if progress is not None:
            progress(st.events, st.events)
    return Imported(str(path), int(header["since_position"]), last_position, st.events,
                    st.unchained, len(st.digests), st.idempotency, st.leaf_lines,
                    str(trailer["rh"]), time.monotonic() - started,
                    access=st.access.copied)


async def _check_target(conn: psycopg.AsyncConnection[Any], header: dict[str, Any],
                        st: ImportState) -> None:
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


async def _known_streams(conn: psycopg.AsyncConnection[Any], st: ImportState,
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


async def _load(conn: psycopg.AsyncConnection[Any], st: ImportState,
                lines: Iterator[tuple[int, bytes]], number: int, copier: Copier,
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
                trailer = check_trailer(raw, number, st)
                continue
            st.rh = check_running_hash(raw, number, st.rh)
            obj = parse_line(raw, number)
            kind = obj.get("t")
            if kind == "event":
                stream = obj.get("stream")
                if st.incremental and isinstance(stream, str) and stream not in st.streams \
                        and UUID.match(stream):  # missed above (spelled otherwise)
                    await copier.end()
                    await _known_streams(conn, st, {stream})
                await copier.add(EVENTS_COPY, event_row(st, number, raw, obj))
            elif kind == "leaf":
                await copier.end()
                await leaf_line(conn, st, number, obj)
            elif kind == "idempotency":
                await copier.add(IDEMPOTENCY_COPY, idempotency_row(st, number, obj))
            elif kind == "digest":
                digest_line(st, number, obj)
            elif kind == "access":
                row = access_row(st.access, number, raw, obj, st.version)
                if row is not None:
                    await copier.add(ACCESS_COPY, row)
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


async def _check_digests(conn: psycopg.AsyncConnection[Any], st: ImportState) -> None:
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
        copy_text(d["key_id"])) for _, d in st.digests]
    if rows:
        async with conn.cursor() as cur, cur.copy(
                b"COPY digests (seq, position, size, root, recorded_at, prev, hash,"
                b" signature, key_id) FROM STDIN") as copy:
            await copy.write(b"".join(rows))


#: The inline view whose table a full import fills without its indexes (its eight indexes,
#: maintained row by row, tripled the cost of filling it), then indexes.
_UNINDEXED = "entry_history"
#: The inline view whose table a full import fills without its secondary indexes (such
#: an index, maintained row by row, costs the fold more than one build at the end: the
#: search's trigram index did, before search became a view), keeping the primary key its
#: fold's upsert needs.
_DEFERRED_SECONDARY = "entries"


def _history_fold(conn: psycopg.AsyncConnection[Any]) -> Callable[[int, int], Awaitable[None]]:
    """The fold of the history view over a range of positions."""
    from nexus_ssot.projections.inline import INLINE_VIEWS
    from nexus_ssot.projections.runtime import Tables

    [view] = [make() for make in INLINE_VIEWS.values() if _UNINDEXED in make.tables]
    tables = Tables(view.tables)
    return lambda after, upto: view.apply(conn, after, upto, tables)


async def _drop_indexes(conn: psycopg.AsyncConnection[Any], table: str, *,
                        constraints_only: bool = False,
                        secondary_only: bool = False) -> list[str]:
    """Drop ``table``'s indexes and the constraints they back (or only those: the events'
    primary key, random uuids, cost a full import more to maintain row by row than to
    build at the end; the batches' folds need the position index; or, ``secondary_only``,
    only the indexes that are neither unique nor a constraint's) in the import's
    transaction; the statements that make them again."""
    cur = await conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), c.conname,"
        " pg_get_constraintdef(c.oid), i.indisunique FROM pg_index i"
        " LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid"
        " WHERE i.indrelid = %s::regclass ORDER BY c.conname IS NULL, i.indexrelid",
        (table,))
    again = []
    for index, definition, constraint, constraint_definition, unique in await cur.fetchall():
        if secondary_only and (constraint is not None or unique):
            continue
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


async def _finish(conn: psycopg.AsyncConnection[Any], st: ImportState, header: dict[str, Any],
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
    if st.to_seal:  # the bytes the file vouched for (its running hash), sealed
        await conn.execute(
            "INSERT INTO state_seals (position, state_sha256) SELECT notification_id,"
            " sha256(state) FROM ssot_events WHERE notification_id = ANY(%s)", (st.to_seal,))
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
