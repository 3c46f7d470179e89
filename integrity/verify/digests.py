"""The digests and the Merkle tree under them, checked against the log: each digest row
against itself, its predecessor and its signature; the stored leaves against the leaves
of the log's events (the differences become positions to judge); the roots of a
``merkle.Frontier`` over the log against each digest's at its size; and the digests as
published (``--digests``) against the table, so a rewritten digest table cannot hide."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from .. import merkle
from ..digests import Digest, frontier_parts
from .inputs import Options
from .log import Conn
from .problems import (
    DIGEST_ALTERED,
    DIGEST_MISMATCH_EXTERNAL,
    DIGEST_MISSING,
    DIGEST_SIGNATURE_INVALID,
    MAX_GAP,
    Findings,
    Problem,
    show,
)


class DigestChecks:
    """The digests of one run: the Merkle ``frontier`` the scan extends (None: no tree to
    compare with), the digest chain's head (``last_digest``: seq, hash, signed) and each
    head on the way (``digest_chain``, for checkpoints), and the digests whose root
    differed from the log's (``root_mismatches``, judged at the end: an altered event
    before them explains them)."""

    def __init__(self, conn: Conn, options: Options, findings: Findings) -> None:
        self.conn = conn
        self.options = options
        self.findings = findings
        self.report = findings.report
        self.notes = findings.notes
        self.frontier: merkle.Frontier | None = None
        self.digests_checked = 0
        self.signatures_checked = 0
        self.digested_to: int | None = None
        self.last_digest: tuple[int, bytes, bool] | None = None  # seq, hash, signed
        #: (position, (seq, hash, signed)) of the digests checked, in seq order.
        self.digest_chain: list[tuple[int, tuple[int, bytes, bool]]] = []
        self.root_mismatches: list[tuple[Digest, str, bool]] = []

    def prepare(self, has_digests: bool, lo: int, hi: int) -> list[Digest]:
        """The digest rows in range (checked now against each other, their roots during
        the scan), and the Merkle frontier at ``lo``."""
        if not has_digests:
            self.notes.append("no digests table: the digests were not checked")
            self.frontier = None
            return []
        conn = self.conn
        rows = [Digest.from_row(r) for r in conn.execute(
            f"SELECT {Digest.COLUMNS} FROM digests WHERE position > %s AND position <= %s"
            " ORDER BY seq", (lo, hi))]
        before = conn.execute(f"SELECT {Digest.COLUMNS} FROM digests WHERE position <= %s"
                              " ORDER BY seq DESC LIMIT 1", (lo,)).fetchone()
        previous = Digest.from_row(before) if before else None
        if previous is not None:
            if self.last_digest is not None and (previous.seq != self.last_digest[0]
                                                 or previous.hash != self.last_digest[1]):
                self.report(Problem(
                    DIGEST_ALTERED, previous.position,
                    f"the last digest before position {lo} is digest {previous.seq} with "
                    f"hash {previous.hash.hex()}; when the checkpoint was written it was "
                    f"digest {self.last_digest[0]} with hash {self.last_digest[1].hex()}",
                    seq=previous.seq, field="hash"))
            self.last_digest = (previous.seq, previous.hash, previous.signature is not None)
        if self.last_digest is not None:
            self.digest_chain.append((lo, self.last_digest))
        for digest in rows:
            self._check_digest(digest, fresh=lo == 0)
        any_digest = rows or previous is not None or conn.execute(
            "SELECT 1 FROM digests LIMIT 1").fetchone() is not None
        if not any_digest and not self.options.published:
            self.frontier = None  # nothing to compare a root with: no tree to keep
            return rows
        if self.frontier is None:
            self.frontier = self._stored_frontier(lo)
        if self.frontier is None:
            self.notes.append(f"no stored Merkle tree reaches position {lo}: the roots of "
                              "the digests in range were not recomputed")
        return rows

    def _stored_frontier(self, lo: int) -> merkle.Frontier | None:
        """The frontier of the log's events up to ``lo`` from the stored tree (trusted:
        the run that verified up to there checked it)."""
        if lo == 0:
            return merkle.Frontier()
        conn = self.conn
        row = conn.execute("SELECT idx, position FROM merkle_leaves WHERE position <= %s"
                           " ORDER BY position DESC LIMIT 1", (lo,)).fetchone()
        if row is None:
            return None
        size = int(row[0]) + 1
        if conn.execute("SELECT 1 FROM ssot_events WHERE notification_id > %s AND"
                        " notification_id <= %s LIMIT 1", (row[1], lo)).fetchone():
            return None  # events after the last stored leaf: the tree does not reach lo
        parts = frontier_parts(size)
        nodes: list[bytes] = []
        for level, index in parts:
            found = conn.execute(
                "SELECT hash FROM merkle_leaves WHERE idx = %s", (index,)).fetchone() \
                if level == 0 else conn.execute(
                "SELECT hash FROM merkle_nodes WHERE level = %s AND idx = %s",
                (level, index)).fetchone()
            if found is None:
                return None
            nodes.append(bytes(found[0]))
        return merkle.Frontier(size=size, levels=[lv for lv, _ in parts], nodes=nodes)

    def _check_digest(self, digest: Digest, *, fresh: bool) -> None:
        """A digest row against itself, its predecessor and its signature."""
        self.digests_checked += 1
        if hashlib.sha256(digest.canonical()).digest() != digest.hash:
            self.report(Problem(
                DIGEST_ALTERED, digest.position,
                f"digest {digest.seq}'s content (seq, position, size, root, recorded_at, "
                "prev) does not hash to its stored hash: the row was changed",
                seq=digest.seq, field="content"))
        last = self.last_digest
        if last is not None:
            last_seq, last_hash, _signed = last
            if digest.seq > last_seq + 1:
                for seq in range(last_seq + 1, min(digest.seq, last_seq + 1 + MAX_GAP)):
                    self.report(Problem(
                        DIGEST_MISSING, digest.position,
                        f"digest {seq} is not in the digests table: digest {last_seq} is, "
                        f"then digest {digest.seq} (up to position {digest.position})",
                        seq=seq))
            elif digest.prev != last_hash:
                self.report(Problem(
                    DIGEST_ALTERED, digest.position,
                    f"digest {digest.seq} chains to hash "
                    f"{digest.prev.hex() if digest.prev else None}, but digest {last_seq}'s"
                    f" hash is {last_hash.hex()}: one of them was rewritten",
                    seq=digest.seq, field="prev"))
        elif digest.seq != 1 and fresh:
            for seq in range(1, min(digest.seq, 1 + MAX_GAP)):
                self.report(Problem(DIGEST_MISSING, digest.position,
                                    f"digest {seq} is not in the digests table (the first "
                                    f"one there is digest {digest.seq})", seq=seq))
        self._check_signature(digest, "digest", last[2] if last else False)
        self.last_digest = (digest.seq, digest.hash, digest.signature is not None)
        self.digest_chain.append((digest.position, self.last_digest))

    def _check_signature(self, digest: Digest, what: str, previous_signed: bool) -> None:
        keys = self.options.keys
        if digest.signature is None:
            if previous_signed:
                self.report(Problem(
                    DIGEST_SIGNATURE_INVALID, digest.position,
                    f"{what} {digest.seq} is unsigned although the digest before it was "
                    "signed", seq=digest.seq, field="signature"))
            return
        if not keys:
            note = ("signatures were not checked: no public key (give --public-key, or "
                    "configure SSOT_SIGNING_KEY_FILE)")
            if note not in self.notes:
                self.notes.append(note)
            return
        key = keys.get(digest.key_id or "")
        if key is None:
            self.report(Problem(
                DIGEST_SIGNATURE_INVALID, digest.position,
                f"{what} {digest.seq} is signed by key {digest.key_id!r}, which is not a "
                f"known key ({', '.join(sorted(keys))})", seq=digest.seq, field="key_id"))
            return
        self.signatures_checked += 1
        from cryptography.exceptions import InvalidSignature  # loaded with the keys

        try:
            key.verify(digest.signature, digest.canonical())
        except InvalidSignature:
            self.report(Problem(
                DIGEST_SIGNATURE_INVALID, digest.position,
                f"{what} {digest.seq}'s signature does not verify with key {digest.key_id}",
                seq=digest.seq, field="signature"))

    def checks_by_size(self, rows: list[Digest], lo: int, hi: int
                       ) -> dict[int, list[tuple[Digest, bool]]]:
        """Digest sizes at which the frontier's root is compared: (digest, published)."""
        checks: dict[int, list[tuple[Digest, bool]]] = {}
        if self.frontier is None:
            return checks
        for digest in rows:
            checks.setdefault(digest.size, []).append((digest, False))
        for digest in self.options.published:
            if lo < digest.position <= hi:
                checks.setdefault(digest.size, []).append((digest, True))
        return {s: c for s, c in checks.items() if s > self.frontier.size}

    def finish(self, rows: list[Digest], lo: int, hi: int, at_head: bool) -> None:
        conn = self.conn
        for digest, why, external in self.root_mismatches:
            if self.findings.event_problem_at_or_before(digest.position):
                continue  # an event before it explains the difference
            if external:
                self.report(Problem(
                    DIGEST_MISMATCH_EXTERNAL, digest.position,
                    f"{why}, but published digest {digest.seq} says root "
                    f"{digest.root.hex()}: the log and its stored tree were rewritten at or "
                    f"before position {digest.position}", seq=digest.seq, field="root"))
            else:
                self.report(Problem(
                    DIGEST_ALTERED, digest.position,
                    f"{why}, but digest {digest.seq} says root {digest.root.hex()} (the "
                    "stored leaves agree with the log): the digest was changed, or the log "
                    "and its stored leaves were rewritten together (compare with the "
                    "published digests: --digests)", seq=digest.seq, field="root"))
        by_seq = {d.seq: d for d in rows}
        published = [d for d in self.options.published if lo < d.position <= hi
                     or (at_head and d.position > hi)]
        wanted = [d.seq for d in published if d.seq not in by_seq]
        if wanted:
            by_seq.update((d.seq, d) for d in (Digest.from_row(r) for r in conn.execute(
                f"SELECT {Digest.COLUMNS} FROM digests WHERE seq = ANY(%s)", (wanted,))))
        for copy in published:
            if hashlib.sha256(copy.canonical()).digest() != copy.hash:
                self.report(Problem(
                    DIGEST_MISMATCH_EXTERNAL, copy.position,
                    f"published digest {copy.seq}'s content does not hash to its hash: the "
                    "copy is corrupt", seq=copy.seq, field="hash"))
            self._check_signature(copy, "published digest", False)
            row = by_seq.get(copy.seq)
            if row is None:
                beyond = (f"; it covers up to position {copy.position}, beyond the log's "
                          f"head {hi}") if copy.position > hi else ""
                self.report(Problem(
                    DIGEST_MISSING, copy.position,
                    f"digest {copy.seq} (up to position {copy.position}) was published but "
                    f"is not in the digests table{beyond}", seq=copy.seq))
                continue
            differing = [name for name in ("position", "size", "root", "recorded_at",
                                           "prev", "hash", "signature", "key_id")
                         if getattr(row, name) != getattr(copy, name)]
            if differing:
                self.report(Problem(
                    DIGEST_MISMATCH_EXTERNAL, min(row.position, copy.position),
                    f"digest {copy.seq} differs from its published copy in "
                    f"{', '.join(differing)}: the table says "
                    + ", ".join(f"{n}={show(getattr(row, n))}" for n in differing)
                    + "; published: "
                    + ", ".join(f"{n}={show(getattr(copy, n))}" for n in differing),
                    seq=copy.seq, field=differing[0]))
        if rows:
            self.digested_to = max(d.position for d in rows)
        if not at_head:
            return
        last = conn.execute(f"SELECT {Digest.COLUMNS} FROM digests ORDER BY seq DESC"
                            " LIMIT 1").fetchone() if self.frontier is not None or rows \
            else None
        leaf = conn.execute("SELECT idx, position FROM merkle_leaves ORDER BY idx DESC"
                            " LIMIT 1").fetchone() if last is not None or rows or \
            self.frontier is not None else None
        last_size = int(last[2]) if last else 0
        if leaf is not None and int(leaf[0]) + 1 > last_size:
            self.report(Problem(
                DIGEST_MISSING, int(leaf[1]),
                f"the stored Merkle leaves reach position {leaf[1]} ({int(leaf[0]) + 1} "
                f"events), but the last digest covers {last_size}: the digests after "
                f"digest {last[0] if last else 0} are gone",
                seq=(int(last[0]) + 1) if last else 1))
        covered = int(last[1]) if last else 0
        if covered < hi and (last is not None or self.options.published):
            self.notes.append(f"no digest covers the positions after {covered} yet: only "
                              "the hash chains and the copies vouch for them")
        elif last is None and not self.options.published and hi > 0:
            self.notes.append("there are no digests: only the hash chains and the copies "
                              "vouch for the log")
        published_last = max((d.seq for d in self.options.published), default=0)
        if last is not None and published_last and published_last < int(last[0]):
            self.notes.append(f"the published digests end at digest {published_last}, "
                              f"the table at {last[0]}")

    def has_leaves(self, lo: int, hi: int) -> bool:
        return self.frontier is not None and self.conn.execute(
            "SELECT 1 FROM merkle_leaves WHERE position > %s AND position <= %s LIMIT 1",
            (lo, hi)).fetchone() is not None

    def max_leaf_position(self, lo: int, hi: int) -> int:
        row = self.conn.execute(
            "SELECT max(position) FROM merkle_leaves WHERE position > %s AND position <= %s",
            (lo, hi)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def stored_leaves(self, lo: int, hi: int) -> Iterator[tuple[int, int, bytes]]:
        """The stored leaves in range, in position order (a server-side cursor beside the
        events'); a gap in their ordinals (a deleted leaf row) is reported as an altered
        digest tree."""
        expected: int | None = None
        with self.conn.cursor("ssot_verify_leaves", binary=True) as cur:
            cur.execute("SELECT idx, position, hash FROM merkle_leaves WHERE position > %s"
                        " AND position <= %s ORDER BY position", (lo, hi))
            while rows := cur.fetchmany(20_000):
                for idx, position, leaf in rows:
                    if expected is not None and idx != expected:
                        self.report(Problem(
                            DIGEST_ALTERED, int(position),
                            f"the stored Merkle leaf at position {position} has ordinal "
                            f"{idx}, the one before it {expected - 1}: leaf rows were "
                            "removed or renumbered", field="merkle_leaves"))
                    expected = int(idx) + 1
                    yield int(idx), int(position), bytes(leaf)

    def check_roots(self, checks: list[tuple[Digest, bool]], root: bytes,
                    position: int) -> None:
        for digest, published in checks:
            if root != digest.root or position != digest.position:
                self.root_mismatches.append((
                    digest, f"the log's first {digest.size} events (up to position "
                    f"{position}) give the root {root.hex()}", published))

    def head_at(self, position: int) -> tuple[int, bytes, bool] | None:
        """The digest chain's head as it was at ``position`` (seq, hash, signed)."""
        digests_so_far = [d for at, d in self.digest_chain if at <= position]
        return (digests_so_far[-1] if digests_so_far
                else self.last_digest if not self.digest_chain else None)
