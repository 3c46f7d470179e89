"""What a verification is given: the options (which namespace and positions, a checkpoint
file, limits), the public keys that signed the digests, and the digests as they were
published on NATS (``--digests``), read from the files an operator names."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from nexus_ssot.ledger import chain
from nexus_ssot.ledger.errors import InvalidInput

from ..digests import Digest, key_id

if TYPE_CHECKING:  # loaded with a key (integrity/digests/signing.py says why)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


@dataclass(frozen=True)
class Options:
    """What to verify. ``from_position``: start after it (each stream's previous event is
    read as needed); ``checkpoint``: a file to resume from when it exists, and to write
    every ``checkpoint_every`` events and at the end; ``max_events``: refuse a range with
    more events (an explicit ``to_position``) or end the range there (none given)."""

    namespace: str | None = None
    from_position: int | None = None
    to_position: int | None = None
    published: tuple[Digest, ...] = ()
    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    checkpoint: Path | None = None
    checkpoint_every: int = 250_000
    max_events: int | None = None
    fetch_size: int = 5_000

    def check(self) -> None:
        for name in ("from_position", "to_position"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidInput(f"{name} must be a position (an integer >= 0), not "
                                   f"{value!r}", code="invalid_position", field=name)
        if self.from_position is not None and self.to_position is not None \
                and self.to_position < self.from_position:
            raise InvalidInput(f"to_position {self.to_position} is before from_position "
                               f"{self.from_position}", code="invalid_position",
                               field="to_position")
        if self.checkpoint_every < 1 or self.fetch_size < 1:
            raise InvalidInput("checkpoint_every and fetch_size must be positive",
                               field="checkpoint_every")



def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from ``path``: a PEM public key, a PKCS#8 PEM private key
    (its public half), the JSON ``GET /v1/integrity/public-key`` serves, or 64 hex digits."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"public key file {str(path)!r} cannot be read: {e.strerror}",
                           code="invalid_public_key", field="public_key") from None
    text = data.strip()
    try:
        if text.startswith(b"{"):
            served = orjson.loads(text)
            text = str(served.get("public_key_hex") or served.get("public_key_pem") or
                       "").strip().encode()
        if re.fullmatch(rb"[0-9a-fA-F]{64}", text):
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode()))
        if b"PRIVATE KEY" in text:
            private = serialization.load_pem_private_key(text, password=None)
            if isinstance(private, Ed25519PrivateKey):
                return private.public_key()
            raise ValueError(f"it holds a {type(private).__name__}, not an Ed25519 key")
        public = serialization.load_pem_public_key(text)
        if isinstance(public, Ed25519PublicKey):
            return public
        raise ValueError(f"it holds a {type(public).__name__}, not an Ed25519 key")
    except (ValueError, TypeError, UnsupportedAlgorithm, orjson.JSONDecodeError) as e:
        raise InvalidInput(
            f"public key file {str(path)!r} is not an Ed25519 public key (PEM, PKCS#8 PEM "
            f"private key, the JSON of GET /v1/integrity/public-key, or 64 hex digits): {e}",
            code="invalid_public_key", field="public_key") from None


def public_keys(keys: Sequence[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """Keys by their ``key_id`` (as digests name them)."""
    return {key_id(k): k for k in keys}


def _hex(value: Any, what: str, *, nullable: bool = False) -> bytes | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]*", value) or len(value) % 2:
        raise ValueError(f"{what} must be lowercase hex{' or null' if nullable else ''}")
    return bytes.fromhex(value)


def parse_published_digest(item: Any) -> Digest:
    """A digest as published on NATS (``Digest.as_json``); ValueError names the member."""
    if not isinstance(item, dict):
        raise ValueError("a digest must be a JSON object")
    for name in ("seq", "position", "size"):
        if not isinstance(item.get(name), int) or isinstance(item.get(name), bool) \
                or item[name] < (1 if name != "position" else 0):
            raise ValueError(f"{name} must be a positive integer")
    root = _hex(item.get("root"), "root")
    digest_hash = _hex(item.get("hash"), "hash")
    assert root is not None and digest_hash is not None
    if len(root) != 32 or len(digest_hash) != 32:
        raise ValueError("root and hash must be 64 hex digits")
    prev = _hex(item.get("prev"), "prev", nullable=True)
    if prev is not None and len(prev) != 32:
        raise ValueError("prev must be 64 hex digits or null")
    signature = _hex(item.get("signature"), "signature", nullable=True)
    kid = item.get("key_id")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("key_id must be text or null")
    at = item.get("recorded_at")
    try:
        recorded_at = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        recorded_at = None
    if recorded_at is None or recorded_at.tzinfo is None \
            or chain.timestamp(recorded_at) != at:
        raise ValueError("recorded_at must be a UTC time like 2026-01-31T12:00:00.123456Z")
    return Digest(item["seq"], item["position"], item["size"], root, recorded_at, prev,
                  digest_hash, signature, kid)


def read_published_digests(path: Path) -> list[Digest]:
    """The digests in ``path``: NDJSON, one digest per line as published on NATS (blank
    lines are skipped). A bad line raises ``InvalidInput`` naming the line and member."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise InvalidInput(f"digests file {str(path)!r} cannot be read: {e.strerror}",
                           code="invalid_digests_file", field="digests") from None
    found: dict[int, Digest] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            digest = parse_published_digest(orjson.loads(line))
        except (orjson.JSONDecodeError, ValueError) as e:
            raise InvalidInput(f"digests file {str(path)!r} line {number}: {e}",
                               code="invalid_digests_file", field="digests") from None
        if digest.seq in found and found[digest.seq] != digest:
            raise InvalidInput(f"digests file {str(path)!r} line {number}: digest "
                               f"{digest.seq} appears twice, differently",
                               code="invalid_digests_file", field="digests")
        found[digest.seq] = digest
    return [found[s] for s in sorted(found)]
