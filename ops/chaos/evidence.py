"""What the checker of ``ssot chaos`` reads and what it finds: a run's files (one JSON object
a line), its history slimmed to what the checks read, the committed log indexed (by entry
and version, by entry, by idempotency key, by position), and the findings: anomalies by
kind, with a few examples of each.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson

EXAMPLES = 5
WRITE_KINDS = frozenset({"create", "put", "merge_patch", "json_patch", "delete", "revert",
                         "batch"})
READ_KINDS = frozenset({"read", "read_version", "read_as_of", "read_position",
                        "read_written"})
CHAOS_NAMESPACES = ("chaos-strict", "chaos-merge")
STRICT_NS = "chaos-strict"
#: The schema of ``STRICT_NS``: documents that are objects whose ``r``, when they have
#: one, is below 900,000 (the clients draw it below 1,000,000: about one write in ten is
#: refused for it).
CHAOS_SCHEMA = {"type": "object",
                "properties": {"r": {"type": "integer", "maximum": 899_999}}}


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open("rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


_INVOKE = ("type", "t", "wall", "op", "client", "kind", "ns", "key", "body", "if_match",
           "params", "idempotency_key", "subject")
_COMPLETE = ("type", "t", "wall", "op", "client", "outcome", "status", "answer", "attempts",
             "correlation_id")
_ANSWER = ("namespace", "key", "version", "position", "document", "document_hidden", "code",
           "deleted_version", "operations", "unchanged")


def read_history(path: Path) -> list[dict[str, Any]]:
    """The history with only what the checks read (a run of hours fits in memory)."""
    history = []
    with path.open("rb") as f:
        for line in f:
            h = orjson.loads(line)
            if h["type"] == "invoke":
                h = {k: h.get(k) for k in _INVOKE}
            elif h["type"] == "complete":
                slim = {k: h.get(k) for k in _COMPLETE}
                slim["errors"] = [e for e in h["errors"] if e.startswith("500 ")]
                answer = h["answer"]
                if isinstance(answer, dict):
                    slim["answer"] = {k: answer[k] for k in _ANSWER if k in answer}
                h = slim
            history.append(h)
    return history


class Findings:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[Any]] = defaultdict(list)

    def add(self, kind: str, /, **example: Any) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(example)

    def as_dict(self) -> dict[str, Any]:
        return {kind: {"count": n, "examples": self.examples[kind]}
                for kind, n in sorted(self.counts.items())}


class Log:
    """The committed events, indexed."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.at: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self.by_idem: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.by_position: dict[int, dict[str, Any]] = {}
        for e in events:
            self.at[(e["ns"], e["key"], e["v"])] = e
            self.by_key[(e["ns"], e["key"])].append(e)
            if e.get("idem"):
                self.by_idem[e["idem"]].append(e)
            self.by_position[e["p"]] = e

    def before(self, e: dict[str, Any]) -> Any:
        """The document an event changed (None: absent or deleted)."""
        prev = self.at.get((e["ns"], e["key"], e["v"] - 1))
        if prev is None or prev["type"] == "entry.deleted":
            return None
        return prev["doc"]

    def last_at_or_before(self, ns: str, key: str, field: str,
                          bound: float) -> dict[str, Any] | None:
        """The entry's last event whose ``field`` (``p`` or ``epoch``, both rising with
        the version) is at most ``bound``."""
        events = self.by_key.get((ns, key), [])
        i = bisect.bisect_right(events, bound, key=lambda e: e[field])
        return events[i - 1] if i else None
