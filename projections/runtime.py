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

A view whose fold is one statement (``StatementView``: ``namespace_stats``, the KV
mirror's table) gives its common table expressions instead, and the runner sends them
with the advance as one statement, which is its own transaction (no BEGIN, COMMIT or
pipeline; it divides by the rows the advance moved, so it fails whole when the view has
moved):

    WITH _moved AS (UPDATE projection_tracking SET notification_id = upto
                     WHERE application_name = view AND notification_id = after
                     RETURNING 1),
         <the view's expressions>
    SELECT 1 / (SELECT count(*) FROM _moved)::int

``projection_tracking`` is the `eventsourcing` library's single-row tracking table (its
``PostgresTrackingRecorder`` reads it); the update is guarded on the position the runner
started from, so two runners of one view, or a runner racing a rebuild's swap, can never
apply a range twice: the loser's transaction fails and it reloads its position.

Positions come from the events table: ids are assigned and committed in order under the
library's table lock, so once position P is visible every position below it is settled
(committed, or a gap forever). The runner takes its ranges from the process's shared log
tail (``ledger/log_tail.py``: woken by the log's NOTIFY, polling slowly too, so a lost
notification never stalls a view), or reads them itself while behind it; one runner per
view leads (its lease, ``ledger/leadership.py``). A view that folds events in Python
(``EventView``) is handed the range's events, decoded once for every follower.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar, Protocol

import psycopg

from nexus_ssot.ledger.errors import SchemaBehind
from nexus_ssot.ledger.events import TYPE_OF_TOPIC
from nexus_ssot.ledger.following import Following, followed
from nexus_ssot.ledger.leadership import Lease, LeaseLost
from nexus_ssot.ledger.log_tail import LogEvent, read_range
from nexus_ssot.ledger.log_tail import head_position as head_position  # the views' too
from nexus_ssot.ledger.redaction import redact_url
from nexus_ssot.ledger.stopping import sleep_unless_stopped

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


#: Seconds a view's runner waits after a range that caught up, before taking the next
#: (``ViewRunner.linger``), unless the view says otherwise with a ``linger`` of its own.
LINGER = 0.02


class View(Protocol):
    """What the runtime needs of a view module's view. A view may also set ``linger``
    (seconds, a class attribute): how stale it may be allowed to get under a trickle of
    writes, to fold fewer, longer ranges (``LINGER`` when it does not say)."""

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


class StatementView(View, Protocol):
    """A view whose fold of a range is one statement's common table expressions: the
    runner runs them with the guarded advance as one statement, its own transaction in
    autocommit (``apply_statement``): one round trip, no BEGIN, COMMIT or pipeline. A view
    whose statement reads the range from the database itself may set ``reads_events =
    False`` (a class attribute): the runner then hands it no events and, behind the log's
    tail, reads only where each range ends (``LogTail.range_after``)."""

    async def range_statement(self, conn: psycopg.AsyncConnection[Any], after: int,
                              upto: int, t: Tables, events: Sequence[LogEvent]
                              ) -> tuple[bytes, dict[str, Any]] | None:
        """What folds ``events`` (every event of ``(after, upto]``) into ``t``: its common
        table expressions (``name AS (...)``, comma-separated; ``%(after)s`` and
        ``%(upto)s`` are the range) and their other parameters, or None when the range
        changes nothing of ``t``. Anything the range needs outside PostgreSQL is done here,
        before the range commits; ``conn`` is in autocommit, outside any transaction."""
        ...


class EventView(View, Protocol):
    """A view folded in Python: the runner hands it the range's events as read."""

    async def apply_events(self, conn: psycopg.AsyncConnection[Any], after: int, upto: int,
                           t: Tables, events: Sequence[LogEvent]) -> None:
        """Fold ``events`` (every event of ``(after, upto]``) into ``t``, inside the
        caller's transaction."""
        ...


# --- reading the log (for views folded in Python) -------------------------------------


async def read_log(conn: psycopg.AsyncConnection[Any], after: int, upto: int
                   ) -> list[LogEvent]:
    """The events of ``(after, upto]``."""
    events: list[LogEvent] = await read_range(conn, after, upto, 2**62)
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


async def advance(conn: psycopg.AsyncConnection[Any], name: str, after: int,
                  upto: int) -> None:
    """Move the view's position from ``after`` to ``upto`` (inside the view's
    transaction); raise ``TrackingConflict`` if it is no longer at ``after``."""
    cur = await conn.execute(
        f"UPDATE {TRACKING_TABLE} SET notification_id = %s"
        " WHERE application_name = %s AND notification_id = %s", (upto, name, after),
        prepare=True)
    if cur.rowcount != 1:
        raise TrackingConflict(f"view {name} is no longer at position {after}")


async def apply_range(conn: psycopg.AsyncConnection[Any], name: str, after: int, upto: int,
                      fold: Callable[[], Awaitable[None]]) -> None:
    """``fold`` (the view's statements) and ``advance`` in one transaction, sent with its
    COMMIT in one round trip (pipeline mode: the guarded advance fails the transaction
    by itself when the view has moved, so the COMMIT queued after it is skipped, with no
    wait for a row count in between); ``TrackingConflict`` if the view is no longer at
    ``after`` (nothing of the range is then committed)."""
    try:
        async with conn.pipeline(), conn.transaction():
            await fold()
            await conn.execute(_with_advance(None), {"after": after, "upto": upto,
                                                     "view": name}, prepare=True)
    except psycopg.errors.DivisionByZero as e:
        await conn.rollback()  # (the failed transaction is still open: its COMMIT skipped)
        await _conflict_or_own(conn, name, after, e)


async def _conflict_or_own(conn: psycopg.AsyncConnection[Any], name: str, after: int,
                           e: psycopg.errors.DivisionByZero) -> None:
    """Raise ``TrackingConflict`` for a guarded advance that failed, or ``e`` itself: the
    view's own statements may divide by zero too, told apart by where the view is."""
    if await tracked_position(conn, name) != after:
        raise TrackingConflict(f"view {name} is no longer at position {after}") from e
    raise e


@functools.lru_cache(maxsize=64)
def _with_advance(ctes: bytes | None) -> bytes:
    """A view's common table expressions and the guarded advance as one statement."""
    advance = (b"_moved AS (UPDATE " + TRACKING_TABLE.encode()
               + b" SET notification_id = %(upto)s WHERE application_name = %(view)s"
               b" AND notification_id = %(after)s RETURNING 1)")
    # the advance first: pg_stat_activity shows a statement's first 1 KB
    return (b"WITH " + advance + (b", " + ctes if ctes else b"")
            + b" SELECT 1 / (SELECT count(*) FROM _moved)::int")


async def apply_statement(conn: psycopg.AsyncConnection[Any], name: str, after: int,
                          upto: int, fold: tuple[bytes, dict[str, Any]] | None) -> None:
    """A ``StatementView``'s ``fold`` (its common table expressions and parameters; None:
    nothing to fold) and the advance of its position from ``after`` to ``upto``, as one
    statement (``conn`` in autocommit: one transaction, one round trip);
    ``TrackingConflict`` if the view is no longer at ``after`` (nothing is then
    committed)."""
    ctes, params = fold if fold is not None else (None, {})
    try:
        await conn.execute(_with_advance(ctes),
                           {**params, "after": after, "upto": upto, "view": name},
                           prepare=True)
    except psycopg.errors.DivisionByZero as e:
        await _conflict_or_own(conn, name, after, e)


@functools.lru_cache(maxsize=64)
def _in_transaction(ctes: bytes) -> bytes:
    return b"WITH " + ctes + b" SELECT 1"


async def apply_ctes(conn: psycopg.AsyncConnection[Any], ctes: bytes,
                     params: dict[str, Any]) -> None:
    """A ``StatementView``'s common table expressions, run in the caller's transaction
    without the advance (a rebuild, a check: their callers move the position)."""
    await conn.execute(_in_transaction(ctes), params, prepare=True)


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


async def create_tables(conn: psycopg.AsyncConnection[Any], view: View, t: Tables) -> None:
    if t.schema:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{t.schema}"')
    await conn.execute(view.ddl(t).encode())


async def relation_exists(conn: psycopg.AsyncConnection[Any], quoted: str) -> bool:
    """Whether the table or index ``quoted`` (a quoted, possibly qualified name) exists."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (quoted,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def ensure_tables(conn: psycopg.AsyncConnection[Any], view: View, t: Tables) -> None:
    """Create the view's tables unless they all exist: a runner under a service role, which
    may not change the schema, finds them made by ``ssot migrate`` (even ``IF NOT EXISTS``
    needs that right)."""
    for quoted in t.values():
        if not await relation_exists(conn, quoted):
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


#: Seconds before a failed view tries again, doubling to the last while it keeps failing.
_FIRST_RETRY, _LAST_RETRY = 0.5, 10.0


class ViewRunner:
    """Keeps one view up to date with the log, exactly once, until stopped."""

    def __init__(self, database_url: str, view: View, *, batch_size: int = 1000,
                 poll_interval: float = 1.0, linger: float | None = None,
                 gather: float = 0.0) -> None:
        self.database_url = database_url
        self.view = view
        #: The log tail's gather (``LogTail``) when it runs on a following of its own
        #: (``ssot project``); run on a shared one, that one's.
        self.gather = gather
        self.tables = Tables(view.tables)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        #: Seconds at least between two ranges applied: under a steady trickle of writes
        #: (one event per commit) a range then holds the events of ``linger`` seconds,
        #: not one — each range costs two round trips and a wake-up whatever its size.
        self.linger = linger if linger is not None else float(getattr(view, "linger", LINGER))
        self.progress = ViewProgress(view.name)

    async def run(self, stop: asyncio.Event, following: Following | None = None) -> None:
        """Lead (or stand by for) the view and keep it current; survives database
        outages by reconnecting. With ``following``, on the log tail and leases of the
        process's other followers."""

        async def role(following: Following) -> None:
            backoff, applied = _FIRST_RETRY, self.progress.applied
            while not stop.is_set():
                try:
                    await self._lead(stop, following)
                except (psycopg.OperationalError, TrackingConflict, LeaseLost, OSError) as e:
                    self.progress.last_error = redact_url(str(e))
                    log.warning("view %s: %s; resuming", self.view.name,
                                self.progress.last_error)
                    await sleep_unless_stopped(stop, 0.5)
                except Exception as e:  # the view's own failure (a table gone, a bug):
                    # the process's other followers share this loop and keep running;
                    # this view retries, less often while it fails without progress
                    if self.progress.applied != applied:
                        backoff, applied = _FIRST_RETRY, self.progress.applied
                    self.progress.last_error = redact_url(f"{type(e).__name__}: {e}")
                    log.error("view %s failed: %s; retrying in %.1fs", self.view.name,
                              self.progress.last_error, backoff)
                    await sleep_unless_stopped(stop, backoff)
                    backoff = min(backoff * 2, _LAST_RETRY)

        await followed(self.database_url, role, following, stop, self.poll_interval,
                       gather=self.gather)

    async def _lead(self, stop: asyncio.Event, following: Following) -> None:
        async with following.leases.lead(_LOCK_NAMESPACE, self.view.name, stop) as lease:
            if lease is None:
                return
            self.progress.leader = True
            try:
                await self._follow(stop, lease, following)
            finally:
                self.progress.leader = False

    async def _follow(self, stop: asyncio.Event, lease: Lease, following: Following) -> None:
        tail = following.tail
        apply_events = getattr(self.view, "apply_events", None)
        range_statement = getattr(self.view, "range_statement", None)
        async with await psycopg.AsyncConnection.connect(
                self.database_url, autocommit=True) as conn:
            await ensure_tables(conn, self.view, self.tables)
            position = await start_tracking(conn, self.view.name)
            self._report(position)
            reads_events = range_statement is None or getattr(self.view, "reads_events", True)
            while not stop.is_set():
                events: Sequence[LogEvent] = ()
                if reads_events:
                    events = await tail.events_after(conn, position, self.batch_size)
                    found = (events[-1].position, events[0].recorded_at, len(events)) \
                        if events else None
                else:
                    found = await tail.range_after(conn, position, self.batch_size)
                if found is None:
                    self.progress.head, self.progress.lag_seconds = position, 0.0
                    lease.check()  # still the leader?
                    await tail.wait(stop, position, tail.idle_timeout(self.poll_interval))
                    continue
                upto, first_at, count = found
                self._measure_lag(first_at, max(tail.head, upto))
                if range_statement is not None:  # one statement, its own transaction
                    await apply_statement(conn, self.view.name, position, upto,
                                          await range_statement(conn, position, upto,
                                                                self.tables, events))
                else:
                    # BEGIN, the view's statements, the guarded advance and the COMMIT go
                    # in one round trip (pipeline mode)
                    await apply_range(conn, self.view.name, position, upto, (
                        partial(apply_events, conn, position, upto, self.tables, events)
                        if apply_events is not None
                        else partial(self.view.apply, conn, position, upto, self.tables)))
                self.progress.applied += 1
                position = upto
                self._report(position)
                if count < self.batch_size:  # caught up: let the next range fill
                    await sleep_unless_stopped(stop, self.linger)

    def _measure_lag(self, first_at: datetime, head: int) -> None:
        """Lag before a range whose first event committed at ``first_at``."""
        self.progress.head = head
        self.progress.lag_seconds = max(0.0, (datetime.now(UTC) - first_at).total_seconds())

    def _report(self, position: int) -> None:
        self.progress.position = position
        self.progress.last_error = None
        self.progress.changed.set()
        self.progress.changed = asyncio.Event()

