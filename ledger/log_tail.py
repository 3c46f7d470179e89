"""The log's tail, read once per wake-up for every follower of one process.

The followers (the broadcaster, the views, the digester) each need the events after their
own position. ``LogTail`` LISTENs on the log's channel on one connection and, woken by a
NOTIFY (or, should one be lost, by its slow poll), reads the new range ``(head, …]`` once,
decoded once, and keeps the last ``capacity`` events in memory: a follower within that
range takes its next events from there, one further behind (catching up, or just elected)
reads its own ranges from the database the same way until it reaches the tail. The tail
holds no follower's position: each follower still keeps and commits its own.

Positions are read in order and without a hole: ids are committed in order under the
store's table lock, so once position P is visible every position below it is settled.

A commit's NOTIFY carries its events when they are small (migration 0024,
``carried_events``): the tail then takes them from it instead of reading the range, when
the NOTIFYs since its last read carried every event after its head without a gap. A
commit too large to carry, a gap in the positions (a rolled-back batch) or a wake-up by
the poll makes it read, as it always did; either way a follower gets the same events,
value for value and type for type.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from uuid import UUID

import orjson
import psycopg

from .cloudevents import FIELDS, column
from .events import TYPE_OF_TOPIC
from .leadership import on_connection
from .stopping import wait_unless_stopped
from .wire import Wire

#: The channel the store NOTIFYs on every commit of events.
CHANNEL = "ssot_events"

_HISTORY = ", ".join(column(f) for f in FIELDS)
_READ_PLAIN = (
    "SELECT e.notification_id, e.recorded_at, e.topic, e.originator_version, e.state"
    " FROM ssot_events e WHERE e.notification_id > %s AND e.notification_id <= %s"
    " ORDER BY e.notification_id LIMIT %s")
# The range first, then each event's history row by the position index: a join the planner
# is free to reorder became, for a range of a burst's thousands of events while the table's
# statistics were older than the burst, a hash join over the whole of entry_history and a
# sort (40 ms at 20,000 events, 200-700 ms spilling to disk a little later; the followers
# then caught up at ~700 events/s). The LATERAL subquery (its LIMIT keeps it from being
# merged into a plain join) is an index lookup per event whatever the statistics say.
_READ_WITH_HISTORY = (
    f"SELECT e.notification_id, e.recorded_at, e.topic, e.originator_version, e.state,"
    f" {_HISTORY} FROM (SELECT * FROM ssot_events WHERE notification_id > %s"
    f"  AND notification_id <= %s ORDER BY notification_id LIMIT %s) e"
    f" LEFT JOIN LATERAL (SELECT * FROM entry_history WHERE position = e.notification_id"
    f"  LIMIT 1) h ON true ORDER BY e.notification_id")


class LogEvent:
    """One event of the log; its stored state is decoded on first use, once."""

    __slots__ = ("_state", "history", "position", "raw", "recorded_at", "topic", "version")

    def __init__(self, position: int, recorded_at: datetime, topic: str, version: int,
                 raw: bytes, history: dict[str, Any] | None = None) -> None:
        self.position = position
        self.recorded_at = recorded_at
        self.topic = topic
        self.version = version
        self.raw = raw
        #: The entry's version-history row (``cloudevents.FIELDS``; what a CloudEvent is
        #: made of) when read with it; None for an event without one, or when not read
        #: (a namespace's settings events have one too, in the system namespace).
        self.history = history
        self._state: dict[str, Any] | None = None

    @property
    def state(self) -> dict[str, Any]:
        if self._state is None:
            self._state = orjson.loads(self.raw)
        return self._state

    @property
    def event_type(self) -> str:
        return TYPE_OF_TOPIC.get(self.topic, self.topic)

    @property
    def namespace(self) -> str:
        return str(self.state["namespace"])

    @property
    def key(self) -> str:
        return str(self.state["key"])

    @property
    def document(self) -> Any:
        return None if self.event_type == "entry.deleted" else self.state["document"]

    @property
    def actor(self) -> str:
        return str(self.state["actor"])

    @property
    def hash(self) -> str | None:
        return self.state.get("hash")


async def read_range(conn: psycopg.AsyncConnection[Any], after: int, upto: int | None = None,
                     limit: int = 1000, *, history: bool = False) -> list[LogEvent]:
    """At most ``limit`` events of ``(after, upto]`` (``upto`` None: the end), in order;
    with their version-history rows if ``history``."""
    # binary: the state's bytes, times and ids come as they are, not as text to parse
    cur = await conn.execute(_READ_WITH_HISTORY if history else _READ_PLAIN,
                             (after, upto if upto is not None else 2**62, limit),
                             prepare=True, binary=True)
    return log_events(await cur.fetchall(), history=history)


def log_events(rows: Sequence[Sequence[Any]], *, history: bool) -> list[LogEvent]:
    """The events of ``rows`` read by ``_READ_PLAIN`` (or ``_READ_WITH_HISTORY``)."""
    if not history:
        return [LogEvent(row[0], row[1], row[2], row[3], row[4]) for row in rows]
    return [LogEvent(row[0], row[1], row[2], row[3], row[4],
                     None if row[5] is None else dict(zip(FIELDS, row[5:], strict=True)))
            for row in rows]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: A payload's history columns, after the event's five (position, commit time, topic,
#: version, state): ``FIELDS`` but the position and the commit time (the event's own).
_CARRIED = ("event_id", "namespace", "key", "version", "event_type", "actor", "reason",
            "correlation_id", "causation_id", "patch", "document", "resolution", "auth",
            "traceparent", "tracestate")


def carried_events(payload: str | bytes, zone: tzinfo) -> list[LogEvent] | None:
    """The events a commit's NOTIFY carries (migration 0024), as ``read_range`` with their
    history would return them, commit times in ``zone`` (the reading connection's); None
    when it carries none (an empty payload: a batch too large to carry, a NOTIFY sent by
    hand) or not in this form.

    ``ssot_append`` notifies, when it fits in PostgreSQL's 8,000 bytes, one JSON array per
    event of exactly what ``_READ_WITH_HISTORY`` selects: the position, the commit time in
    microseconds since 1970 (UTC), topic, version and stored state (hex), then the
    version-history row's columns (nulls for an event without one), the JSON ones as the
    text the read casts them to. Each value comes back with the type psycopg's binary
    loaders give the read (the event id a ``UUID``, the commit time an aware ``datetime``);
    a test holds every kind of event equal, value and type, whichever way it came."""
    if not payload:
        return None
    try:
        rows = orjson.loads(payload)
        if not isinstance(rows, list) or not rows:
            return None
        return [_carried(row, zone) for row in rows]
    except (TypeError, ValueError, IndexError, OverflowError):  # (orjson: ValueErrors)
        return None


def _carried(row: list[Any], zone: tzinfo) -> LogEvent:
    position, micros, topic, version, state = row[:5]
    recorded_at = (_EPOCH + timedelta(microseconds=micros)).astimezone(zone)
    history: dict[str, Any] | None = None
    if row[5] is not None:  # an event id: the event has a version-history row
        values = dict(zip(_CARRIED, row[5:], strict=True))
        values["event_id"] = UUID(values["event_id"])
        values["position"], values["recorded_at"] = position, recorded_at
        history = {name: values[name] for name in FIELDS}
    elif len(row) != 5 + len(_CARRIED):
        raise ValueError("a carried event of another form")
    return LogEvent(int(position), recorded_at, str(topic), int(version),
                    bytes.fromhex(state), history)


#: The tail's read prepared on its connection (``Wire``): ``_READ_WITH_HISTORY``.
_READ_STATEMENT = "ssot_log_tail_read"

# The end of a range, its first commit time and its size, from the positions' index and
# the rows' commit times: what a follower that reads the range in SQL needs of it.
_RANGE_END = (
    "SELECT max(notification_id), min(recorded_at), count(*) FROM (SELECT notification_id,"
    " recorded_at FROM ssot_events WHERE notification_id > %s AND notification_id <= %s"
    " ORDER BY notification_id LIMIT %s) r")


async def head_position(conn: psycopg.AsyncConnection[Any]) -> int:
    """The log's last position (0: empty)."""
    cur = await conn.execute("SELECT coalesce(max(notification_id), 0) FROM ssot_events",
                             prepare=True)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


class LogTail:
    """The shared tail of one process (see the module's docstring); ``run`` keeps it."""

    # An event held costs ~12 KB with its history row and decoded state (a ~150-byte
    # document, measured with tracemalloc): 512 of them ~6 MB. A read never brings more
    # than the tail keeps (``capacity`` at a time), so no event is read only to be dropped.
    def __init__(self, database_url: str, *, capacity: int = 512,
                 poll_interval: float = 5.0, gather: float = 0.0) -> None:
        self.database_url = database_url
        self.capacity = capacity
        self.poll_interval = poll_interval
        #: Seconds the commits after a read that found events are left to gather before
        #: the next read (``SSOT_FOLLOWERS_GATHER_SECONDS``): under a steady stream of
        #: commits the followers then wake, read, publish and fold once for several
        #: instead of once for each; commits further apart are read as they come.
        self.gather = gather
        #: The events of ``(start, head]``, in order; ``start`` None before the first read.
        self.start: int | None = None
        self.head = 0
        #: Whether the tail is following (a follower waiting on it is woken).
        self.live = False
        #: Wake-ups and ranges read, for tests and the bench (``carried``: of them, those
        #: taken from NOTIFYs that carried their commits, migration 0024).
        self.reads = 0
        self.carried = 0
        #: The payloads of the log's NOTIFYs come since the last read, in their order.
        self._notes: list[str | bytes] = []
        self._events: list[LogEvent] = []
        #: Their positions, for ``bisect`` without a key function (a call per step).
        self._positions: list[int] = []
        #: The followers' waits for the tail to advance, each woken at once by the next
        #: read (see ``wait``), in the order they began (a dict: one woken is gone from
        #: it, and a wait that ends otherwise takes itself out without a search or a
        #: ValueError, once an event in the broadcaster's loop).
        self._waiters: dict[asyncio.Future[None], None] = {}
        self._news: dict[str, asyncio.Event] = {}
        self._heard: dict[str, int] = {}
        self._pending: set[str] = set()  # channels notified, not yet handled
        self._wire: Wire | None = None  # the tail's connection, while it follows

    def listen(self, channel: str) -> None:
        """Also LISTEN on ``channel`` (from the tail's next wake-up at the latest):
        ``wait_for`` waits for it."""
        self._news.setdefault(channel, asyncio.Event())
        self._heard.setdefault(channel, 0)
        self._interrupt()  # to LISTEN on it now

    def heard(self, channel: str) -> int:
        """How many wake-ups brought a NOTIFY on ``channel`` so far (for ``wait_for``)."""
        return self._heard[channel]

    async def events_after(self, conn: psycopg.AsyncConnection[Any], after: int,
                           limit: int) -> list[LogEvent]:
        """At most ``limit`` events after ``after``, from the tail when it holds them,
        else read on ``conn`` (a follower behind the tail, or the tail not following)."""
        served = self._served(after, limit)
        if isinstance(served, list):
            return served
        return await read_range(conn, after, served, limit, history=True)

    async def range_after(self, conn: psycopg.AsyncConnection[Any], after: int,
                          limit: int) -> tuple[int, datetime, int] | None:
        """The next range of at most ``limit`` events after ``after``, without its events:
        (its last position, its first event's commit time, how many events it holds), or
        None when there is none yet. For a follower that reads the range in SQL itself: a
        range the tail holds costs nothing, one behind it a read of the positions' index
        instead of every event with its history, decoded (what ``events_after`` reads)."""
        served = self._served(after, limit)
        if isinstance(served, list):
            return (served[-1].position, served[0].recorded_at, len(served)) if served \
                else None
        cur = await conn.execute(_RANGE_END, (after, served, limit), prepare=True)
        row = await cur.fetchone()
        if row is None or row[0] is None:
            return None
        return int(row[0]), row[1], int(row[2])

    def _served(self, after: int, limit: int) -> list[LogEvent] | int:
        """What a follower at ``after`` gets without reading: at most ``limit`` of the
        events the tail holds (none: nothing new yet, it waits); or, when it must read for
        itself, where its read ends: where the tail begins (behind the tail: then it joins
        it), or the log's end (the tail not following)."""
        if self.start is not None and self.start <= after < self.head:
            i = bisect.bisect_right(self._positions, after)
            return self._events[i:i + limit]
        if self.live and self.start is not None:
            return [] if after >= self.head else self.start
        return 2**62

    def idle_timeout(self, poll_interval: float) -> float:
        """How long a follower with nothing to do waits: while the tail follows it wakes
        the follower, which needs to look only as often as the tail polls; otherwise the
        follower polls at its own ``poll_interval``."""
        return max(poll_interval, self.poll_interval) if self.live else poll_interval

    async def wait(self, stop: asyncio.Event, after: int, timeout: float) -> None:
        """Until the tail holds events after ``after``, ``timeout`` passes, or ``stop``.

        The follower waits on a future of its own that the tail's next read resolves:
        it runs in the loop's next turn. (Waiting on an ``asyncio.Event`` and ``stop``
        together took a task for each, ``asyncio.wait`` and more turns of the loop, each
        as long as the views' work woken by the same read: the broadcaster's publish
        waited for them; docs/performance.md.) A timer or ``stop`` resolves it otherwise
        (``stopping.py``)."""
        if stop.is_set() or (self.live and self.head > after):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = None
        try:
            await wait_unless_stopped(waiter, stop, timeout)
        finally:  # timed out, stopped or cancelled, it is still listed (woken, it is not)
            self._waiters.pop(waiter, None)

    async def wait_for(self, channel: str, heard: int, stop: asyncio.Event,
                       timeout: float) -> None:
        """Until a NOTIFY on ``channel`` (see ``listen``) after the ``heard``-th,
        ``timeout`` passes, or ``stop``."""
        if self._heard[channel] == heard:
            await _first(stop, self._news[channel], timeout)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the log until ``stop``; a lost connection is reconnected with backoff
        (meanwhile the followers read for themselves)."""

        async def follow(conn: psycopg.AsyncConnection[Any]) -> None:
            # notifications that come with a query's answer are kept here too
            conn.add_notify_handler(lambda n: self._notified(n.channel, n.payload))
            await conn.execute(f"LISTEN {CHANNEL}")
            await self._follow(stop, conn)

        async def interrupt_on_stop() -> None:
            await stop.wait()
            self._interrupt()

        stopping = asyncio.ensure_future(interrupt_on_stop())
        try:
            await on_connection(self.database_url, "log tail", follow, stop, self._lost)
        finally:
            stopping.cancel()

    def _lost(self) -> None:
        self.live = False
        self._wake_all()

    async def _follow(self, stop: asyncio.Event, conn: psycopg.AsyncConnection[Any]) -> None:
        if self.start is None:
            self.start = self.head = await head_position(conn)
        self.live = True
        listening: set[str] = set()
        # one read a commit at most: on the wire (wire.py), not through a cursor
        self._wire = wire = await Wire.open(conn, _READ_STATEMENT, _READ_WITH_HISTORY, 3,
                                            self._notified)
        zone = conn.info.timezone  # the one the connection's reads give times in
        self._notes = []  # (any of another connection's are read again)
        try:
            while not stop.is_set():
                channels = self._news.keys() - listening  # asked for since
                if channels:
                    with wire.detached():
                        for channel in channels:
                            await conn.execute(f"LISTEN {channel}")
                    listening |= channels
                events = self._carried(zone)
                if events is not None:
                    self.carried += bool(events)
                else:  # woken by the poll, or a NOTIFY that did not carry its commit
                    events = log_events(await wire.read(self.head, 2**62, self.capacity),
                                        history=True)
                if events:
                    self._append(events)
                    if len(events) == self.capacity:
                        continue
                    if self.gather:
                        await wire.unwatched(self.gather)
                await self._wait_for_notifies(wire)
        finally:
            self._wire = None
            wire.detach()

    def _notified(self, channel: str, payload: str | bytes) -> None:
        self._pending.add(channel)
        if channel == CHANNEL:
            self._notes.append(payload)

    def _carried(self, zone: tzinfo) -> list[LogEvent] | None:
        """The events after the head that the NOTIFYs come since the last read carried,
        when together they are every one of them: each carried its commit, and their
        positions follow the head without a gap (positions are committed in order under
        the log's lock, so nothing committed lies between). None otherwise (woken without
        a NOTIFY, a commit too large to carry, a gap a rolled-back batch left): the range
        is then read, which holds what they announced. Either way the NOTIFYs are taken."""
        notes, self._notes = self._notes, []
        if not notes:
            return None
        taken: list[LogEvent] = []
        head = self.head
        for note in notes:
            events = carried_events(note, zone)
            if events is None:
                return None
            for event in events:
                if event.position <= head:  # a read since the commit holds it
                    continue
                if event.position != head + 1:
                    return None
                taken.append(event)
                head = event.position
        return taken

    def _append(self, events: Sequence[LogEvent]) -> None:
        self.reads += 1
        self._events.extend(events)
        self._positions.extend(e.position for e in events)
        self.head = events[-1].position
        excess = len(self._events) - self.capacity
        if excess > 0:
            self.start = self._events[excess - 1].position
            del self._events[:excess]
            del self._positions[:excess]
        self._wake_all()

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _interrupt(self) -> None:
        """End the tail's wait for notifications now (stopping, or a channel to LISTEN)."""
        if self._wire is not None:
            self._wire.interrupt()

    async def _wait_for_notifies(self, wire: Wire) -> None:
        """Until the connection brings a NOTIFY, the poll interval passes or
        ``_interrupt``; every notification already there is taken with it, so a burst of
        commits makes one read, not one each."""
        if not self._pending:
            await wire.notified(self.poll_interval)
        seen, self._pending = self._pending, set()
        for channel in seen:
            news = self._news.get(channel)
            if news is not None:
                self._heard[channel] += 1
                self._news[channel] = asyncio.Event()
                news.set()


async def _first(stop: asyncio.Event, event: asyncio.Event, timeout: float) -> None:
    """Until ``event`` or ``stop`` is set, or ``timeout`` passes."""
    if stop.is_set() or event.is_set():
        return
    waits = (asyncio.ensure_future(stop.wait()), asyncio.ensure_future(event.wait()))
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
