"""The access log in export files (format version 2): its rows after the header's
``access_since`` as ``access`` lines, exported verbatim and imported verbatim, so the
chain ``ssot verify`` checks still holds in the database imported into.

An ``access`` line: ``seq``, ``recorded_at`` (RFC 3339 UTC, microseconds), ``prev_hash``,
``hash`` and last ``record``: the stored record text, byte for byte (it is canonical JSON).
A full export holds every row (``access_since`` 0); one made with ``--after FILE`` the
rows after that file's ``last_access_seq``; one made with ``--since-position`` alone every
row too, since the access log has no positions: rows the database imported into already
holds are then skipped, after checking that the file agrees with it where they meet.

An import checks each line as it reads it (seq ``access_since`` + 1, 2, 3… without a gap,
each hash recomputed with ``access_chain.stored_row_hash``, each ``prev_hash`` the
previous line's hash, the first one the database's row at ``access_since`` or null) and
COPYs the rows the database does not hold yet, holding the appenders' advisory lock so a
running server appends after them. A version 1 file has no access lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from nexus_ssot.ledger import access_chain

from .compression import LineWriter
from .copier import copy_text
from .format import MOMENT, TAIL, BackupError, BadFile, NotEmpty, OutOfOrder, require

#: The first format version whose files may hold access lines.
ACCESS_VERSION = 2
ACCESS_COPY = b"COPY access_log (seq, recorded_at, record, prev_hash, hash) FROM STDIN"
_RECORD = b',"record":'


@dataclass
class AccessState:
    """The access lines of one file's import: the seq they follow (``since``), the
    database's head (``held``, ``held_hash``) and hash at ``since`` (``anchor``), the
    lines read (``lines``), the last one (``seq``, ``hash``), the rows copied
    (``copied``) and the last line the database already held (``overlap``)."""

    since: int = 0
    held: int = 0
    held_hash: str | None = None
    anchor: str | None = None
    lines: int = 0
    seq: int = 0
    hash: str | None = None
    copied: int = 0
    overlap: tuple[int, int, str] | None = None  # line number, seq, hash

    def __post_init__(self) -> None:
        self.seq = self.since


def export_access(conn: psycopg.Connection[Any], w: LineWriter, after_seq: int,
                  after_hash: str | None = None) -> tuple[int, int, str | None]:
    """The access log's rows after ``after_seq`` (whose hash the previous export saw as
    ``after_hash``, when given) as lines; (lines, last seq, its hash)."""
    table = conn.execute("SELECT to_regclass('access_log')").fetchone()
    if table is None or table[0] is None:  # a database not migrated since
        return 0, after_seq, None
    n, last, last_hash = 0, after_seq, None
    if after_seq:
        found = conn.execute("SELECT hash FROM access_log WHERE seq = %s",
                             (after_seq,)).fetchone()
        last_hash = found[0] if found else None
        if after_hash is not None and last_hash != after_hash:
            raise BackupError(f"access record {after_seq} is not the one the previous "
                              "export ended with (its hash differs)")
    with conn.cursor("ssot_export_access") as cur:
        cur.itersize = 10_000
        cur.execute(f"SELECT seq, {access_chain.RECORDED_AT_SQL}, prev_hash, hash, record"
                    " FROM access_log WHERE seq > %s ORDER BY seq", (after_seq,))
        for seq, recorded_at, prev_hash, own, record in cur:
            text = record.encode("utf-8", "surrogatepass")
            if b"\n" in text or b"\r" in text:
                raise BackupError(f"access record {seq} is not canonical JSON (it holds a "
                                  "line break): ssot verify reports it")
            w.add(b'{"t":"access","seq":%d,"recorded_at":"%s","prev_hash":%s,"hash":%s'
                  b'%s%s' % (seq, recorded_at.encode(), orjson.dumps(prev_hash),
                             orjson.dumps(own), _RECORD, text))
            n, last, last_hash = n + 1, seq, own
    return n, last, last_hash


async def prepare(conn: psycopg.AsyncConnection[Any], st: AccessState, *,
                  full: bool) -> None:
    """Take the appenders' lock and read where the database's access log is: a full
    import needs it empty, an incremental one to hold the row its lines follow."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (access_chain.LOCK_ID,))
    cur = await conn.execute("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1")
    head = await cur.fetchone()
    st.held, st.held_hash = (int(head[0]), head[1]) if head else (0, None)
    if full and st.held:
        raise NotEmpty(f"the database's access log holds {st.held} records: a full "
                          "export is imported into an empty database only")
    if st.since > st.held:
        raise OutOfOrder(f"this export's access records follow record {st.since}; the "
                         f"database's access log ends at record {st.held}: import the "
                         "exports in order")
    if st.since:
        cur = await conn.execute("SELECT hash FROM access_log WHERE seq = %s", (st.since,))
        found = await cur.fetchone()
        st.anchor = found[0] if found else None


def access_row(st: AccessState, number: int, raw: bytes, obj: dict[str, Any],
               version: int) -> bytes | None:
    """Line ``number`` checked; its COPY row, or None when the database holds it."""
    if version < ACCESS_VERSION:
        raise BadFile(number, f"access lines need format version {ACCESS_VERSION}")
    seq = require(obj, number, "seq", int)
    recorded_at = require(obj, number, "recorded_at", str)
    prev_hash = require(obj, number, "prev_hash", str, optional=True)
    own = require(obj, number, "hash", str)
    record = require(obj, number, "record", dict)
    if seq != st.seq + 1:
        raise BadFile(number, f"access record {seq} does not follow access record {st.seq}")
    if not MOMENT.match(recorded_at):
        raise BadFile(number, f"recorded_at {recorded_at!r} is not RFC 3339 UTC with "
                              "microseconds")
    expected = st.hash if st.lines else st.anchor
    if prev_hash != expected:
        raise BadFile(number, f"access record {seq}: prev_hash {prev_hash!r} is not the "
                              f"previous record's hash {expected!r}")
    start = raw.find(_RECORD) + len(_RECORD)
    text = raw[start:-TAIL].decode()
    try:
        last = orjson.loads(text) == record  # the record is the line's last member
    except orjson.JSONDecodeError:
        last = False
    if not last:
        raise BadFile(number, "the access line's last member is not its record")
    if access_chain.stored_row_hash(seq, recorded_at, text, prev_hash) != own:
        raise BadFile(number, f"access record {seq}: its hash does not match its content")
    st.seq, st.hash = seq, own
    st.lines += 1
    if seq <= st.held:
        st.overlap = (number, seq, own)
        return None
    st.copied += 1
    return b"\t".join(copy_text(c) for c in (seq, recorded_at, text, prev_hash, own)) + b"\n"


async def check_overlap(conn: psycopg.AsyncConnection[Any], st: AccessState) -> None:
    """The last line the database already held is its row (so are those before it: they
    chain to it), and the first new line follows the database's last row."""
    if st.overlap is not None:
        number, seq, own = st.overlap
        cur = await conn.execute("SELECT hash FROM access_log WHERE seq = %s", (seq,))
        found = await cur.fetchone()
        if found is None or found[0] != own:
            raise OutOfOrder(f"line {number}: access record {seq} is not the one the "
                             "database holds (its hash differs)")


def check_trailer(trailer: dict[str, Any], number: int, st: AccessState,
                  version: int) -> None:
    """The trailer's access members against the lines read."""
    if version < ACCESS_VERSION:
        return
    checks: dict[str, Any] = {"access": st.lines, "last_access_seq": st.seq}
    if st.lines:
        checks["last_access_hash"] = st.hash
    for name, value in checks.items():
        if trailer.get(name) != value:
            raise BadFile(number, f"trailer member {name!r} is {trailer.get(name)!r}; the "
                                  f"file holds {value!r}")
