"""What a verification finds: the kinds of problem, one problem, what the checks found so
far (the problems, the positions they doubt, notes on what was not checked) and the
report of a run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from nexus_ssot.ledger import chain

EVENT_ALTERED = "event_altered"
EVENTS_REORDERED = "events_reordered"
EVENT_INSERTED = "event_inserted"
EVENT_MISSING = "event_missing"
CHAIN_BROKEN = "chain_broken"
UNCHAINED_EVENT = "unchained_event"
UNSEALED_EVENT = "unsealed_event"
DIGEST_ALTERED = "digest_altered"
DIGEST_MISSING = "digest_missing"
DIGEST_SIGNATURE_INVALID = "digest_signature_invalid"
DIGEST_MISMATCH_EXTERNAL = "digest_mismatch_external"
ACCESS_RECORD_ALTERED = "access_record_altered"
ACCESS_RECORD_MISSING = "access_record_missing"
ACCESS_RECORD_INSERTED = "access_record_inserted"
ACCESS_CHAIN_BROKEN = "access_chain_broken"

#: Every problem code, what it means; at one position the first listed is reported first.
KINDS: dict[str, str] = {
    EVENT_ALTERED: "an event's content or commit time is not what was hashed or digested",
    EVENTS_REORDERED: "events stand at each other's positions",
    EVENT_INSERTED: "an event the ledger's writer did not write (no history copy, or no "
                    "Merkle leaf at a digested position)",
    EVENT_MISSING: "an event of a stream, the history or the digests is not in the log",
    CHAIN_BROKEN: "an event's prev_hash is not its stream's previous event's hash",
    UNCHAINED_EVENT: "an event without a hash (written with the chain off, or before it)",
    UNSEALED_EVENT: "an event whose hash leaves members out (class version 3 or 4) without "
                    "the seal that vouches for its stored bytes",
    DIGEST_ALTERED: "a digest's content, hash, link or root is not what it was",
    DIGEST_MISSING: "a digest (or the last ones) is gone from the digests table",
    DIGEST_SIGNATURE_INVALID: "a digest's signature does not verify with a known key",
    DIGEST_MISMATCH_EXTERNAL: "a digest differs from its published copy (--digests)",
    ACCESS_RECORD_ALTERED: "an access log row's content is not what was hashed, or it was "
                           "rewritten with its hash recomputed (the next row links to "
                           "another hash)",
    ACCESS_RECORD_MISSING: "an access log row is gone (a gap in seq)",
    ACCESS_RECORD_INSERTED: "an access log row its neighbours do not link to (neither the "
                            "row before nor the row after chains with it)",
    ACCESS_CHAIN_BROKEN: "an access log row's prev_hash is not the previous row's hash",
}
_PRIORITY = {kind: i for i, kind in enumerate(KINDS)}
EVENT_KINDS = frozenset(list(KINDS)[:7])
#: The access log's problems: ``seq`` is the row's, ``position`` None.
ACCESS_KINDS = frozenset({ACCESS_RECORD_ALTERED, ACCESS_RECORD_MISSING,
                          ACCESS_RECORD_INSERTED, ACCESS_CHAIN_BROKEN})
_NOWHERE = 1 << 62

#: Problems kept in memory (the first ones in log order); beyond it they are only counted.
MAX_KEPT = 10_000
#: Most missing versions of one stream (or digests) remembered at once (a forged version
#: 10**9 must not make a billion of them).
MAX_GAP = 1_000


@dataclass(frozen=True)
class Problem:
    """One problem: its ``kind`` (a code of ``KINDS``), where (``position``; for a digest
    its last covered position, with ``seq``; for the access log ``seq`` alone, the row's),
    which entry and version when known, the
    ``field`` that changed (``event_altered``, ``digest_*``), the other position involved
    (``events_reordered``), and a sentence."""

    kind: str
    position: int | None
    detail: str
    namespace: str | None = None
    key: str | None = None
    version: int | None = None
    field: str | None = None
    seq: int | None = None
    other_position: int | None = None

    def order(self) -> tuple[int, int, int]:
        if self.kind in ACCESS_KINDS:  # after the log's and the digests' problems
            return (_NOWHERE + (self.seq or 0), _PRIORITY[self.kind], 0)
        return (self.position if self.position is not None else _NOWHERE,
                _PRIORITY[self.kind], self.seq or 0)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "position": self.position, "namespace": self.namespace,
                "key": self.key, "version": self.version, "field": self.field,
                "seq": self.seq, "other_position": self.other_position,
                "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        if data.get("kind") not in KINDS:
            raise ValueError(f"unknown problem kind {data.get('kind')!r}")
        return cls(kind=data["kind"], position=data.get("position"),
                   detail=str(data.get("detail", "")), namespace=data.get("namespace"),
                   key=data.get("key"), version=data.get("version"),
                   field=data.get("field"), seq=data.get("seq"),
                   other_position=data.get("other_position"))

    def describe(self) -> str:
        """One line: ``kind at position P (ns/key version V, field F): detail``."""
        where = []
        if self.namespace is not None and self.key is not None:
            where.append(f"{self.namespace}/{self.key}")
        if self.version is not None:
            where.append(f"version {self.version}")
        if self.seq is not None:
            where.append(f"{'access record' if self.kind in ACCESS_KINDS else 'digest'} "
                         f"{self.seq}")
        if self.field is not None:
            where.append(f"field {self.field}")
        at = f" at position {self.position}" if self.position is not None else ""
        return f"{self.kind}{at}{' (' + ', '.join(where) + ')' if where else ''}: " \
               f"{self.detail}"


@dataclass
class Report:
    """The outcome of a verification: ``ok`` when no problem was found; ``first`` the
    first problem in log order, ``problems`` the first ``MAX_KEPT`` (or fewer, as asked)
    of ``problem_count``."""

    ok: bool
    first: Problem | None
    problems: list[Problem]
    problem_count: int
    from_position: int
    to_position: int
    head: int
    events: int
    events_total: int
    streams: int
    digests_checked: int
    digested_to: int | None
    external_digests: int
    signatures_checked: int
    notes: list[str]
    seconds: float
    next_from_position: int | None = None
    resumed_from: int | None = None
    #: Rows of the access log checked (None: not checked by this run, which did not
    #: reach the head, or the database has no access log).
    access_records: int | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self, max_problems: int | None = None) -> dict[str, Any]:
        problems = self.problems if max_problems is None else self.problems[:max_problems]
        return {
            "ok": self.ok,
            "first_problem": self.first.as_dict() if self.first else None,
            "problem_count": self.problem_count,
            "problems": [p.as_dict() for p in problems],
            "from_position": self.from_position,
            "to_position": self.to_position,
            "next_from_position": self.next_from_position,
            "head": self.head,
            "events": self.events,
            "events_total": self.events_total,
            "streams": self.streams,
            "digests_checked": self.digests_checked,
            "digested_to": self.digested_to,
            "external_digests": self.external_digests,
            "signatures_checked": self.signatures_checked,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.rate),
            "resumed_from": self.resumed_from,
            "access_records": self.access_records,
        }


Progress = Callable[[int, int, int], None]
"""``progress(events done, events in the range, position reached)``."""


class Findings:
    """What the checks found so far: the problems, one per kind and position (a digest's
    per kind and seq), the first ``MAX_KEPT`` in log order kept and the rest counted
    (``dropped``); the positions some check doubted (``suspects``, judged at the end);
    and notes on what could not be checked. A problem of an event outside the verified
    ``namespace`` is not kept, but still explains a digest's root differing."""

    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace
        self.problems: dict[tuple[str, int | None, int | None], Problem] = {}
        self.dropped = 0
        self.suspects: set[int] = set()
        self.notes: list[str] = []
        self.first_event_problem: int | None = None

    def report(self, problem: Problem) -> None:
        if problem.kind == EVENTS_REORDERED and problem.other_position is not None \
                and problem.position is not None \
                and problem.other_position < problem.position:
            problem = replace(problem, position=problem.other_position,
                              other_position=problem.position)
        if problem.kind in EVENT_KINDS and problem.position is not None:
            # what explains a digest's root differing, in any namespace
            if self.first_event_problem is None or problem.position < self.first_event_problem:
                self.first_event_problem = problem.position
            if self.namespace is not None and problem.namespace is not None \
                    and problem.namespace != self.namespace:
                return
        # one problem per kind and position; a digest's per kind and seq (the earliest
        # position known for it wins: a published copy knows where a lost digest was)
        key = (problem.kind, problem.position, None) if problem.seq is None \
            else (problem.kind, None, problem.seq)
        known = self.problems.get(key)
        if known is not None:
            if problem.order() < known.order():
                self.problems[key] = problem
            return
        if len(self.problems) >= MAX_KEPT:
            worst_key = max(self.problems, key=lambda k: self.problems[k].order())
            self.dropped += 1
            if problem.order() >= self.problems[worst_key].order():
                return
            del self.problems[worst_key]
        self.problems[key] = problem

    def event_problem_at_or_before(self, position: int) -> bool:
        return self.first_event_problem is not None and self.first_event_problem <= position

    def in_order(self) -> list[Problem]:
        return sorted(self.problems.values(), key=Problem.order)


def show(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return chain.timestamp(value)
    return "null" if value is None else str(value)
