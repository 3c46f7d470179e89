"""The furthest position of the log this process has seen committed on the primary, so that
a read which must include a position at or before it (``min_position``, a read at a
``position``) need not ask the primary's head again.

Every position seen here was committed before it was seen: the answer of a write through
this process (``writes.count_writes``), the head read off the primary by a read that
needed a position beyond the furthest seen (``read_replica.ensure_held``), or the head of
the read replica, which replays what the primary committed. The log only grows, so the
primary's log holds every position at or before the furthest seen, and a statement begun
after that was seen reads a state that includes it. (A head is read committed, not yet
acknowledged: with a synchronous standby, a failover can lose the commits the old primary
had not yet had confirmed, and so a position that no write returned. A position a write
returned is never lost: it is the one a client gives. A database put back to an earlier
point in time under running API processes is another matter: restart them, as after any
restore of PostgreSQL itself.)"""

from __future__ import annotations


class LogHead:
    """The furthest log position seen committed; 0 (the head of an empty log) at first."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = 0

    def saw(self, position: int) -> None:
        if position > self.seen:
            self.seen = position

    def holds(self, position: int) -> bool:
        """Whether the primary's log is known to hold ``position``."""
        return position <= self.seen
