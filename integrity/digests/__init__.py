"""Digests of the log: a Merkle tree over every event, its root recorded, chained, signed
and published at a cadence, and inclusion proofs against it (promise 7).

- ``record``: the digest itself, its canonical content, where it is published, reading
  the recorded ones;
- ``signing``: the Ed25519 key that signs them;
- ``tree``: the Merkle tree as stored (leaves, perfect subtrees), its frontier and audit
  paths read back;
- ``digester``: the process that records digests and publishes them on NATS JetStream;
- ``proofs``: inclusion proofs of an entry's versions.

The names below are this part's interface (``from nexus_ssot.integrity.digests import
Digester``); the modules here import each other directly, never this package.
"""

from typing import TYPE_CHECKING, Any

from .proofs import NotYetDigested, proof
from .record import (
    Digest,
    digest_by_seq,
    digest_content,
    digest_stream,
    digest_subject,
    digests_after,
    latest_digest,
)
from .signing import Signer, SigningKeyError, key_id
from .tree import frontier_parts, leaf_of, stored_audit_path, stored_nodes

__all__ = [
    "CHANNEL",
    "Digest",
    "Digester",
    "NotYetDigested",
    "Progress",
    "Signer",
    "SigningKeyError",
    "TreeMismatch",
    "digest_by_seq",
    "digest_content",
    "digest_stream",
    "digest_subject",
    "digests_after",
    "frontier_parts",
    "key_id",
    "latest_digest",
    "leaf_of",
    "proof",
    "stored_audit_path",
    "stored_nodes",
]

if TYPE_CHECKING:
    from .digester import CHANNEL, Digester, Progress, TreeMismatch

#: The digester's names, imported on first use: it brings nats-py (~35 ms and ~1.4 MB of
#: a process), which an HTTP worker, reading digests and proofs only, never needs.
_OF_DIGESTER = frozenset({"CHANNEL", "Digester", "Progress", "TreeMismatch"})


def __getattr__(name: str) -> Any:
    if name in _OF_DIGESTER:
        from . import digester

        return getattr(digester, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
