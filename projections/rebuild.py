"""Rebuilding views from the log, point-in-time copies of them, and where they stand.

A rebuild folds the whole log into shadow tables (``<table>__rebuild``) beside the live
ones, a batch of events per transaction, tracked as ``<view>@rebuild`` in
``projection_tracking`` in the same transaction, so an interrupted rebuild (Ctrl-C,
SIGKILL, a lost connection) resumes where it stopped. Once the shadow has caught up with
the log it is swapped in, in one transaction:

    LOCK TABLE ssot_events IN EXCLUSIVE MODE            -- inline views: writers wait
    LOCK TABLE <live tables> IN ACCESS EXCLUSIVE MODE    -- runner and readers wait
    SELECT … FROM projection_tracking … FOR UPDATE       -- async views: the live row
    fold the last range into the shadow
    ALTER TABLE t RENAME TO t__old; ALTER TABLE t__rebuild RENAME TO t; DROP TABLE t__old
    give the shadow's indexes and constraints the live names (migrations name them)
    live position := the shadow's; DELETE the @rebuild row
    COMMIT

A reader blocks for the swap and then reads the new table (PostgreSQL looks a name up
again after waiting for its lock, and a READ COMMITTED statement takes its snapshot
after that), never an empty or half-built one. (A REPEATABLE READ transaction whose
snapshot predates the swap would see the new table without the rows committed after it:
take the tables' lock before the snapshot, as ``ssot check`` does.)

The swap takes the tables before the tracking row, the order in which a runner takes
them (it writes its tables, then moves its row), so the two queue rather than deadlock;
a runner that held a range meanwhile fails its guarded advance (``TrackingConflict``) and
reloads its position. Inline views are written by ``ssot_append`` in every write's
transaction: the swap holds the events table's lock, so no write commits between the
last range and the rename, and the function's cached plans are invalidated by the rename
and find the new tables. A swap that cannot get a lock soon lets go and tries again.

Views with side effects (``side_effects``) have them switched off (``effects = False``)
while folding; after the swap their ``reconcile`` repairs what the live runner skipped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg import errors, sql

from nexus_ssot.ledger.settings import Settings

from . import views as async_views
from .entry_at import position_at
from .inline import INLINE_VIEWS
from .runtime import (
    TRACKING_TABLE,
    Tables,
    View,
    advance,
    create_tables,
    head_position,
    next_upto,
    relation_exists,
    start_tracking,
    tracked_position,
)
from .shadow_indexes import CONSTRAINTS, INDEXES, by_definition
from .shadow_indexes import build as build_indexes
from .shadow_indexes import defer as defer_indexes
from .views import SQL_VIEWS

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]

SHADOW = "__rebuild"
OLD = "__old"
#: The tracking row of a view's rebuild is ``<view>@rebuild``.
REBUILDING = "@rebuild"
#: Events folded per transaction. A fold costs about one upsert per entry written in the
#: range, so a range that holds several versions of an entry costs less per event: on 1M
#: events of 100k entries, each written again every 100k events, 41k events/s in batches
#: of 20,000 (every event its entry's last in the range), 107k/s in batches of 250,000.
#: An interrupted rebuild loses at most one batch, and a fold with Python (the KV mirror)
#: holds at most one decoded event per entry of the batch.
DEFAULT_BATCH = 250_000
#: The comment that marks a schema as a copy made here (``--replace`` drops no other).
COPY_MARK = "ssot replay copy"

_REBUILD_LOCK = 0x5552 << 32  # advisory locks "one rebuild per view" (+ crc32 of the name)
# The longest a swap waits for a lock before it lets go and retries: for the log's lock,
# the writes in flight; for the live tables, their readers (and while it waits, everyone
# queued behind it waits: writers, for an inline view, since it holds the log's lock).
_LOG_LOCK_TIMEOUT = "3s"
#: Seconds a swap waits for the live tables (a runner in the middle of a range holds them)
#: before it lets go and tries again, so readers queued behind it are not held longer.
TABLES_LOCK_WAIT = 0.5
_SWAP_ATTEMPTS = 20
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def registry() -> dict[str, Callable[[Settings], View]]:
    """Every view a rebuild knows, each made from the settings: the inline views, the
    asynchronous ones, then those with an outside service (``views.SERVICE_VIEWS``, when
    the registry has them; they raise ``not_configured()`` without their service)."""
    def plain(make: Callable[[], View]) -> Callable[[Settings], View]:
        return lambda _settings: make()

    makers: dict[str, Callable[[], View]] = {**INLINE_VIEWS, **SQL_VIEWS}
    found = {name: plain(make) for name, make in makers.items()}
    found.update(getattr(async_views, "SERVICE_VIEWS", {}))
    return found


def not_configured() -> tuple[type[Exception], ...]:
    """What a view's constructor raises when its outside service is not configured."""
    found = getattr(async_views, "NotConfigured", None)
    return (found,) if found is not None else ()


def is_inline(view: View | str) -> bool:
    """Whether the writer keeps the view (a view, or its name) in its transactions."""
    return (view if isinstance(view, str) else view.name) in INLINE_VIEWS


class TargetRefused(ValueError):
    """A ``--until`` or ``--into`` that cannot be used; ``field`` names the option."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RebuildBusy(RuntimeError):
    """Another process is rebuilding the view."""


class SwapFailed(RuntimeError):
    """The swap could not take its locks in any of its attempts (long readers)."""


@dataclass(frozen=True)
class Progress:
    """How far a fold is: events folded by this run, of an estimated total that grows
    with live traffic, at ``rate`` events per second; ``position`` reached."""

    view: str
    done: int
    total: int
    rate: float
    position: int


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class Rebuilt:
    """The outcome of a rebuild: ``complete`` (swapped in at ``position``) or stopped
    with the shadow at ``position`` (run again to resume)."""

    view: str
    complete: bool
    position: int
    resumed_from: int
    events: int
    seconds: float
    swap_seconds: float = 0.0
    #: The view's reconcile report, for a view with side effects.
    reconciled: Any = None
    reconcile_error: str | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Copied:
    """A point-in-time copy: ``views`` as of ``position`` in ``schema``."""

    schema: str
    position: int
    views: tuple[str, ...]
    events: int
    seconds: float


@dataclass(frozen=True)
class ViewStatus:
    """Where a view stands: ``state`` is current, behind, rebuilding (a ``@rebuild``
    row exists; ``rebuild_position`` is its shadow's) or never run."""

    view: str
    kind: str
    position: int | None
    head: int
    lag_events: int
    lag_seconds: float
    state: str
    rebuild_position: int | None


#: How the sessions of rebuilds and copies show in ``pg_stat_activity``.
APPLICATION_NAME = "ssot replay"


def _connect(database_url: str) -> Any:
    return psycopg.AsyncConnection.connect(database_url, autocommit=True,
                                           application_name=APPLICATION_NAME)


async def _lock_rebuild(conn: Conn, view: str, row: str) -> None:
    """Hold the rebuild's advisory lock for this session, waiting a few seconds for a
    killed run's session to end (the server notices a dead client only when it next
    writes to it)."""
    deadline = time.monotonic() + 5.0
    while True:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)",
                                 (_REBUILD_LOCK + zlib.crc32(row.encode()),))
        locked = await cur.fetchone()
        if locked and locked[0]:
            return
        if time.monotonic() > deadline:
            raise RebuildBusy(f"view {view} is being rebuilt by another process")
        await asyncio.sleep(0.2)


def _quiet(view: View) -> None:
    """Switch a view's side effects off for a fold (the view says how: ``effects``)."""
    if view.side_effects:
        cast(Any, view).effects = False


# --- folding --------------------------------------------------------------------------


async def _count(conn: Conn, after: int, upto: int) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM ssot_events WHERE notification_id > %s AND notification_id <= %s",
        (after, upto), prepare=True)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


@dataclass
class _Fold:
    """Folds ranges of the log into ``t`` after ``position``; with ``row``, each batch
    moves that tracking row in its transaction."""

    conn: Conn
    view: View
    t: Tables
    position: int
    batch: int
    row: str | None = None
    until: int | None = None
    report: ProgressCallback | None = None
    done: int = 0
    started: float = 0.0

    async def run(self, stop: asyncio.Event | None = None) -> bool:
        """Fold up to the head (or ``until``); False when ``stop`` came first."""
        self.started = self.started or time.monotonic()
        while True:
            if stop is not None and stop.is_set():
                return False
            upto = await next_upto(self.conn, self.position, self.batch, self.until)
            if upto is None:
                return True
            async with self.conn.transaction():
                await self.view.apply(self.conn, self.position, upto, self.t)
                if self.row is not None:
                    await advance(self.conn, self.row, self.position, upto)
                self.done += await _count(self.conn, self.position, upto)
            self.position = upto
            if self.report is not None:
                head = self.until or await head_position(self.conn)
                elapsed = time.monotonic() - self.started
                self.report(Progress(self.view.name, self.done,
                                     self.done + max(0, head - upto),
                                     self.done / elapsed if elapsed > 0 else 0.0, upto))


# --- rebuild and swap -----------------------------------------------------------------


async def rebuild(database_url: str, view: View, *, batch: int = DEFAULT_BATCH,
                  restart: bool = False, progress: ProgressCallback | None = None,
                  stop: asyncio.Event | None = None,
                  lock_wait: float = TABLES_LOCK_WAIT) -> Rebuilt:
    """Rebuild ``view`` from position 0 into shadow tables (resuming an interrupted
    rebuild unless ``restart``), catch up with the log and swap it in (each attempt
    waiting up to ``lock_wait`` seconds for the live tables)."""
    shadow, live = Tables(view.tables, suffix=SHADOW), Tables(view.tables)
    row = view.name + REBUILDING
    _quiet(view)
    async with await _connect(database_url) as conn:
        await _lock_rebuild(conn, view.name, row)
        start = await _prepare(conn, view, shadow, live, row, restart)
        fold = _Fold(conn, view, shadow, start, batch, row=row, report=progress)
        if not await fold.run(stop):
            return Rebuilt(view.name, False, fold.position, start, fold.done,
                           time.monotonic() - fold.started)
        await build_indexes(conn, shadow, live)  # over the folded tables, once
        await conn.execute(f"ANALYZE {', '.join(shadow.values())}")  # plans for day one
        swap_seconds = await _swap(conn, view, fold, live, lock_wait)
        reconciled: Any = None
        reconcile_error = None
        reconcile = getattr(view, "reconcile", None)
        if reconcile is not None:  # the effects the live runner skipped past the swap
            try:
                reconciled = await reconcile(conn) or {}
            except Exception as e:  # the swap stands; say what is left to do
                reconcile_error = f"{type(e).__name__}: {e}"
        return Rebuilt(view.name, True, fold.position, start, fold.done,
                       time.monotonic() - fold.started, swap_seconds, reconciled,
                       reconcile_error)


async def _prepare(conn: Conn, view: View, shadow: Tables, live: Tables, row: str,
                   restart: bool) -> int:
    """The shadow's position: its tracking row's, or 0 on fresh (empty) shadow tables,
    made without their secondary indexes (``shadow_indexes``)."""
    async with conn.transaction():
        position = await tracked_position(conn, row)
        complete = all([await relation_exists(conn, q) for q in shadow.values()])
        if restart or position is None or not complete:
            await conn.execute(f"DROP TABLE IF EXISTS {', '.join(shadow.values())}")
            await conn.execute(f"DELETE FROM {TRACKING_TABLE} WHERE application_name = %s",
                               (row,))
            await create_tables(conn, view, shadow)
            await defer_indexes(conn, shadow, live)
            position = await start_tracking(conn, row)
    return position


async def _swap(conn: Conn, view: View, fold: _Fold, live: Tables,
                lock_wait: float) -> float:
    """Swap the caught-up shadow in; the seconds the live tables were locked."""
    inline = is_inline(view)
    fold.report = None
    for attempt in range(_SWAP_ATTEMPTS):
        await fold.run()  # the bulk of the news, before taking any lock
        done = fold.done
        try:
            async with conn.transaction():
                if inline:
                    await conn.execute(f"SET LOCAL lock_timeout = '{_LOG_LOCK_TIMEOUT}'")
                    await conn.execute("LOCK TABLE ssot_events IN EXCLUSIVE MODE")
                locked = time.monotonic()
                existing = [n for n in live if await relation_exists(conn, live[n])]
                await conn.execute(f"SET LOCAL lock_timeout = '{round(lock_wait * 1000)}ms'")
                if existing:
                    await conn.execute(f"LOCK TABLE {', '.join(live[n] for n in existing)}"
                                       " IN ACCESS EXCLUSIVE MODE")
                if not inline:
                    await conn.execute(f"SELECT 1 FROM {TRACKING_TABLE}"
                                       " WHERE application_name = %s FOR UPDATE", (view.name,))
                await fold.run()
                for name in live:
                    await _rename(conn, fold.t, live, name, name in existing)
                if not inline:
                    await conn.execute(
                        f"INSERT INTO {TRACKING_TABLE} (application_name, notification_id)"
                        " VALUES (%s, %s) ON CONFLICT (application_name)"
                        " DO UPDATE SET notification_id = EXCLUDED.notification_id",
                        (view.name, fold.position))
                await conn.execute(f"DELETE FROM {TRACKING_TABLE} WHERE application_name = %s",
                                   (fold.row,))
            return time.monotonic() - locked
        except (errors.LockNotAvailable, errors.DeadlockDetected) as e:
            # rolled back, the last ranges too: back to the shadow's committed position
            assert fold.row is not None
            fold.position, fold.done = await tracked_position(conn, fold.row) or 0, done
            log.warning("view %s: swap attempt %d: %s; retrying", view.name, attempt + 1,
                        str(e).strip())
            await asyncio.sleep(min(0.1 * 2 ** attempt, 2.0))
    raise SwapFailed(f"view {view.name}: could not lock its tables in {_SWAP_ATTEMPTS}"
                     " attempts (long transactions reading them?); the rebuild is kept:"
                     " run it again to retry")


async def _rename(conn: Conn, shadow: Tables, live: Tables, name: str, existed: bool) -> None:
    """Put the shadow table ``name`` in place of the live one (dropped), its indexes and
    constraints renamed to the live ones' names, matched by definition."""
    target, source = live.plain[name], shadow.plain[name]
    indexes: dict[str, list[str]] = {}
    constraints: dict[str, list[str]] = {}
    if existed:
        indexes = await by_definition(conn, INDEXES, live[name])
        constraints = await by_definition(conn, CONSTRAINTS, live[name])
        await _same_rights(conn, live[name], shadow[name])
        old = Tables([name], suffix=OLD)
        await conn.execute(f"ALTER TABLE {live[name]} RENAME TO {old[name]}")
        await conn.execute(f"ALTER TABLE {shadow[name]} RENAME TO {live[name]}")
        await conn.execute(f"DROP TABLE {old[name]}")
    else:
        await conn.execute(f"ALTER TABLE {shadow[name]} RENAME TO {live[name]}")

    def wanted(found: str, matches: list[str]) -> str:
        if matches:
            return matches.pop(0)
        return target + found[len(source):] if found.startswith(source) else found

    for definition, names in (await by_definition(conn, INDEXES, live[name])).items():
        for index in names:
            new = wanted(index, indexes.get(definition, []))
            if new != index and not await relation_exists(conn, f'"{new}"'):
                await conn.execute(f'ALTER INDEX "{index}" RENAME TO "{new}"')
    for definition, names in (await by_definition(conn, CONSTRAINTS, live[name])).items():
        for constraint in names:
            new = wanted(constraint, constraints.get(definition, []))
            if new != constraint:
                await conn.execute(f'ALTER TABLE {live[name]} RENAME CONSTRAINT'
                                   f' "{constraint}" TO "{new}"')


async def _same_rights(conn: Conn, live: str, shadow: str) -> None:
    """Give the shadow table the live one's owner and grants (a service role's rights on
    a view, ``ledger/roles.py``), so that they survive the swap."""
    cur = await conn.execute(_OWNER, (live, shadow))
    row = await cur.fetchone()
    if row and row[0] != row[1]:
        await conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(
            sql.SQL(shadow), sql.Identifier(row[0])))
    cur = await conn.execute(_GRANTS, (live,))
    for privilege, grantee in await cur.fetchall():
        await conn.execute(sql.SQL("GRANT {} ON TABLE {} TO {}").format(
            sql.SQL(privilege), sql.SQL(shadow),
            sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee)))


_OWNER = ("SELECT (SELECT r.rolname FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
          "  WHERE c.oid = to_regclass(%s)),"
          " (SELECT r.rolname FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
          "  WHERE c.oid = to_regclass(%s))")
# Every privilege granted on a table but its owner's own (grantee 0 is PUBLIC).
_GRANTS = (
    "SELECT a.privilege_type, r.rolname FROM pg_class c, aclexplode(c.relacl) a"
    " LEFT JOIN pg_roles r ON r.oid = a.grantee"
    " WHERE c.oid = to_regclass(%s) AND a.grantee <> c.relowner ORDER BY 2, 1"
)

# --- point-in-time copies -------------------------------------------------------------


async def position_of(database_url: str, until: int | datetime | None) -> int:
    """A position as given (refused beyond the log's head), the last position committed
    at or before a time (as the as-of reads map times, through the history's commit-time
    index), or the head (None)."""
    async with await _connect(database_url) as conn:
        head: int = await head_position(conn)
        if until is None:
            return head
        if isinstance(until, datetime):
            return await position_at(conn, until)
        if until > head:
            raise TargetRefused("--until", f"position {until} is beyond the log's head"
                                f" ({head})")
        return until


async def copy_views(database_url: str, views: Sequence[View], *, until: int, schema: str,
                     replace: bool = False, batch: int = DEFAULT_BATCH,
                     progress: ProgressCallback | None = None,
                     stop: asyncio.Event | None = None) -> Copied | None:
    """Fold the log up to ``until`` into fresh tables of the views in ``schema``, all in
    one transaction: the copy is complete or absent. None when ``stop`` came first."""
    if not _SCHEMA.fullmatch(schema):
        raise TargetRefused("--into", f"{schema!r} is not a plain lower-case SQL identifier")
    started = time.monotonic()
    events = 0
    async with await _connect(database_url) as conn, conn.transaction() as tx:
        await _claim_schema(conn, schema, replace)
        for view in views:
            _quiet(view)
            t = Tables(view.tables, schema=schema)
            await create_tables(conn, view, t)
            fold = _Fold(conn, view, t, 0, batch, until=until, report=progress)
            if not await fold.run(stop):
                raise psycopg.Rollback(tx)
            events = max(events, fold.done)
        names = ", ".join(v.name for v in views)
        await conn.execute(f"COMMENT ON SCHEMA \"{schema}\" IS '{COPY_MARK}: {names}"
                           f" as of position {until}'")
        return Copied(schema, until, tuple(v.name for v in views), events,
                      time.monotonic() - started)
    return None  # stopped: rolled back


async def _claim_schema(conn: Conn, schema: str, replace: bool) -> None:
    """Make sure ``schema`` may receive a copy: absent, empty, or (``replace``) a copy
    made here, then dropped. Never the ledger's own schema or a system one."""
    if schema in ("public", "information_schema") or schema.startswith("pg_"):
        raise TargetRefused("--into", f"{schema} is not a schema for a copy")
    cur = await conn.execute(
        "SELECT obj_description(n.oid, 'pg_namespace'),"
        " to_regclass(quote_ident(n.nspname) || '.ssot_events') IS NOT NULL,"
        " EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = n.oid)"
        " OR EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = n.oid)"
        " OR EXISTS (SELECT 1 FROM pg_type WHERE typnamespace = n.oid)"
        " FROM pg_namespace n WHERE n.nspname = %s", (schema,))
    row = await cur.fetchone()
    if row is None:
        return
    comment, ledger, occupied = row
    if ledger:
        raise TargetRefused("--into", f"schema {schema} holds the ledger itself")
    if not occupied:
        return
    if not replace:
        raise TargetRefused("--into", f"schema {schema} exists and is not empty; give"
                            " --replace to replace a copy made by ssot replay")
    if not (comment or "").startswith(COPY_MARK):
        raise TargetRefused("--into", f"schema {schema} was not made by ssot replay; it is"
                            " not replaced (drop it yourself if it should go)")
    await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# --- status ---------------------------------------------------------------------------


async def status(database_url: str, names: Sequence[str] | None = None) -> list[ViewStatus]:
    """Each view's position, lag (events and seconds since the oldest event it has not
    applied) and state. Inline views are current by construction (the writer keeps
    them in each write's transaction)."""
    async with await _connect(database_url) as conn:
        cur = await conn.execute(
            f"SELECT application_name, notification_id FROM {TRACKING_TABLE}")
        tracked = {name: int(position) for name, position in await cur.fetchall()}
        head = await head_position(conn)
        found = []
        for name in registry():
            if names and name not in names:
                continue
            inline = is_inline(name)
            position = head if inline else tracked.get(name)
            lag_seconds = 0.0
            if position is None or position < head:
                cur = await conn.execute(
                    "SELECT extract(epoch FROM clock_timestamp() - recorded_at)"
                    " FROM ssot_events WHERE notification_id > %s"
                    " ORDER BY notification_id LIMIT 1", (position or 0,))
                row = await cur.fetchone()
                lag_seconds = round(float(row[0]), 3) if row else 0.0
            rebuilding = tracked.get(name + REBUILDING)
            lag = head - (position or 0)
            state = ("rebuilding" if rebuilding is not None else "never run"
                     if position is None else "current" if lag == 0 else "behind")
            found.append(ViewStatus(name, "inline" if inline else "async", position, head,
                                    lag, lag_seconds, state, rebuilding))
        return found
