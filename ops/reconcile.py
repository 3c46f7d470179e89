"""``ssot reconcile``: prove the NATS stream equal to the log over a position range, and
publish what its tail is missing.

It compares the count and a SHA-256 over the ``(position, event id)`` pairs of both
sides, then names what differs: events the stream lacks, messages it holds twice, and
messages that are not in the log. Missing events after the stream's last one are
republished in order (``--repair``), with the same ``Nats-Msg-Id`` and
``Nats-Expected-Last-Sequence`` guards as the broadcaster, so a running broadcaster and a
reconciler never store an event twice or out of order. A gap *inside* the stream cannot
be filled in order: it is reported, and the remedy is to recreate the stream (the
broadcaster then publishes it again from the log).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import nats
import psycopg
from psycopg.rows import dict_row
from rich.progress import Progress

from nexus_ssot.ledger.broadcaster import message_headers
from nexus_ssot.ledger.cloudevents import COLUMNS, SOURCE, cloudevent
from nexus_ssot.ledger.jetstream import nats_servers
from nexus_ssot.ledger.subjects import entry_subject


@dataclass
class Report:
    from_position: int
    to_position: int
    log_count: int = 0
    stream_count: int = 0
    log_hash: str = ""
    stream_hash: str = ""
    missing: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    foreign: list[int] = field(default_factory=list)
    republished: list[int] = field(default_factory=list)
    stream_top: int = 0  # the position of the stream's last event

    @property
    def gaps_inside(self) -> list[int]:
        """Missing positions that lie before the stream's last event (not repairable)."""
        return [p for p in self.missing if p < self.stream_top]

    @property
    def consistent(self) -> bool:
        still_missing = [p for p in self.missing if p not in self.republished]
        return not (still_missing or self.duplicated or self.foreign)


def _digest(pairs: list[tuple[int, str]]) -> str:
    h = hashlib.sha256()
    for position, event_id in sorted(pairs):
        h.update(f"{position}:{event_id}\n".encode())
    return h.hexdigest()


async def reconcile(database_url: str, nats_url: str, *, stream: str, prefix: str,
                    from_position: int = 0, to_position: int | None = None,
                    repair: bool = False, progress: bool = False) -> Report:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        if to_position is None:
            row = conn.execute("SELECT coalesce(max(position), 0) AS p FROM entry_history"
                               ).fetchone()
            to_position = int(row["p"]) if row else 0
        log_rows = conn.execute(
            f"SELECT {COLUMNS} FROM {SOURCE} WHERE position > %s AND position <= %s"
            " ORDER BY position", (from_position, to_position)).fetchall()
    report = Report(from_position, to_position)
    log_pairs = [(r["position"], str(r["event_id"])) for r in log_rows]
    report.log_count, report.log_hash = len(log_pairs), _digest(log_pairs)

    nc = await nats.connect(nats_servers(nats_url))
    try:
        js = nc.jetstream()
        stream_pairs, last_seq = await _read_stream(js, stream, from_position, to_position,
                                                    progress)
        report.stream_top = max((p for p, _ in stream_pairs), default=0)
        in_range = [(p, i) for p, i in stream_pairs if from_position < p <= to_position]
        report.stream_count, report.stream_hash = len(in_range), _digest(in_range)
        seen: dict[int, str] = {}
        log_ids = dict(log_pairs)
        for position, event_id in in_range:
            if position in seen:
                report.duplicated.append(position)
            elif log_ids.get(position) != event_id:
                report.foreign.append(position)
            seen[position] = event_id
        report.missing = [p for p, _ in log_pairs if p not in seen]
        tail = [r for r in log_rows if r["position"] > report.stream_top]
        if repair and tail and all(r["position"] in report.missing for r in tail):
            for row in tail:  # in order, guarded exactly like the broadcaster
                headers = message_headers(row)
                headers["Nats-Expected-Last-Sequence"] = str(last_seq)
                ack = await js.publish(entry_subject(prefix, row["namespace"], row["key"]),
                                       cloudevent(row), headers=headers)
                # (a duplicate held before, maybe purged since, leaves the stream where
                # it was: jetstream.chained_acks)
                last_seq = max(last_seq, ack.seq)
                report.republished.append(row["position"])
    finally:
        await nc.close()
    return report


async def _read_stream(js: Any, stream: str, after: int, upto: int,
                       progress: bool) -> tuple[list[tuple[int, str]], int]:
    """(position, event id) of the stream's messages, and the stream's last sequence."""
    info = await js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    pairs: list[tuple[int, str]] = []
    if not info.state.messages:
        return pairs, last
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("reading the stream", total=last - first + 1)
        for seq in range(first, last + 1):
            try:
                msg = await js.get_msg(stream, seq=seq)
            except nats.js.errors.NotFoundError:  # deleted: a hole in the stream
                bar.advance(task)
                continue
            headers = msg.headers or {}
            position = int(headers.get("Ssot-Position", 0))
            pairs.append((position, headers.get("Nats-Msg-Id", "")))
            bar.advance(task)
    return pairs, last
