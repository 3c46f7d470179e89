"""The checks of ``ssot chaos`` on its reads: every read saw a state of the log, a
time-travel read the log's state at its point, a current read every write acknowledged
before it was sent and no write sent after it completed, and one with a ``min_position``
the entry's state at that position at least.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from datetime import datetime
from typing import Any

from .evidence import READ_KINDS, WRITE_KINDS, Findings, Log


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def check_reads(log: Log, found: Findings,
                ops: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
    """Every read saw a state of the log; time-travel reads the log's state at their
    point; current reads every write acknowledged before they were sent, and no write
    sent after they completed; a current read with a ``min_position`` (the position a
    write of its client returned) at least the entry's version at that position, even
    one whose write was acknowledged to another client only after the read was sent."""
    acked, acked_by = _Newest(), _Newest()  # per entry, per entry and client
    invoked_at = {i["idempotency_key"]: i["t"] for i, _ in ops if i.get("idempotency_key")}
    for invoke, complete in ops:
        if invoke["kind"] in WRITE_KINDS and complete and complete["outcome"] == "ok":
            answer = complete["answer"]
            for item in (answer.get("operations") or [answer]) if isinstance(answer, dict) \
                    else []:
                if isinstance(item, dict) and "version" in item:
                    address = (item["namespace"], item["key"])
                    acked.add(address, complete["t"], item["version"])
                    acked_by.add((*address, invoke["client"]), complete["t"], item["version"])
    for invoke, complete in ops:
        if invoke["kind"] not in READ_KINDS or complete is None \
                or complete["outcome"] == "info":
            continue
        ns, key, kind = invoke["ns"], invoke["key"], invoke["kind"]
        where = {"op": invoke["op"], "kind": kind, "ns": ns, "key": key,
                 "params": invoke.get("params")}
        answer = complete["answer"] if isinstance(complete["answer"], dict) else {}
        seen: int | None = None  # version seen; 0 = absent
        gone = False
        if complete["outcome"] == "ok":
            e = log.at.get((ns, key, answer.get("version", -1)))
            if e is None or e["doc"] != answer.get("document") or e["p"] != answer.get(
                    "position") or e["type"] == "entry.deleted":
                found.add("phantom_read", **where, answer=answer)
                continue
            seen = e["v"]
            wrote = invoked_at.get(e["idem"]) if e["idem"] else None
            if wrote is not None and wrote > complete["t"]:
                found.add("read_from_future", **where, version=seen, write_sent_at=wrote,
                          read_completed_at=complete["t"])
        elif answer.get("code") == "entry_deleted":
            seen, gone = answer.get("deleted_version"), True
        elif answer.get("code") == "entry_not_found":
            seen = 0
        else:
            continue  # version_not_found and the like: nothing to compare
        params = invoke.get("params") or {}
        expected: dict[str, Any] | bool | None = True  # True: no time-travel point
        if kind == "read_version":  # a version not (yet) there is "not found": no claim
            wanted = log.at.get((ns, key, params["version"]))
            if (complete["outcome"] == "ok" and seen != params["version"]) or (gone and (
                    wanted is None or wanted["type"] != "entry.deleted")):
                found.add("wrong_time_travel", **where, seen=seen)
            continue
        if kind == "read_as_of":
            expected = log.last_at_or_before(ns, key, "epoch", _epoch(params["as_of"]))
        elif kind == "read_position":
            expected = log.last_at_or_before(ns, key, "p", params["position"])
        if expected is not True:
            want = expected["v"] if isinstance(expected, dict) else 0
            if seen != want:
                found.add("wrong_time_travel", **where, seen=seen, expected=want)
            continue
        if seen is None:
            continue
        if kind == "read_written":
            floor = log.last_at_or_before(ns, key, "p", params["min_position"])
            least = floor["v"] if isinstance(floor, dict) else 0
            if seen < least:
                found.add("missed_min_position", **where, seen=seen, expected_at_least=least)
                continue
        newest = acked.before((ns, key), invoke["t"])
        if seen < newest:
            mine = acked_by.before((ns, key, invoke["client"]), invoke["t"])
            found.add("read_your_writes" if seen < mine else "stale_read", **where, seen=seen,
                      acknowledged_before=newest)


class _Newest:
    """The newest version acknowledged before a time, per address (bisected)."""

    def __init__(self) -> None:
        self._items: dict[tuple[Any, ...], list[tuple[float, int]]] = defaultdict(list)
        self._index: dict[tuple[Any, ...], tuple[list[float], list[int]]] = {}

    def add(self, address: tuple[Any, ...], t: float, version: int) -> None:
        self._items[address].append((t, version))
        self._index.pop(address, None)

    def before(self, address: tuple[Any, ...], t: float) -> int:
        """0 when nothing was acknowledged before ``t``."""
        if address not in self._index:
            items = sorted(self._items.get(address, []))
            newest, running = [], 0
            for _, version in items:
                running = max(running, version)
                newest.append(running)
            self._index[address] = ([t for t, _ in items], newest)
        times, newest = self._index[address]
        i = bisect.bisect_left(times, t)
        return newest[i - 1] if i else 0

