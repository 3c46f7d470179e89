"""The projection runtime: views that follow the log by global position, exactly once.

A view is a module: its tables (DDL with ``{name}`` placeholders for their physical names)
and ``apply(conn, after, upto, tables)``, which folds the log range ``(after, upto]`` into
those tables. The runner commits that change and the view's tracked position in one
transaction, so a view is exactly as far as its position says, whatever crashes:

    BEGIN
      view.apply(after, upto)                      -- the view's own SQL (or Python)
      UPDATE projection_tracking SET notification_id = upto
       WHERE application_name = view AND notification_id = after   -- or roll back
    COMMIT

``projection_tracking`` is the `eventsourcing` library's single-row tracking table (its
``PostgresTrackingRecorder`` reads it); the update is guarded on the position the runner
started from, so two runners of one view, or a runner racing a rebuild's swap, can never
apply a range twice: the loser's transaction fails and it reloads its position.

Positions come from the events table: ids are assigned and committed in order under the
library's table lock, so once position P is visible every position below it is settled
(committed, or a gap forever). The runner wakes on the log's NOTIFY and also polls, so a
lost notification never stalls a view; one runner per view leads (advisory lock).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import orjson
import psycopg
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from nexus_ssot.ledger.errors import SchemaBehind
from nexus_ssot.ledger.events import TYPE_OF_TOPIC
from nexus_ssot.ledger.leadership import leadership, sleep_unless_stopped, wait_for_news
from nexus_ssot.ledger.redaction import redact_url

log = logging.getLogger(__name__)

TRACKING_TABLE = "projection_tracking"
_LOCK_NAMESPACE = 0x5550_0000
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: The public event type name of each stored topic as a SQL CASE over the events table's
#: ``topic`` column (for views folded in SQL).
SQL_EVENT_TYPE = "CASE topic " + " ".join(
    f"WHEN '{topic}' THEN '{name}'" for topic, name in TYPE_OF_TOPIC.items()) + " END"


class Tables(Mapping[str, str]):
    """A view's logical table names mapped to quoted physical names: the live tables, a
    rebuild's shadow tables (``suffix``), or a forensic copy in another ``schema``."""

    def __init__(self, names: Iterable[str], *, suffix: str = "", schema: str | None = None):
        self.plain = {n: f"{n}{suffix}" for n in names}
        for physical in self.plain.values():
            if not _IDENTIFIER.fullmatch(physical):
                raise ValueError(f"{physical!r} is not a plain SQL identifier")
        if schema is not None and not _IDENTIFIER.fullmatch(schema):
            raise ValueError(f"{schema!r} is not a plain SQL identifier")
        self.schema = schema
        self._quoted = {n: (f'"{schema}".' if schema else "") + f'"{p}"'
                        for n, p in self.plain.items()}

    def __getitem__(self, name: str) -> str:
        return self._quoted[name]

    def __iter__(self) -> Any:
        return iter(self._quoted)

    def __len__(self) -> int:
        return len(self._quoted)


class View(Protocol):
    """What the runtime needs of a view module's view."""

    #: The view's name: its tracking row and its advisory lock.
    name: ClassVar[str]
    #: Logical names of its tables (also their live physical names).
    tables: ClassVar[tuple[str, ...]]
    #: Whether applying has effects outside PostgreSQL (suppressed while rebuilding).
    side_effects: ClassVar[bool]

    def ddl(self, t: Tables) -> str:
        """CREATE TABLE / INDEX statements for its tables (``IF NOT EXISTS``)."""
        ...

    async def apply(self, conn: psycopg.AsyncConnection[Any], after: int, upto: int,
                    t: Tables) -> None:
        """Fold the log range ``(after, upto]`` into ``t``, inside the caller's
        transaction."""
        ...


# --- reading the log (for views folded in Python) -------------------------------------


@dataclass(slots=True)
class LogEvent:
    position: int
    recorded_at: datetime
    event_type: str
    version: int
    namespace: str
    key: str
    document: Any
    actor: str


_READ = (
    "SELECT notification_id, recorded_at, topic, originator_version, state FROM ssot_events"
    " WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id"
)


async def read_log(conn: psycopg.AsyncConnection[Any], after: int, upto: int
                   ) -> list[LogEvent]:
    """The events of ``(after, upto]``, decoded."""
    cur = await conn.execute(_READ, (after, upto), prepare=True)
    events = []
    for position, recorded_at, topic, version, state in await cur.fetchall():
        s = orjson.loads(state)
        event_type = TYPE_OF_TOPIC.get(topic, topic)
        events.append(LogEvent(position, recorded_at, event_type, version, s["namespace"],
                               s["key"], None if event_type == "entry.deleted"
                               else s["document"], s["actor"]))
    return events


# --- tracking -------------------------------------------------------------------------


class TrackingConflict(Exception):
    """Another runner (or a rebuild's swap) moved the view's position meanwhile."""


async def tracked_position(conn: psycopg.AsyncConnection[Any], name: str) -> int | None:
    cur = await conn.execute(
        f"SELECT notification_id FROM {TRACKING_TABLE} WHERE application_name = %s", (name,))
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def start_tracking(conn: psycopg.AsyncConnection[Any], name: str) -> int:
    """The view's position, registering it at 0 the first time."""
    await conn.execute(
        f"INSERT INTO {TRACKING_TABLE} (application_name, notification_id) VALUES (%s, 0)"
        " ON CONFLICT (application_name) DO NOTHING", (name,))
    position = await tracked_position(conn, name)
    assert position is not None
    return position


async def advance(conn: psycopg.AsyncConnection[Any], name: str, after: int, upto: int
                  ) -> None:
    """Move the view's position from ``after`` to ``upto`` (inside the view's
    transaction); raise ``TrackingConflict`` if it is no longer at ``after``."""
    cur = await conn.execute(
        f"UPDATE {TRACKING_TABLE} SET notification_id = %s"
        " WHERE application_name = %s AND notification_id = %s", (upto, name, after),
        prepare=True)
    if cur.rowcount != 1:
        raise TrackingConflict(f"view {name} is no longer at position {after}")


async def next_upto(conn: psycopg.AsyncConnection[Any], after: int, batch: int,
                    until: int | None = None) -> int | None:
    """The end of the next range of at most ``batch`` events after ``after`` (None: none)."""
    cur = await conn.execute(
        "SELECT max(notification_id) FROM (SELECT notification_id FROM ssot_events"
        " WHERE notification_id > %s AND notification_id <= %s"
        " ORDER BY notification_id LIMIT %s) r",
        (after, until if until is not None else 2**62, batch), prepare=True)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def head_position(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT coalesce(max(notification_id), 0) FROM ssot_events",
                             prepare=True)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def create_tables(conn: psycopg.AsyncConnection[Any], view: View, t: Tables) -> None:
    if t.schema:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{t.schema}"')
    await conn.execute(view.ddl(t).encode())


async def ensure_tables(conn: psycopg.AsyncConnection[Any], view: View, t: Tables) -> None:
    """Create the view's tables unless they all exist: a runner under a service role, which
    may not change the schema, finds them made by ``ssot migrate`` (even ``IF NOT EXISTS``
    needs that right)."""
    for quoted in t.values():
        cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (quoted,))
        row = await cur.fetchone()
        if not (row and row[0]):
            try:
                await create_tables(conn, view, t)
            except psycopg.errors.InsufficientPrivilege as e:
                raise SchemaBehind(
                    f"the tables of the view {view.name} do not exist and this role may not "
                    f"create them ({str(e).strip()}): run `ssot migrate` as the role that "
                    "owns the schema") from e
            return


# --- the runner -----------------------------------------------------------------------


@dataclass
class ViewProgress:
    """What a runner knows of its view, for health, metrics and ``ssot replay status``."""

    name: str
    position: int = 0
    head: int = 0
    lag_seconds: float = 0.0
    leader: bool = False
    applied: int = 0
    last_error: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def lag_events(self) -> int:
        return max(0, self.head - self.position)


class ViewRunner:
    """Keeps one view up to date with the log, exactly once, until stopped."""

    def __init__(self, database_url: str, view: View, *, batch_size: int = 1000,
                 poll_interval: float = 1.0) -> None:
        self.database_url = database_url
        self.view = view
        self.tables = Tables(view.tables)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.progress = ViewProgress(view.name)

    async def run(self, stop: asyncio.Event) -> None:
        """Lead (or stand by for) the view and keep it current; survives database
        outages by reconnecting."""
        while not stop.is_set():
            try:
                await self._lead(stop)
            except (psycopg.OperationalError, TrackingConflict, OSError) as e:
                self.progress.last_error = redact_url(str(e))
                log.warning("view %s: %s; resuming", self.view.name, self.progress.last_error)
                await sleep_unless_stopped(stop, 0.5)

    async def _lead(self, stop: asyncio.Event) -> None:
        async with leadership(self.database_url, _LOCK_NAMESPACE, self.view.name, stop,
                              self.poll_interval) as lock_conn:
            if lock_conn is None:
                return
            self.progress.leader = True
            try:
                await self._follow(stop, lock_conn)
            finally:
                self.progress.leader = False

    async def _follow(self, stop: asyncio.Event,
                      lock_conn: psycopg.AsyncConnection[Any]) -> None:
        async with await psycopg.AsyncConnection.connect(
                self.database_url, autocommit=True) as conn, \
                await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True) as listen_conn:
            await listen_conn.execute("LISTEN ssot_events")
            await ensure_tables(conn, self.view, self.tables)
            position = await start_tracking(conn, self.view.name)
            self._report(position)
            while not stop.is_set():
                upto = await next_upto(conn, position, self.batch_size)
                if upto is None:
                    self.progress.head, self.progress.lag_seconds = position, 0.0
                    await lock_conn.execute("SELECT 1")  # still the leader's session?
                    await wait_for_news(stop, listen_conn, self.poll_interval)
                    continue
                await self._measure_lag(conn, position, upto)
                async with conn.transaction():
                    await self.view.apply(conn, position, upto, self.tables)
                    await advance(conn, self.view.name, position, upto)
                self.progress.applied += 1
                position = upto
                self._report(position)

    async def _measure_lag(self, conn: psycopg.AsyncConnection[Any], after: int,
                           upto: int) -> None:
        cur = await conn.execute(
            "SELECT (SELECT max(notification_id) FROM ssot_events),"
            " (SELECT recorded_at FROM ssot_events WHERE notification_id > %s"
            "  ORDER BY notification_id LIMIT 1)", (after,), prepare=True)
        row = await cur.fetchone()
        assert row is not None
        self.progress.head = int(row[0] or upto)
        oldest: datetime | None = row[1]
        self.progress.lag_seconds = 0.0 if oldest is None else max(
            0.0, (datetime.now(UTC) - oldest).total_seconds())

    def _report(self, position: int) -> None:
        self.progress.position = position
        self.progress.last_error = None
        self.progress.changed.set()
        self.progress.changed = asyncio.Event()


def instrument(meter: Meter, progress: Callable[[], Iterable[ViewProgress]]) -> None:
    """OpenTelemetry gauges of every view's position and lag."""

    def gauge(value: Callable[[ViewProgress], float]
              ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        return lambda _options: [Observation(value(p), {"view": p.name}) for p in progress()]

    meter.create_observable_gauge("ssot.view.position", [gauge(lambda p: p.position)],
                                  unit="{position}")
    meter.create_observable_gauge("ssot.view.lag.events", [gauge(lambda p: p.lag_events)],
                                  unit="{event}")
    meter.create_observable_gauge("ssot.view.lag.seconds", [gauge(lambda p: p.lag_seconds)],
                                  unit="s")

