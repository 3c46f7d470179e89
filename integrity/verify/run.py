"""A verification run: one REPEATABLE READ snapshot, the range of positions to verify, and
one scan of the log's events in position order, in which each check's step for an event
is inlined for speed (the event's hash through orjson's fast path, its Merkle leaf folded
into the frontier and compared with the stored one, its stream's chain followed); each
check then judges what it gathered, and the findings become the report."""

from __future__ import annotations

import hashlib
import time

from nexus_ssot.ledger.errors import InvalidInput
from nexus_ssot.ledger.events import TYPE_OF_TOPIC

from .. import merkle
from ..digests import Digest
from .access_log import AccessLogChecks
from .chains import StreamChecks
from .checkpoint import Checkpoint
from .digests import DigestChecks
from .inputs import Options
from .judging import Judge
from .log import Batches, Conn, Event, event_leaf, fast_hash, snapshot_connection
from .problems import MAX_GAP, Findings, Progress, Report
from .views import ViewChecks


class Verifier:
    """One verification run over one snapshot (see ``nexus_ssot.integrity.verify``)."""

    conn: Conn
    database: str
    streams: StreamChecks
    digests: DigestChecks
    views: ViewChecks
    judge: Judge

    def __init__(self, database_url: str, options: Options,
                 progress: Progress | None = None) -> None:
        options.check()
        self.url = database_url
        self.options = options
        self.progress = progress
        self.findings = Findings(options.namespace)
        self.previous_events = 0

    def run(self) -> Report:
        started = time.perf_counter()
        opts = self.options
        with snapshot_connection(self.url) as conn:
            self.conn = conn
            self.streams = StreamChecks(conn, self.findings)
            self.digests = DigestChecks(conn, opts, self.findings)
            self.views = ViewChecks(conn, self.findings, opts.namespace)
            self.judge = Judge(conn, self.findings)
            conn.execute("SET LOCAL jit = off")
            row = conn.execute(
                "SELECT (SELECT coalesce(max(notification_id), 0) FROM ssot_events),"
                " current_database(),"
                " (SELECT oid::text FROM pg_database WHERE datname = current_database()),"
                " to_regclass('digests') IS NOT NULL, pg_export_snapshot()").fetchone()
            assert row is not None
            head, dbname, oid, has_digests, snapshot = row
            head = int(head)
            self.database = f"{dbname}/{oid}"
            # the last events may be gone: scan up to the furthest position any copy or
            # the digests know of
            known = conn.execute(
                "SELECT greatest(%s, (SELECT max(position) FROM entry_history)"
                + (", (SELECT max(position) FROM merkle_leaves),"
                   " (SELECT max(position) FROM digests)" if has_digests else "")
                + ")", (head,)).fetchone()
            end = int(known[0]) if known and known[0] is not None else head
            checkpoint = self._resume()
            lo = opts.from_position or 0
            resumed = None
            if checkpoint is not None:
                lo = checkpoint.position
                resumed = lo
            elif opts.from_position:
                resumed = lo
            self.views.copies_from = checkpoint.copies_from if checkpoint is not None else lo
            hi = end if opts.to_position is None else min(opts.to_position, end)
            hi = max(hi, lo)
            total = self._count(lo, hi)
            next_from = None
            if opts.max_events is not None and total > opts.max_events:
                if opts.to_position is not None:
                    raise InvalidInput(
                        f"positions {lo}..{hi} hold {total} events; at most "
                        f"{opts.max_events} are verified per call: give a to_position "
                        "closer to from_position", code="range_too_large",
                        field="to_position")
                cut = conn.execute(
                    "SELECT notification_id FROM ssot_events WHERE notification_id > %s"
                    " ORDER BY notification_id OFFSET %s LIMIT 1",
                    (lo, opts.max_events - 1)).fetchone()
                assert cut is not None
                hi, total, next_from = int(cut[0]), opts.max_events, int(cut[0])
            at_head = hi == end
            self.views.compare(self.url, snapshot, hi, at_head)
            try:
                digest_rows = self.digests.prepare(bool(has_digests), lo, hi)
                events = self._scan(lo, hi, total, digest_rows)
                self.views.join()
                self.views.fold_differences(hi)
                self.streams.finish()
                self.judge.classify()
                if at_head:
                    self.views.entries_hashes(lo, self.streams.heads)
                self.digests.finish(digest_rows, lo, hi, at_head)
                # the access log is its own chain, not in positions: checked by the run
                # that reaches the head (the last of a walk over ranges)
                access_rows = AccessLogChecks(self.conn, self.findings, opts.fetch_size
                                              ).check() if at_head else None
            finally:
                self.views.join()
            conn.rollback()
        if opts.checkpoint is not None:
            self._checkpoint(hi, events).save(opts.checkpoint)
        problems = self.findings.in_order()
        return Report(
            ok=not problems, first=problems[0] if problems else None, problems=problems,
            problem_count=len(problems) + self.findings.dropped, from_position=lo, to_position=hi,
            head=head, events=events, events_total=self.previous_events + events,
            streams=len(self.streams.heads), digests_checked=self.digests.digests_checked,
            digested_to=self.digests.digested_to, external_digests=len(opts.published),
            signatures_checked=self.digests.signatures_checked, notes=self.findings.notes,
            seconds=time.perf_counter() - started, next_from_position=next_from,
            resumed_from=resumed, access_records=access_rows)

    def _count(self, lo: int, hi: int) -> int:
        row = self.conn.execute("SELECT count(*) FROM ssot_events WHERE notification_id > %s"
                                " AND notification_id <= %s", (lo, hi)).fetchone()
        return int(row[0]) if row else 0

    def _resume(self) -> Checkpoint | None:
        """The checkpoint to resume from, if any, its state taken over by the checks."""
        checkpoint = Checkpoint.resume(self.options.checkpoint, self.database,
                                       self.options.namespace, self.options.from_position)
        if checkpoint is None:
            return None
        findings, streams, digests = self.findings, self.streams, self.digests
        for problem in checkpoint.problems:
            findings.report(problem)
        findings.dropped += max(0, checkpoint.problem_count - len(checkpoint.problems))
        streams.gaps = {s: dict(g) for s, g in checkpoint.gaps.items()}
        findings.suspects = set(checkpoint.suspects)
        streams.chain_suspects = dict(checkpoint.chain_suspects)
        digests.root_mismatches = list(checkpoint.root_mismatches)
        self.previous_events = checkpoint.events
        if checkpoint.digest_seq is not None and checkpoint.digest_hash is not None:
            digests.last_digest = (checkpoint.digest_seq, checkpoint.digest_hash,
                                   checkpoint.digest_signed)
        digests.frontier = checkpoint.frontier
        return checkpoint

    def _checkpoint(self, position: int, events: int) -> Checkpoint:
        """What a run resumed at ``position`` needs; the copies' differences found so far
        are folded into the suspects when their comparison has finished."""
        copies_from = self.views.checkpoint_at(position)
        problems = self.findings.in_order()
        last_digest = self.digests.head_at(position)
        frontier = self.digests.frontier
        return Checkpoint(
            database=self.database, namespace=self.options.namespace, position=position,
            events=self.previous_events + events,
            frontier=None if frontier is None else merkle.Frontier(
                frontier.size, list(frontier.levels), list(frontier.nodes)),
            digest_seq=last_digest[0] if last_digest else None,
            digest_hash=last_digest[1] if last_digest else None,
            digest_signed=last_digest[2] if last_digest else False,
            gaps={s: dict(g) for s, g in self.streams.gaps.items()}, problems=problems,
            problem_count=len(problems) + self.findings.dropped,
            suspects=sorted(p for p in self.findings.suspects if p <= position),
            chain_suspects={p: v for p, v in self.streams.chain_suspects.items()
                            if p <= position},
            copies_from=copies_from,
            root_mismatches=[m for m in self.digests.root_mismatches
                             if m[0].position <= position])

    def _scan(self, lo: int, hi: int, total: int, digest_rows: list[Digest]) -> int:
        opts = self.options
        only = opts.namespace
        streams, digests = self.streams, self.digests
        heads, gaps = streams.heads, streams.gaps
        suspects = self.findings.suspects
        frontier = digests.frontier
        checks = digests.checks_by_size(digest_rows, lo, hi)
        next_check = min(checks) if checks else None
        compare = digests.has_leaves(lo, hi)
        leaves = frontier is not None or compare
        stored_leaves = digests.stored_leaves(lo, hi) if compare else iter(())
        stored = next(stored_leaves, None)
        covered = digests.max_leaf_position(lo, hi) if compare else 0
        sha256, types, fast = hashlib.sha256, TYPE_OF_TOPIC, fast_hash
        tree = frontier if frontier is not None else merkle.Frontier()
        levels, nodes, size = tree.levels, tree.nodes, tree.size
        done = since_checkpoint = 0
        batches = Batches(self.conn, lo, hi, opts.fetch_size, lo if lo > 0 else None)
        position = lo
        try:
            for rows, previous in batches:
                for sid, last in previous.items():
                    heads.setdefault(sid, last)
                for position, stream, version, topic, state, rec, seal in rows:
                    quick = fast(state, stream, version, types.get(topic, topic), seal)
                    if quick is not None and quick[0] == quick[1]:
                        stored_hash = quick[1]
                        namespace = quick[2]["namespace"]
                        prev_hash = quick[2]["prev_hash"]
                        intact = True
                    else:
                        event = Event(position, stream, version, topic, state, rec, seal)
                        stored_hash = event.stored_hash
                        namespace = event.namespace
                        prev_hash = event.get("prev_hash")
                        intact = (only is None or namespace == only) \
                            and streams.examine_hash(event)
                    if leaves:
                        if intact:
                            leaf = sha256(
                                b"\x00" + f'{{"hash":"{stored_hash}","position":{position},'
                                f'"recorded_at":"{rec}"}}'.encode()).digest()
                        else:
                            leaf = event_leaf(position, rec, stored_hash)
                        if compare:
                            while stored is not None and stored[1] < position:
                                suspects.add(stored[1])  # a leaf without its event
                                stored = next(stored_leaves, None)
                            if stored is not None and stored[1] == position:
                                if stored[2] != leaf:
                                    suspects.add(position)  # another leaf
                                stored = next(stored_leaves, None)
                            elif position <= covered:
                                suspects.add(position)  # digested, but no leaf
                        # merkle.Frontier.add, inlined
                        level, node = 0, leaf
                        while levels and levels[-1] == level:
                            node = sha256(b"\x01" + nodes.pop() + node).digest()
                            levels.pop()
                            level += 1
                        levels.append(level)
                        nodes.append(node)
                        size += 1
                        if size == next_check:
                            tree.size = size
                            digests.check_roots(checks.pop(size), tree.root(), position)
                            next_check = min(checks) if checks else None
                    if only is not None and namespace != only:
                        continue
                    # the stream's chain
                    head = heads.get(stream)
                    if head is None:
                        expected, link = 1, None
                    else:
                        expected, link = head[0] + 1, head[1]
                    if version == expected:
                        if prev_hash != link and intact:
                            streams.chain_suspects[position] = (stream, version)
                        heads[stream] = (version, stored_hash)
                    elif version > expected:
                        pending = gaps.setdefault(stream, {})
                        for missing in range(expected, min(version, expected + MAX_GAP)):
                            pending.setdefault(missing, position)
                        heads[stream] = (version, stored_hash)
                    else:
                        streams.version_behind(stream, version, position, expected - 1,
                                               namespace)
                done += len(rows)
                since_checkpoint += len(rows)
                tree.size = size
                if self.progress is not None:
                    self.progress(done, total, position)
                if opts.checkpoint is not None and since_checkpoint >= opts.checkpoint_every:
                    self._checkpoint(position, done).save(opts.checkpoint)
                    since_checkpoint = 0
        finally:
            batches.close()
        tree.size = size
        while stored is not None:
            suspects.add(stored[1])
            stored = next(stored_leaves, None)
        for digest, _published in (c for pending in checks.values() for c in pending):
            digests.root_mismatches.append((
                digest, f"the log has only {size} events up to position {hi}, fewer than "
                f"the {digest.size} that digest {digest.seq} covers", _published))
        return done


def verify(database_url: str, options: Options = Options(),
           progress: Progress | None = None) -> Report:
    """Verify the log of ``database_url`` (see ``nexus_ssot.integrity.verify``)."""
    return Verifier(database_url, options, progress).run()
