"""The digest record: what a digest of the log says, its canonical content (which its hash
and signature cover), where it is published, and how the recorded ones are read.

A digest's canonical content is ``chain.canonical`` of the object

    {"seq": 7, "position": 7012, "size": 7000, "root": "<64 hex>",
     "recorded_at": "2026-01-31T12:00:00.123456Z", "prev": "<64 hex>" | null}

that is, byte for byte, ``{"position":7012,"prev":"…","recorded_at":"…","root":"…",
"seq":7,"size":7000}`` (members sorted, no spaces; hex lower case; ``recorded_at`` the
digest's database clock as ``chain.timestamp`` spells it; ``position`` the last
covered event's, ``size`` the number of events covered, ``prev`` the previous digest's
hash, null for seq 1). Its ``hash`` is SHA-256 of that content (so digests form a chain of
their own), and with a signing key (``SSOT_SIGNING_KEY_FILE``, Ed25519, PKCS#8 PEM) its
``signature`` is Ed25519 over the same bytes, by the key named ``key_id`` (``signing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from nexus_ssot.ledger import chain


def digest_stream(events_stream: str) -> str:
    """The JetStream stream the digests go to, beside the events' stream."""
    return f"{events_stream}_DIGESTS"


def digest_subject(prefix: str) -> str:
    """The subject digests are published on: ``ssot_digests`` for prefix ``ssot``."""
    return f"{prefix}_digests"


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

