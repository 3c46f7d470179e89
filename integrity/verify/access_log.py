"""The access log's chain checked (``ledger/access_chain.py``): each row's hash recomputed
from its seq, commit time, record and ``prev_hash``; seq 1, 2, 3… without a gap; each
``prev_hash`` the previous row's hash. Each problem is reported at the row's ``seq``:

- a row whose content does not hash to its ``hash``: ``access_record_altered``;
- a gap in seq (rows deleted; the first row not seq 1): ``access_record_missing`` at the
  first missing seq;
- a link that does not hold between rows that each hash right: when the row after the
  next one links to the next one, the row before the link was rewritten with its hash
  recomputed (``access_record_altered`` there); when neither of a row's links holds, the
  row is one the appender did not write (``access_record_inserted``); at the last row, or
  the first, which link is false cannot be told (``access_chain_broken``).

Rows deleted from the end of the log leave a shorter chain that verifies: the append-only
trigger stands against that, and an export holds the rows it was made with.
"""

from __future__ import annotations

from typing import Any

from nexus_ssot.ledger import access_chain

from .log import Conn
from .problems import (
    ACCESS_CHAIN_BROKEN,
    ACCESS_RECORD_ALTERED,
    ACCESS_RECORD_INSERTED,
    ACCESS_RECORD_MISSING,
    Findings,
    Problem,
    show,
)

_ROWS_SQL = (f"SELECT seq, {access_chain.RECORDED_AT_SQL}, record, prev_hash, hash"
             " FROM access_log ORDER BY seq")


class AccessLogChecks:
    """The access log of one run's snapshot; ``rows`` is how many were checked."""

    def __init__(self, conn: Conn, findings: Findings, fetch_size: int = 5_000) -> None:
        self.conn = conn
        self.findings = findings
        self.fetch_size = fetch_size
        self.rows = 0

    def check(self) -> int | None:
        """Check every row; the rows checked, or None when there is no access log."""
        found = self.conn.execute("SELECT to_regclass('access_log') IS NOT NULL").fetchone()
        if not (found and found[0]):
            self.findings.notes.append("no access_log table: the access log was not checked")
            return None
        report = self.findings.report
        altered: set[int] = set()
        breaks: dict[int, tuple[str | None, str | None]] = {}
        last_seq, last_hash = 0, None
        with self.conn.cursor("ssot_verify_access_log") as cur:
            cur.itersize = self.fetch_size
            cur.execute(_ROWS_SQL)
            for seq, recorded_at, text, prev_hash, own in cur:
                self.rows += 1
                seq = int(seq)
                recomputed = access_chain.stored_row_hash(seq, recorded_at, text, prev_hash)
                if recomputed != own:
                    altered.add(seq)
                    report(Problem(
                        ACCESS_RECORD_ALTERED, None,
                        f"access record {seq} hashes to {show(recomputed)}, not to its "
                        f"stored hash {show(own)}" if recomputed is not None else
                        f"access record {seq}: its record is not JSON", seq=seq))
                if seq != last_seq + 1:
                    gone = f"{last_seq + 1}" if seq == last_seq + 2 \
                        else f"{last_seq + 1} to {seq - 1}"
                    report(Problem(ACCESS_RECORD_MISSING, None,
                                   f"access records {gone} are gone: seq {seq} follows "
                                   f"seq {last_seq}" if last_seq else
                                   f"access records {gone} are gone: the log starts at "
                                   f"seq {seq}", seq=last_seq + 1))
                elif prev_hash != last_hash:
                    breaks[seq] = (prev_hash, last_hash)
                last_seq, last_hash = seq, own
        self._judge(breaks, altered, last_seq)
        return self.rows

    def _judge(self, breaks: dict[int, tuple[Any, Any]], altered: set[int],
               last_seq: int) -> None:
        """Which row each broken link (at the row whose ``prev_hash`` it is) points to."""
        report = self.findings.report
        explained: set[int] = set()
        for seq in sorted(breaks):
            if seq in explained or seq in altered or seq - 1 in altered:
                continue  # a row whose content changed explains its links
            linked, previous = breaks[seq]
            if seq + 1 in breaks:
                explained.add(seq + 1)
                report(Problem(
                    ACCESS_RECORD_INSERTED, None,
                    f"access record {seq} chains with neither neighbour: its prev_hash "
                    f"{show(linked)} is not record {seq - 1}'s hash {show(previous)}, and "
                    f"record {seq + 1} links to {show(breaks[seq + 1][0])}, not to it",
                    seq=seq))
            elif seq == last_seq or seq == 1:
                report(Problem(
                    ACCESS_CHAIN_BROKEN, None,
                    f"access record {seq}'s prev_hash is {show(linked)}, not "
                    + (f"record {seq - 1}'s hash {show(previous)}" if seq > 1 else "null"),
                    seq=seq))
            else:
                report(Problem(
                    ACCESS_RECORD_ALTERED, None,
                    f"access record {seq - 1} was rewritten with its hash recomputed: "
                    f"its hash is {show(previous)}, and record {seq} links to "
                    f"{show(linked)}", seq=seq - 1))
