"""The access log's flood bound, in one process: at most ``per_second`` records stored per
second for one (decision, client address, reason); the records beyond it are counted and,
once their second is over, one summary record stands for them. And the count of records
dropped because the queue was full, stored as a summary record per decision too.

Pure: the clock (seconds, monotonic) is given, so the tests decide when a second ends.
Not thread-safe: ``AccessLog`` calls it under its lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .records import QUEUE_FULL, AccessRecord, summary

Clock = Callable[[], float]
FloodKey = tuple[str, str | None, str]


@dataclass
class _Window:
    """One key's current second: when it began, records stored, records suppressed and
    the times of the first and last of those."""

    start: float
    stored: int = 0
    suppressed: int = 0
    first: datetime | None = None
    last: datetime | None = None


class FloodBound:
    """Which records to store (``admit``) and the summaries of the others (``summaries``)."""

    def __init__(self, per_second: int, clock: Clock = time.monotonic) -> None:
        if per_second < 1:
            raise ValueError("per_second must be at least 1")
        self.per_second = per_second
        self.clock = clock
        self.windows: dict[FloodKey, _Window] = {}
        #: Summaries of windows that ended while records of their key kept coming.
        self.ready: list[dict[str, Any]] = []
        self.suppressed_total = 0

    def admit(self, record: AccessRecord) -> bool:
        """Whether to store ``record``; if not, it is counted for its key's summary."""
        key = record.flood_key()
        moment = self.clock()
        window = self.windows.get(key)
        if window is None or moment - window.start >= 1.0:
            if window is not None:
                self._close(key, window)
            window = self.windows[key] = _Window(moment)
        if window.stored < self.per_second:
            window.stored += 1
            return True
        window.suppressed += 1
        self.suppressed_total += 1
        if window.first is None or record.time < window.first:
            window.first = record.time
        if window.last is None or record.time > window.last:
            window.last = record.time
        return False

    def summaries(self, *, final: bool = False) -> list[dict[str, Any]]:
        """The summary records due: of every window whose second is over (all of them
        when ``final``), which are forgotten."""
        moment = self.clock()
        for key, window in list(self.windows.items()):
            if final or moment - window.start >= 1.0:
                del self.windows[key]
                self._close(key, window)
        due, self.ready = self.ready, []
        return due

    def _close(self, key: FloodKey, window: _Window) -> None:
        if window.suppressed and window.first is not None and window.last is not None:
            decision, source, reason = key
            self.ready.append(summary(decision, source, reason, window.suppressed,
                                      window.first, window.last))


class Drops:
    """Records dropped because the queue was full, by decision, until summarised."""

    def __init__(self) -> None:
        self.pending: dict[str, _Window] = {}
        self.total = 0

    def drop(self, record: AccessRecord) -> None:
        self.total += 1
        window = self.pending.setdefault(record.decision, _Window(0.0))
        window.suppressed += 1
        if window.first is None or record.time < window.first:
            window.first = record.time
        if window.last is None or record.time > window.last:
            window.last = record.time

    def summaries(self) -> list[dict[str, Any]]:
        """One summary record per decision of the records dropped since the last call."""
        due = [summary(decision, None, QUEUE_FULL, w.suppressed, w.first, w.last)
               for decision, w in self.pending.items()
               if w.first is not None and w.last is not None]
        self.pending = {}
        return due
