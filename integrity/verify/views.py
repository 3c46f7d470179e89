"""The log's copies, checked against it: ``entry_history`` (one row per event, at the same
position) and ``entries`` (each entry's last event). Their differences are found in SQL,
on a second connection in the scan's snapshot while the scan runs, and become positions
to judge; an entry's current hash is checked against its stream's last event's."""

from __future__ import annotations

import threading
from typing import Any

from .log import Conn, Heads, differences, event_at, history_at, snapshot_connection
from .problems import (
    EVENT_ALTERED,
    EVENT_INSERTED,
    EVENT_MISSING,
    MAX_KEPT,
    Findings,
    Problem,
    show,
)

_HISTORY_DIFF_SQL = """
SELECT coalesce(ev.notification_id, h.position) AS position,
       ev.notification_id IS NOT NULL, h.position IS NOT NULL
FROM (SELECT notification_id, recorded_at, originator_version FROM ssot_events
      WHERE notification_id > %(lo)s AND notification_id <= %(hi)s) ev
FULL JOIN (SELECT position, recorded_at, version FROM entry_history
      WHERE position > %(lo)s AND position <= %(hi)s) h ON h.position = ev.notification_id
WHERE ev.notification_id IS NULL OR h.position IS NULL
   OR h.recorded_at <> ev.recorded_at OR h.version <> ev.originator_version
ORDER BY 1 LIMIT %(limit)s"""

_ENTRIES_DIFF_SQL = """
SELECT e.namespace, e.key, e.version, e.position, ev.originator_version,
       (SELECT min(x.notification_id) FROM ssot_events x WHERE x.originator_id =
        ev.originator_id AND x.originator_version > e.version)
FROM entries e LEFT JOIN ssot_events ev ON ev.notification_id = e.position
WHERE e.position > %(lo)s AND (%(ns)s::text IS NULL OR e.namespace = %(ns)s)
  AND (ev.notification_id IS NULL OR ev.originator_version <> e.version
       OR EXISTS (SELECT 1 FROM ssot_events x WHERE x.originator_id = ev.originator_id
                  AND x.originator_version > e.version))
ORDER BY e.position LIMIT %(limit)s"""


class CopyComparison(threading.Thread):
    """The copies compared with the log in SQL, on a second connection in the scan's
    snapshot, while the scan runs."""

    def __init__(self, database_url: str, snapshot: str, lo: int, hi: int,
                 namespace: str | None, entries: bool) -> None:
        super().__init__(name="ssot-verify-copies", daemon=True)
        self.args = (database_url, snapshot, lo, hi, namespace, entries)
        self.history: list[tuple[int, bool, bool]] = []
        self.entries: list[tuple[Any, ...]] = []
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        database_url, snapshot, lo, hi, namespace, entries = self.args
        try:
            with snapshot_connection(database_url) as conn:
                conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                conn.execute("SET LOCAL jit = off")
                self.history = [(int(p), bool(e), bool(h)) for p, e, h in conn.execute(
                    _HISTORY_DIFF_SQL, {"lo": lo, "hi": hi, "limit": MAX_KEPT * 10})]
                if entries:
                    self.entries = conn.execute(_ENTRIES_DIFF_SQL, {
                        "lo": lo, "ns": namespace, "limit": MAX_KEPT * 10}).fetchall()
                conn.rollback()
        except BaseException as e:  # handed to the verifier, which raises it
            self.error = e
        finally:
            self.finished.set()


class ViewChecks:
    """The copies of one run: their comparison with the log (``comparison``, a thread of
    its own) over the positions after ``copies_from``."""

    def __init__(self, conn: Conn, findings: Findings, namespace: str | None) -> None:
        self.conn = conn
        self.findings = findings
        self.report = findings.report
        self.namespace = namespace
        self.comparison: CopyComparison | None = None
        self.copies_from = 0

    def compare(self, database_url: str, snapshot: str, hi: int, entries: bool) -> None:
        """Start comparing the copies with the log up to ``hi`` in ``snapshot`` (the current
        states too when ``entries``: only a run to the head can)."""
        self.comparison = CopyComparison(database_url, snapshot, self.copies_from, hi,
                                         self.namespace, entries)
        self.comparison.start()

    def join(self) -> None:
        if self.comparison is not None:
            self.comparison.join()

    def checkpoint_at(self, position: int) -> int:
        """Where a run resumed at ``position`` compares the copies from: the differences
        found so far are folded into the suspects when their comparison has finished."""
        copies_from = self.copies_from
        comparison = self.comparison
        if comparison is not None and comparison.finished.is_set() and comparison.error is None:
            self.fold_differences(position)
            copies_from = max(copies_from, position)
        return copies_from

    def fold_differences(self, upto: int) -> None:
        """Fold the copies' differences (up to ``upto``) into the suspects, once."""
        comparison = self.comparison
        if comparison is None or not comparison.finished.is_set():
            return
        if comparison.error is not None:
            raise comparison.error
        for position, _in_log, _in_history in comparison.history:
            if position <= upto:
                self.findings.suspects.add(position)
        comparison.history = [h for h in comparison.history if h[0] > upto]
        keep = []
        for row in comparison.entries:
            namespace, key, version, position, log_version, later = row
            position = int(position)
            if position > upto:
                keep.append(row)
                continue
            if log_version is None or int(log_version) != int(version):
                self.findings.suspects.add(position)
                if log_version is None and history_at(self.conn, position) is None:
                    self.report(Problem(
                        EVENT_MISSING, position,
                        f"the current state of {namespace}/{key} is version {version} at "
                        f"position {position}; the log has no event there (and the history "
                        "copy is gone too)", namespace=namespace, key=key,
                        version=int(version)))
            if later is not None:
                event = event_at(self.conn, int(later))
                self.report(Problem(
                    EVENT_INSERTED, int(later),
                    f"the current state of {namespace}/{key} is version {version}, but the "
                    f"log has version {event.version if event else '?'} at position "
                    f"{later}: the ledger's writer never made it current",
                    namespace=namespace, key=key,
                    version=event.version if event else None))
        comparison.entries = keep

    def entries_hashes(self, lo: int, heads: Heads) -> None:
        """Each entry's current hash is its stream's last event's: a last event rewritten
        with a recomputed hash (and not digested yet) shows only here."""
        known = {h for _v, h in heads.values() if isinstance(h, str)}
        only = self.namespace
        odd = [row for row in self.conn.execute(
            "SELECT hash, namespace, key, version, position FROM entries WHERE position > %s"
            " AND (%s::text IS NULL OR namespace = %s) AND hash IS NOT NULL",
            (lo, only, only)) if row[0] not in known]
        for copy_hash, namespace, key, version, position in odd[:MAX_KEPT]:
            event = event_at(self.conn, int(position))
            if event is None or event.version != version or event.namespace != namespace \
                    or event.key != key or event.stored_hash == copy_hash:
                continue  # the comparison of positions reports it (or a later version)
            fields = [f for f in differences(event, history_at(self.conn, int(position)))
                      if f != "hash"]
            self.report(Problem(
                EVENT_ALTERED, int(position),
                f"it was rewritten with a recomputed hash: the current state's copy has hash"
                f" {copy_hash}, the log's event {show(event.stored_hash)}"
                + (f"; its {', '.join(fields)} differ(s) from the history copy"
                   if fields else ""),
                namespace=namespace, key=key, version=int(version),
                field=fields[0] if fields else "hash"))

