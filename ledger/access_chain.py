"""The access log's hash chain: how a row of ``access_log`` (migration 0012) is encoded
and hashed, shared by the appender (``access/log.py``), the verifier
(``integrity/verify/access_log.py``) and the backups (``ops/backup/``).

A row is ``seq`` (1, 2, 3… without gaps), ``recorded_at`` (when it was appended, by the
database clock), ``record`` (the canonical JSON text of the record, ``chain.canonical``),
``prev_hash`` (the previous row's hash; null for seq 1) and ``hash``: the lowercase hex
SHA-256 of the canonical encoding of ``{"prev_hash", "record", "recorded_at", "seq"}``,
where ``record`` is the record's JSON value (so its canonical text appears verbatim) and
``recorded_at`` the RFC 3339 UTC time with microseconds (``chain.timestamp``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from . import chain

#: The advisory lock (``pg_advisory_xact_lock``) every append holds while it reads the
#: head and inserts after it: appenders in several processes make one chain.
LOCK_ID = 0x55_0700_0012  # arbitrary, fixed: "ssot access log"

#: ``recorded_at`` (a timestamptz column) as the hash spells it, in SQL.
RECORDED_AT_SQL = """to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def encode_record(record: Mapping[str, Any]) -> str:
    """The canonical JSON text a record is stored as."""
    return chain.canonical(record).decode("utf-8")


def row_hash(seq: int, recorded_at: str, record: Any, prev_hash: str | None) -> str:
    """The hash of a row whose record is the JSON value ``record``."""
    return chain.hash_hex({"seq": seq, "recorded_at": recorded_at, "record": record,
                           "prev_hash": prev_hash})


def stored_row_hash(seq: int, recorded_at: str, record_text: str,
                    prev_hash: str | None) -> str | None:
    """The hash a stored row should have (``record_text`` the column's text); None when
    the text is not JSON (it was not written by the appender)."""
    try:
        return row_hash(seq, recorded_at, orjson.loads(record_text), prev_hash)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
