"""Verification of the log (promise 7): every event's hash, every stream's chain, the
digests and their Merkle trees, recomputed from the database and compared — reporting the
first problem in log order, precisely (``ssot verify``, ``GET /v1/integrity/verify``).

What is checked, over the positions ``(from, to]`` of one REPEATABLE READ snapshot:

- **each event's stored bytes and own hash**: its state is exactly the writer's bytes for
  its members (``ledger.stored_state``: the members its class version stores, in their
  order, as orjson encodes them — else ``event_altered`` naming the member added,
  renamed, removed or moved, or ``state``); the ``chain.hashed_members`` of its state
  (with ``stream`` = its stream id, ``version`` = its stream version, ``type`` from its
  topic) hash to the ``hash`` its state holds; otherwise ``event_altered``, the field
  named by comparing the state with the independent copy in ``entry_history`` (or saying
  that the copy agrees: both were rewritten). From class version 5 the hash covers every
  member; before it, the state's bytes must also be those of its seal (``state_seals``),
  and an event without one is an ``unsealed_event``. An event without a hash is an
  ``unchained_event``.
- **each stream's chain**: versions 1, 2, 3… in log order, each ``prev_hash`` the previous
  event's ``hash``: a version gap is an ``event_missing`` (a later-arriving version makes it
  ``events_reordered``), a wrong link ``chain_broken`` (or, when the history copy shows the
  previous event was rewritten with a recomputed hash, ``event_altered`` there).
- **the copies** in ``entry_history`` (one row per event, same position) and ``entries``
  (each entry's last event): an event whose history row is gone, a history row whose event
  is gone, a differing commit time or version, a current state naming an event the log no
  longer has, or a later one it does not know (``event_missing``, ``event_inserted``,
  ``events_reordered``, ``event_altered`` field ``recorded_at``). A difference the digests
  vouch for (the event's Merkle leaf is the digested one) is a drift of the view, not of
  the log, and is left to ``ssot check``.
- **the digests**: each event's leaf ``merkle.leaf_hash(chain.leaf_data(position,
  recorded_at, hash))`` against the stored ``merkle_leaves`` (a stored leaf without its
  event is ``event_missing``, an event at a digested position without a leaf
  ``event_inserted``, two leaves exchanged ``events_reordered``, a changed commit time
  ``event_altered`` field ``recorded_at``), a ``merkle.Frontier`` over the log's leaves
  against each digest's root at its size, and the digests themselves: seq contiguous
  (``digest_missing``), content hash and ``prev`` links (``digest_altered``), Ed25519
  signatures by a known key (``digest_signature_invalid``), and, given the digests as
  published (``--digests FILE``), each row against its published copy
  (``digest_mismatch_external``), so a rewritten digest table cannot hide.
- **the access log** (by a run that reaches the head): each row's hash, seq without gaps,
  each ``prev_hash`` link (``access_record_altered``, ``access_record_missing``,
  ``access_record_inserted``, ``access_chain_broken``), reported at the row's ``seq``.

Problems are collected, deduplicated (one per kind and position) and ordered by position;
a problem explained by an earlier one (a root that differs because an event before it
changed) is not reported again. A run can resume: from a position (each stream's previous
event is read from the database when first met; the Merkle frontier from the stored tree)
or from a checkpoint file written every N events (position, frontier, digest chain head,
pending gaps and the problems so far).

Speed: one server-side cursor in position order (each event with its seal, if any),
fetched on a thread of its own so the database's work overlaps ours; orjson decodes each
state, re-encodes it (the stored bytes must come back) and encodes its hashed object
(``chain.encoding_candidate``), a fast path that is only trusted when it yields exactly
the stored hash (otherwise ``chain.encoding`` decides); the copies are compared in SQL on
a second connection in the same snapshot while the scan runs.

The modules, one per concept: ``problems`` (the problem kinds, the findings, the report),
``inputs`` (options, public keys, published digests), ``log`` (reading the log),
``chains`` (each event's hash, each stream's chain), ``digests`` (the digests and their
Merkle tree), ``views`` (the copies), ``access_log`` (the access log's chain),
``judging`` (the doubted positions), ``checkpoint`` (checkpoints and resuming) and ``run``
(one run: the scan and the order of the checks). The names below are the interface; the
modules import each other directly.
"""

from .checkpoint import CHECKPOINT_FORMAT, Checkpoint
from .inputs import (
    Options,
    load_public_key,
    parse_published_digest,
    public_keys,
    read_published_digests,
)
from .problems import (
    ACCESS_CHAIN_BROKEN,
    ACCESS_KINDS,
    ACCESS_RECORD_ALTERED,
    ACCESS_RECORD_INSERTED,
    ACCESS_RECORD_MISSING,
    CHAIN_BROKEN,
    DIGEST_ALTERED,
    DIGEST_MISMATCH_EXTERNAL,
    DIGEST_MISSING,
    DIGEST_SIGNATURE_INVALID,
    EVENT_ALTERED,
    EVENT_INSERTED,
    EVENT_MISSING,
    EVENTS_REORDERED,
    KINDS,
    MAX_KEPT,
    UNCHAINED_EVENT,
    UNSEALED_EVENT,
    Problem,
    Progress,
    Report,
)
from .run import Verifier, verify

__all__ = [
    "ACCESS_CHAIN_BROKEN",
    "ACCESS_KINDS",
    "ACCESS_RECORD_ALTERED",
    "ACCESS_RECORD_INSERTED",
    "ACCESS_RECORD_MISSING",
    "CHAIN_BROKEN",
    "CHECKPOINT_FORMAT",
    "DIGEST_ALTERED",
    "DIGEST_MISMATCH_EXTERNAL",
    "DIGEST_MISSING",
    "DIGEST_SIGNATURE_INVALID",
    "EVENTS_REORDERED",
    "EVENT_ALTERED",
    "EVENT_INSERTED",
    "EVENT_MISSING",
    "KINDS",
    "MAX_KEPT",
    "UNCHAINED_EVENT",
    "UNSEALED_EVENT",
    "Checkpoint",
    "Options",
    "Problem",
    "Progress",
    "Report",
    "Verifier",
    "load_public_key",
    "parse_published_digest",
    "public_keys",
    "read_published_digests",
    "verify",
]
