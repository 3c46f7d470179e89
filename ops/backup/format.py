"""The export file format of verified logical backups, its lines and their running hash,
and what an export or import that cannot be done raises.

The file is gzip-compressed NDJSON (a series of gzip members of ~2 MB, compressed on
threads; any gzip reader reads them as one stream), one JSON object per line, each with a
member ``t`` naming its kind, written in this order:

``header``
    ``format`` ("nexus-ssot-export"), ``version`` (2; 1 before the access log, read
    too), ``source`` (the exporting
    database: PostgreSQL system identifier and database name), ``since_position`` (the
    events are those after it), ``upto_position`` (…up to this one, the head of the
    export's snapshot), ``previous`` (null for a full export; for an incremental one the
    previous export's trailer: ``last_position``, ``last_hash``, ``last_digest_seq``,
    ``leaves``, ``final_hash``), ``access_since`` (version 2: the access lines are the
    access log's rows after this seq) and ``created_at``.
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
``access``
    Version 2: the ``access_log`` rows after ``access_since`` (``access_lines``): ``seq``,
    ``recorded_at``, ``prev_hash``, ``hash`` and last ``record``, the stored text.
``trailer``
    ``count`` (events), ``leaves`` (leaf lines), ``idempotency``, ``digests``,
    ``first_position``, ``last_position``, ``last_hash`` (the last event's hash),
    ``last_digest_seq``, ``total_leaves`` (the source's leaves so far), version 2's
    ``access`` (access lines), ``last_access_seq`` and ``last_access_hash`` (the access
    log's head the export saw), ``lines`` (all lines, the trailer included) and
    ``running_hash`` (the line before's).

Every line ends with ``"rh":"<64 hex>"}``, its running hash: ``rh = SHA-256(rh of the line
before || the line's bytes up to the comma before "rh")``; the header's "line before" is
the previous export's final hash (an incremental export) or 32 zero bytes. The trailer's
``rh`` is the file's final hash, the next incremental export's starting point, so a chain
of files is one hash chain. A changed or missing line breaks the running hash at that
line; a truncated file has no trailer.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
from collections.abc import Callable
from typing import Any

import orjson

from nexus_ssot.ledger.documents import surrogate_refusal

FORMAT = "nexus-ssot-export"
#: The version exports are written in, and those an import reads (a version 1 file is
#: a version 2 file without access lines).
VERSION = 2
VERSIONS = (1, 2)
ZERO = bytes(32)
#: Each line ends with this, 64 hex digits and ``"}`` and a newline.
RH = b',"rh":"'
TAIL = len(RH) + 64 + 3
#: A timestamptz column (``{}``) as the file spells moments: RFC 3339 UTC, microseconds.
MOMENT_SQL = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
MOMENT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

#: Told (events done, events in all) as an export or import goes.
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


def make_line(body: bytes, previous: bytes) -> tuple[bytes, bytes]:
    """The line of ``body`` (a JSON object without its closing brace) and its running
    hash (raw)."""
    rh = hashlib.sha256(previous + body).digest()
    return body + RH + rh.hex().encode() + b'"}\n', rh


def body_of(obj: dict[str, Any]) -> bytes:
    """The line body of ``obj``: its JSON without the closing brace."""
    return orjson.dumps(obj)[:-1]


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
                    header = parse_line(raw, number)
                last = raw
    except (OSError, EOFError) as e:
        raise BackupError(f"{path}: cannot read it after line {number}: {e}") from None
    if header is None or header.get("t") != "header":
        raise BackupError(f"{path}: line 1 is not an export header")
    trailer = parse_line(last, number)
    if trailer.get("t") != "trailer" or not last.endswith(b"\n"):
        raise BackupError(f"{path}: it ends without a trailer after line {number}: "
                          "a truncated export cannot be continued")
    return {**trailer, "source": header.get("source"), "final_hash": trailer["rh"]}


def parse_line(raw: bytes, number: int) -> dict[str, Any]:
    """The JSON object of line ``number``."""
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


def check_running_hash(raw: bytes, number: int, previous: bytes) -> bytes:
    """The running hash of line ``number`` (raw), checked against the one it ends with."""
    tail = raw[-TAIL:]
    if not (tail.startswith(RH) and tail.endswith(b'"}\n')):
        raise BadFile(number, "the line does not end with its running hash (\"rh\")")
    rh = hashlib.sha256(previous + raw[:-TAIL]).digest()
    if rh.hex().encode() != tail[len(RH):-3]:
        raise BadFile(number, "running hash mismatch: this line (or one before it) was "
                              "changed, added or removed")
    return rh


def require(obj: dict[str, Any], number: int, name: str, kind: type | tuple[type, ...],
            optional: bool = False) -> Any:
    """Member ``name`` of line ``number``'s object, of type ``kind`` (or None when
    ``optional``)."""
    value = obj.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadFile(number, f"{obj.get('t', 'line')} member {name!r} is missing or not "
                              f"{getattr(kind, '__name__', 'valid')}: {value!r}")
    return value
