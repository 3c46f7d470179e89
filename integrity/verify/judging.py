"""The positions some check doubted (a copy that differs, a Merkle leaf that is not the
log's, a leaf without its event), judged one by one at the end of a run with all the
evidence — the event, its history copy, its stored leaf — into the problem that
explains each: an event missing, inserted, altered (and which field), or two events
reordered."""

from __future__ import annotations

from nexus_ssot.ledger.addressing import stream_id

from .log import (
    Conn,
    Event,
    differences,
    event_at,
    event_leaf,
    history_at,
    history_of,
    position_of,
)
from .problems import (
    EVENT_ALTERED,
    EVENT_INSERTED,
    EVENT_KINDS,
    EVENT_MISSING,
    EVENTS_REORDERED,
    Findings,
    Problem,
)

#: Doubted positions judged one by one at the end (the first ones in log order), and
#: of those whose Merkle leaf alone differs, how many are paired up (reordered events).
MAX_JUDGED = 20_000
MAX_PAIRED = 500


class Judge:
    """Judges the ``findings``' suspects: each doubted position once, none that a
    problem of an event already explains."""

    def __init__(self, conn: Conn, findings: Findings) -> None:
        self.conn = conn
        self.findings = findings
        self.report = findings.report
        self.notes = findings.notes

    def classify(self) -> None:
        """Judge every position some check doubted, with all the evidence."""
        explained = {p.position for p in self.findings.problems.values()
                     if p.kind in EVENT_KINDS}
        leaf_only: list[Event] = []
        doubted = sorted(self.findings.suspects - explained)
        if len(doubted) > MAX_JUDGED:
            self.notes.append(f"{len(doubted):,} positions were doubted; the first "
                              f"{MAX_JUDGED:,} (to position {doubted[MAX_JUDGED - 1]}) were "
                              "judged")
            doubted = doubted[:MAX_JUDGED]
        for position in doubted:
            if self._judge(position):
                event = event_at(self.conn, position)
                if event is not None:
                    leaf_only.append(event)
        # Leaves that differ with nothing else wrong: two events exchanged, or a commit
        # time (or position) rewritten everywhere but in the digests.
        paired: set[int] = set()
        for i, a in enumerate(leaf_only):
            if a.position in paired:
                continue
            want = self._stored_leaf(a.position)
            partner = None
            if i < MAX_PAIRED:
                partner = next((b for b in leaf_only[:MAX_PAIRED]
                                if b is not a and b.position not in paired and want in (
                                    event_leaf(a.position, b.recorded_at, b.stored_hash),
                                    event_leaf(a.position, a.recorded_at, b.stored_hash))), None)
            if partner is not None:
                paired.update((a.position, partner.position))
                self.report(Problem(
                    EVENTS_REORDERED, a.position,
                    f"the event digested at position {a.position} is the one now at "
                    f"position {partner.position} ({partner.namespace}/{partner.key} "
                    f"version {partner.version})", namespace=a.namespace, key=a.key,
                    version=a.version, other_position=partner.position))
                continue
            self.report(Problem(
                EVENT_ALTERED, a.position,
                "its Merkle leaf is not the digested one although its content hashes "
                f"right: its commit time ({a.recorded_at}) or position was changed, and the "
                "history copy with it", namespace=a.namespace, key=a.key, version=a.version,
                field="recorded_at"))

    def _stored_leaf(self, position: int) -> bytes | None:
        row = self.conn.execute("SELECT hash FROM merkle_leaves WHERE position = %s",
                                (position,)).fetchone()
        return None if row is None else bytes(row[0])

    def _covered(self, position: int) -> bool:
        return self.conn.execute("SELECT 1 FROM merkle_leaves WHERE position >= %s LIMIT 1",
                                 (position,)).fetchone() is not None

    def _judge(self, position: int) -> bool:
        """Classify one doubted position; True when only its Merkle leaf differs."""
        event = event_at(self.conn, position)
        history = history_at(self.conn, position)
        leaf = self._stored_leaf(position)
        if event is None:
            if history is not None:
                moved = position_of(self.conn,
                                    str(stream_id(history.namespace, history.key)),
                                    history.version)
                if moved is not None and moved != position:
                    self.report(Problem(
                        EVENTS_REORDERED, position,
                        f"the history records {history.namespace}/{history.key} version "
                        f"{history.version} at position {position}; the log has it at "
                        f"position {moved}", namespace=history.namespace, key=history.key,
                        version=history.version, other_position=moved))
                else:
                    self.report(Problem(
                        EVENT_MISSING, position,
                        f"the log has no event at position {position}; its history copy "
                        f"records {history.event_type} of {history.namespace}/{history.key} "
                        f"version {history.version} there", namespace=history.namespace,
                        key=history.key, version=history.version))
            elif leaf is not None:
                self.report(Problem(
                    EVENT_MISSING, position,
                    f"the log has no event at position {position}, which the digests cover "
                    "(its history copy is gone too)"))
            return False
        if event.decoded is None:
            return False  # the scan reported it altered
        if leaf is not None and leaf == event.leaf():
            return False  # the digested event: only a copy drifted (ssot check says which)
        namespace, key, version = event.namespace, event.key, event.version
        same_event = history is not None and (history.namespace, history.key,
                                              history.version) == (namespace, key, version)
        if history is None or not same_event:
            elsewhere = history_of(self.conn, namespace, key, version) \
                if namespace is not None and key is not None else None
            if elsewhere is not None and elsewhere.position != position:
                self.report(Problem(
                    EVENTS_REORDERED, position,
                    f"position {position} holds {namespace}/{key} version {version}, which "
                    f"the history records at position {elsewhere.position}"
                    + (f" (it has {history.namespace}/{history.key} version "
                       f"{history.version} here)" if history else ""),
                    namespace=namespace, key=key, version=version,
                    other_position=elsewhere.position))
            else:
                why = ("it has no history copy: the ledger's writer did not write it (or "
                       "its history row was deleted)") if history is None else (
                    f"the history records {history.namespace}/{history.key} version "
                    f"{history.version} at this position, and this event nowhere")
                if leaf is None and self._covered(position):
                    why += "; the digests cover its position but hold no leaf for it"
                self.report(Problem(EVENT_INSERTED, position, why, namespace=namespace,
                                    key=key, version=version))
            return False
        assert history is not None
        if history.recorded_at != event.recorded_at:
            self.report(Problem(
                EVENT_ALTERED, position,
                f"its commit time is {event.recorded_at}, its history copy's "
                f"{history.recorded_at}" + ("; its Merkle leaf is not the digested one"
                                            if leaf is not None else ""),
                namespace=namespace, key=key, version=version, field="recorded_at"))
            return False
        if history.members["hash"] != event.stored_hash:
            fields = [f for f in differences(event, history) if f != "hash"]
            self.report(Problem(
                EVENT_ALTERED, position,
                "it was rewritten with a recomputed hash: its "
                f"{', '.join(fields) or 'hash'} differ(s) from the history copy",
                namespace=namespace, key=key, version=version,
                field=fields[0] if fields else "hash"))
            return False
        if leaf is None:
            if self._covered(position):
                self.report(Problem(
                    EVENT_INSERTED, position,
                    "the digests cover its position but hold no leaf for it: it was "
                    "inserted after they were made (with a forged history copy)",
                    namespace=namespace, key=key, version=version))
            return False
        return True
