"""Tamper evidence: the canonical encoding and hash of an event, and the leaf an event
becomes in the log's Merkle tree.

Canonical encoding of a JSON value: UTF-8 bytes of JSON with object members sorted by key,
no whitespace, non-ASCII characters as themselves, numbers as Python writes them
(integers in decimal, floats as ``repr``), no NaN or infinities — byte for byte what
``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)`` produces, so a verifier needs nothing but the standard library.

An event's hash is SHA-256 (hex) of the canonical encoding of the object of its
``HASHED`` fields: stream id, version, type, namespace, key, document, patch, actor,
reason, correlation id, causation id, idempotency key, event id, resolution, the version a
restore came from, and ``prev_hash``, the hash of the stream's previous event (null for
version 1). So each stream is a hash chain. The commit time and global position are
assigned by the database after the hash is made: they are covered by the digests, whose
leaves are ``leaf(position, recorded_at, hash)``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

#: The members of the hashed object, in the order the README documents them.
HASHED = ("stream", "version", "type", "namespace", "key", "document", "patch", "actor",
          "reason", "correlation_id", "causation_id", "idempotency_key", "event_id",
          "resolution", "restored_from_version", "prev_hash")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def event_hash(fields: dict[str, Any]) -> str:
    """The hash of an event given its ``HASHED`` fields (a missing one counts as null)."""
    return hashlib.sha256(canonical({k: fields.get(k) for k in HASHED})).hexdigest()


def timestamp(moment: datetime) -> str:
    """A commit time as the leaves spell it: RFC 3339 UTC with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def leaf_data(position: int, recorded_at: datetime, hash_hex: str) -> bytes:
    """What a log event contributes to the Merkle tree (before ``merkle.leaf_hash``)."""
    return canonical({"position": position, "recorded_at": timestamp(recorded_at),
                      "hash": hash_hex})
