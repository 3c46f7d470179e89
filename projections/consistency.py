"""The consistency check: every view recomputed from the log and compared with the stored
one, per namespace, down to the row.

One REPEATABLE READ transaction gives one snapshot in which the log, the stored views and
the views' tracked positions agree: the inline views (written in the events' own
transactions) are compared up to the log's head in that snapshot, an asynchronous view up
to its tracked position. Each view is folded from position 0 into scratch tables of the
same shape in the session's temporary schema (no WAL, invisible to others, gone with the
session), and per table and namespace both sides are summarised as a row count and an
order-independent hash (the sum of the first 8 bytes of each row's md5, as a 64-bit
number). Namespaces whose summaries differ are drilled down by the table's primary key to
the rows that are missing, extra or different (a bounded number of examples each). The
transaction is rolled back: the check writes nothing.

Views are checked two at a time, on connections that import the first one's snapshot.
The check takes ACCESS SHARE locks only, which no writer waits for: on the live tables
before its snapshot, so a rebuild cannot swap a table between the snapshot and the reads
(the swap waits, within its own lock timeout); a bounded ``lock_timeout`` keeps a check
from queueing long behind a swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from nexus_ssot.ledger.addressing import check_namespace
from nexus_ssot.ledger.errors import InvalidInput
from nexus_ssot.ledger.namespace_settings import SETTINGS_NAMESPACE
from nexus_ssot.ledger.settings import Settings

from .inline import INLINE_VIEWS
from .runtime import Tables, View, head_position
from .views import SERVICE_VIEWS, SQL_VIEWS, NotConfigured

#: The scratch schema: the session's own temporary schema.
SCRATCH = "pg_temp"
#: Rows named per drifting (table, namespace), and namespaces drilled into per table.
EXAMPLES = 10
DRILLED_NAMESPACES = 50
#: Characters of a column's text kept in a drift example.
VALUE_CHARS = 200
#: How long a check waits for a table lock (a rebuild swapping a table) before giving up.
LOCK_TIMEOUT = "5s"
#: Views checked at a time (connections), and each one's memory for scratch tables.
JOBS = 2
TEMP_BUFFERS = "256MB"
#: The counts of a reconcile outcome that are drift.
_DRIFT_KINDS = ("missing", "stale", "extra", "differs")


# --- the report -----------------------------------------------------------------------


@dataclass
class RowDrift:
    """One row that differs between the stored view and the log's fold."""

    table: str
    namespace: str | None
    #: The primary key's columns other than the namespace, as text.
    key: dict[str, str]
    #: missing: the log has it, the view does not; extra: the reverse; differs: both have it.
    kind: Literal["missing", "extra", "differs"]
    #: For ``differs``, the columns that differ (text, truncated), each side.
    stored: dict[str, str | None] = field(default_factory=dict)
    log: dict[str, str | None] = field(default_factory=dict)


@dataclass
class NamespaceCheck:
    """One table's rows of one namespace: count and hash, stored and recomputed."""

    table: str
    namespace: str | None
    stored_rows: int
    log_rows: int
    stored_hash: str
    log_hash: str
    #: Rows that differ (counted when the namespace was drilled into; else None).
    drifting_rows: int | None = None

    @property
    def consistent(self) -> bool:
        return (self.stored_rows, self.stored_hash) == (self.log_rows, self.log_hash)


@dataclass
class ViewCheck:
    view: str
    inline: bool
    #: The log position the view was compared at (None: an async view never run).
    position: int | None
    namespaces: list[NamespaceCheck] = field(default_factory=list)
    drifts: list[RowDrift] = field(default_factory=list)
    #: What could not be compared row by row (a missing table or column, …).
    problems: list[str] = field(default_factory=list)
    #: Why the view was not checked (never run, or its service not configured here).
    skipped: str | None = None
    #: What the view's own ``reconcile(conn, dry_run=True)`` reported (``external``).
    external: Any = None
    external_consistent: bool = True
    seconds: float = 0.0

    @property
    def consistent(self) -> bool:
        return (not self.problems and self.external_consistent
                and all(n.consistent for n in self.namespaces))

    def drifting(self) -> list[NamespaceCheck]:
        return [n for n in self.namespaces if not n.consistent]


@dataclass
class ConsistencyReport:
    head: int
    views: list[ViewCheck]
    seconds: float = 0.0

    @property
    def consistent(self) -> bool:
        return all(v.consistent for v in self.views)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what ``--json`` and the HTTP route answer)."""
        views = []
        for v in self.views:
            views.append({
                "view": v.view, "inline": v.inline, "position": v.position,
                "consistent": v.consistent, "skipped": v.skipped, "seconds": round(v.seconds, 3),
                "namespaces": [{**asdict(n), "consistent": n.consistent}
                               for n in v.namespaces],
                "drifts": [asdict(d) for d in v.drifts], "problems": v.problems,
                "external": v.external,
            })
        return {"consistent": self.consistent, "head": self.head,
                "seconds": round(self.seconds, 3), "views": views}


# --- the views ------------------------------------------------------------------------


#: The views that need nothing to be built, inline views first.
_PLAIN: dict[str, Callable[[], View]] = {**INLINE_VIEWS, **SQL_VIEWS}


def view_names() -> list[str]:
    return [*_PLAIN, *SERVICE_VIEWS]


def check_view_names(names: Sequence[str] | None) -> None:
    """Raise ``InvalidInput`` (field ``view``) naming the first unknown view."""
    known = view_names()
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise InvalidInput(f"view: unknown view {unknown[0]!r}; the views are "
                           f"{', '.join(known)}", code="unknown_view", field="view")


def check_namespaces(namespaces: Sequence[str] | None) -> list[str] | None:
    """The namespaces to compare (None: all); ``InvalidInput`` (field ``namespace``) for
    one that is not a namespace's name."""
    if not namespaces:
        return None
    return [ns if ns == SETTINGS_NAMESPACE else check_namespace(ns) for ns in namespaces]


def views_for(names: Sequence[str] | None = None, settings: Settings | None = None
              ) -> list[tuple[str, View | str]]:
    """The views named (default: every view), each built from ``settings``, or why it
    cannot be (the outside service it needs is not configured here)."""
    check_view_names(names)
    chosen: list[tuple[str, View | str]] = [
        (name, make()) for name, make in _PLAIN.items() if not names or name in names]
    for name, make_with in SERVICE_VIEWS.items():
        if names and name not in names:
            continue
        if settings is None:
            chosen.append((name, "no settings given"))
            continue
        try:
            chosen.append((name, make_with(settings)))
        except NotConfigured as e:
            chosen.append((name, str(e)))
    return chosen


# --- the check ------------------------------------------------------------------------


async def check(database_url: str, names: Sequence[str] | None = None, *,
                settings: Settings | None = None, namespaces: Sequence[str] | None = None,
                examples: int = EXAMPLES, external: bool = False,
                jobs: int = JOBS) -> ConsistencyReport:
    """Check the views named (default: all) against the log, in one snapshot, ``jobs``
    views at a time (each on a connection of its own that shares the snapshot); compare
    only the rows of ``namespaces``, if given (the views are still folded whole). With
    ``external``, a view that has ``reconcile(conn, dry_run=True)`` (the KV mirror) also
    compares its outside copy with the stored state; that copy is live, not in the
    snapshot, so it reports a running mirror's lag as drift: use it at rest."""
    views = views_for(names, settings)
    only = check_namespaces(namespaces)
    started = time.monotonic()
    try:
        async with contextlib.AsyncExitStack() as stack:
            conn = await _session(stack, database_url)
            snapshot = await _take_snapshot(conn, await _resolve(conn, views))
            report = ConsistencyReport(snapshot.head, [])
            results: dict[str, ViewCheck] = {}
            todo: list[tuple[View, ViewCheck]] = []
            for name, view in views:
                if isinstance(view, str):
                    results[name] = ViewCheck(name, False, snapshot.tracked.get(name),
                                              skipped=f"not configured here: {view}")
                    continue
                inline = bool(getattr(view, "inline", False))
                position = snapshot.head if inline else snapshot.tracked.get(name)
                results[name] = ViewCheck(name, inline, position)
                if position is None:
                    results[name].skipped = "never run (no tracked position)"
                else:
                    todo.append((view, results[name]))

            async def work(c: psycopg.AsyncConnection[Any]) -> None:
                while todo:
                    view, result = todo.pop(0)
                    began = time.monotonic()
                    await _check_view(c, view, snapshot, only, examples, result)
                    if external:
                        await _reconcile(c, view, result)
                    result.seconds = time.monotonic() - began

            helpers = [await _session(stack, database_url, snapshot.id)
                       for _ in range(min(jobs, len(todo)) - 1)]
            async with asyncio.TaskGroup() as group:
                for c in (conn, *helpers):
                    group.create_task(work(c))
            report.views = [results[name] for name, _ in views]
    finally:
        for _, view in views:
            close = getattr(view, "close", None)
            if close is not None:
                await close()
    report.seconds = time.monotonic() - started
    return report


@dataclass
class _Snapshot:
    id: str  # pg_export_snapshot()
    head: int
    tracked: dict[str, int]
    #: Each live table's schema-qualified name (None: no such table).
    stored: dict[str, str | None]


async def _session(stack: contextlib.AsyncExitStack, database_url: str,
                   snapshot: str | None = None) -> psycopg.AsyncConnection[Any]:
    """A connection of the check, closed (its transaction rolled back: the scratch tables
    go with it) when ``stack`` closes. With ``snapshot``, in a REPEATABLE READ transaction
    importing it; without, in autocommit until ``_take_snapshot``."""
    conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    await stack.enter_async_context(conn)
    stack.push_async_callback(_discard, conn)
    # Session settings, before any temporary table: scratch indexes stay in memory, and
    # temporary tables are found last, so a view's unqualified names stay the live ones.
    await conn.execute(
        "SELECT set_config('temp_buffers', %s, false), set_config('lock_timeout', %s, false),"
        " set_config('search_path', current_setting('search_path') || ', pg_temp', false)",
        (TEMP_BUFFERS, LOCK_TIMEOUT))
    await conn.set_autocommit(False)
    await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    if snapshot is not None:
        await conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    return conn


async def _discard(conn: psycopg.AsyncConnection[Any]) -> None:
    """Roll the check's transaction back (before the connection's exit would commit)."""
    if not conn.closed and not conn.broken:
        await conn.rollback()


async def _resolve(conn: psycopg.AsyncConnection[Any], views: list[tuple[str, View | str]]
                   ) -> dict[str, str | None]:
    """Each live table's schema-qualified name (None: no such table), looked up before
    the check's transaction begins."""
    stored: dict[str, str | None] = {}
    for _, view in views:
        for table in view.tables if not isinstance(view, str) else ():
            stored[table] = await _qualified(conn, table)
    await conn.rollback()  # the lookups' transaction: the check's begins with its locks
    return stored


async def _take_snapshot(conn: psycopg.AsyncConnection[Any], stored: dict[str, str | None]
                         ) -> _Snapshot:
    """Lock the live tables against a rebuild's swap (ACCESS SHARE: no writer waits for
    it), then take the snapshot and export it: a swap cannot come between the snapshot
    and the reads."""
    locked = sorted({name for name in stored.values() if name is not None})
    if locked:
        await conn.execute(f"LOCK TABLE {', '.join(locked)} IN ACCESS SHARE MODE".encode())
    cur = await conn.execute("SELECT pg_export_snapshot()")  # the snapshot is taken here
    row = await cur.fetchone()
    assert row is not None
    head = await head_position(conn)
    cur = await conn.execute(
        "SELECT application_name, notification_id FROM projection_tracking")
    tracked = {str(name): int(position) for name, position in await cur.fetchall()}
    for table, name in stored.items():  # created meanwhile (a view's first run)?
        if name is None:
            stored[table] = await _qualified(conn, table)
    return _Snapshot(str(row[0]), head, tracked, stored)


async def _check_view(conn: psycopg.AsyncConnection[Any], view: View, snapshot: _Snapshot,
                      only: list[str] | None, examples: int, result: ViewCheck) -> None:
    assert result.position is not None
    if view.side_effects:
        view.effects = False  # type: ignore[attr-defined]  # fold into tables only
    scratch = Tables(view.tables, schema=SCRATCH)
    await conn.execute(view.ddl(scratch).encode())
    await _drop_plain_indexes(conn, scratch)
    await view.apply(conn, 0, result.position, scratch)
    for table in view.tables:
        live = snapshot.stored[table]
        if live is None:
            result.problems.append(f"table {table} does not exist")
            continue
        await _compare(conn, table, live, scratch[table], only, examples, result)


async def _reconcile(conn: psycopg.AsyncConnection[Any], view: View, result: ViewCheck
                     ) -> None:
    """The view's own comparison of its outside copy, if it has one."""
    reconcile = getattr(view, "reconcile", None)
    if reconcile is None:
        return
    try:
        async with conn.transaction():  # a savepoint: its failure is its own
            outcome = await reconcile(conn, dry_run=True)
    except psycopg.OperationalError:
        raise
    except Exception as e:  # the view's outside service failed to answer
        result.problems.append(f"its reconcile failed: {e}")
        return
    result.external = _plain(outcome)
    result.external_consistent = _consistent(outcome)


async def _compare(conn: psycopg.AsyncConnection[Any], table: str, live: str, scratch: str,
                   only: list[str] | None, examples: int, result: ViewCheck) -> None:
    columns = await _columns(conn, scratch)
    lacking = [c for c in columns if c not in await _columns(conn, live)]
    if lacking:
        result.problems.append(f"table {table} lacks column(s) {', '.join(lacking)}")
        return
    ns = _q("namespace") if "namespace" in columns else "NULL::text"
    row = f"ROW({', '.join(map(_q, columns))})::text"
    where = f" WHERE {ns} = ANY(%(only)s)" if only is not None and "namespace" in columns \
        else ""

    def summary(relation: str) -> str:
        return (f"SELECT {ns} AS ns, count(*) AS n, sum(('x' || left(md5({row}), 16))"
                f"::bit(64)::bigint) AS h FROM {relation}{where} GROUP BY 1")

    cur = await conn.execute(
        f"WITH s AS ({summary(live)}), r AS ({summary(scratch)})"
        " SELECT coalesce(s.ns, r.ns), coalesce(s.n, 0), coalesce(s.h, 0),"
        " coalesce(r.n, 0), coalesce(r.h, 0) FROM s FULL JOIN r ON s.ns = r.ns"
        " ORDER BY 1".encode(), {"only": only})
    namespaces = [NamespaceCheck(table, name, int(sn), int(rn), _hex(sh), _hex(rh))
                  for name, sn, sh, rn, rh in await cur.fetchall()]
    result.namespaces.extend(namespaces)
    drifting = [n for n in namespaces if not n.consistent][:DRILLED_NAMESPACES]
    if not drifting:
        return
    key = await _primary_key(conn, scratch)
    if not key:
        result.problems.append(f"table {table} has no primary key: drifting rows not named")
        return
    counts = await _drill(conn, table, live, scratch, columns, key,
                          [n.namespace for n in drifting], examples, result)
    for n in drifting:
        n.drifting_rows = counts.get(n.namespace, 0)


async def _drill(conn: psycopg.AsyncConnection[Any], table: str, live: str, scratch: str,
                 columns: list[str], key: list[str], namespaces: list[str | None],
                 examples: int, result: ViewCheck) -> dict[str | None, int]:
    """Name the differing rows of the namespaces given; their counts per namespace."""
    has_ns = "namespace" in columns
    ks = [columns.index(k) for k in key]
    n = len(columns)

    def side(relation: str) -> str:
        picked = ", ".join([*(f"{_q(k)} AS k{i}" for i, k in enumerate(key)),
                            *(f"{_q(c)}::text AS c{i}" for i, c in enumerate(columns))])
        where = f" WHERE {_q('namespace')} = ANY(%(ns)s)" if has_ns else ""
        return f"SELECT {picked} FROM {relation}{where}"

    ns = f"coalesce(s.c{columns.index('namespace')}, r.c{columns.index('namespace')})" \
        if has_ns else "NULL::text"
    order = ", ".join(f"coalesce(s.k{i}, r.k{i})" for i in range(len(key)))
    s_row = ", ".join(f"s.c{i}" for i in range(n))
    r_row = ", ".join(f"r.c{i}" for i in range(n))
    picked = ", ".join([
        *(f"coalesce(s.c{i}, r.c{i})" for i in ks),
        "s.k0 IS NULL", "r.k0 IS NULL",
        *(f"s.c{i} IS DISTINCT FROM r.c{i}" for i in range(n)),
        *(f"left(s.c{i}, {VALUE_CHARS + 1})" for i in range(n)),
        *(f"left(r.c{i}, {VALUE_CHARS + 1})" for i in range(n)),
    ])
    join = " AND ".join(f"s.k{i} = r.k{i}" for i in range(len(key)))
    query = f"""
        WITH s AS ({side(live)}), r AS ({side(scratch)}),
        d AS (
            SELECT {ns} AS ns, {picked},
                   row_number() OVER (PARTITION BY {ns} ORDER BY {order}) AS rn,
                   count(*) OVER (PARTITION BY {ns}) AS total
            FROM s FULL JOIN r ON {join}
            WHERE ROW({s_row}) IS DISTINCT FROM ROW({r_row}))
        SELECT * FROM d WHERE rn <= %(examples)s ORDER BY ns, rn"""
    cur = await conn.execute(query.encode(), {"ns": namespaces, "examples": examples})
    counts: dict[str | None, int] = {}
    named = [c for c in key if c != "namespace"]
    for r in await cur.fetchall():
        namespace, values = r[0], list(r[1:])
        keys, values = values[:len(key)], values[len(key):]
        missing, extra, values = values[0], values[1], values[2:]
        differs, values = values[:n], values[n:]
        stored_text, log_text = values[:n], values[n:2 * n]
        counts[namespace] = int(r[-1])
        kind: Literal["missing", "extra", "differs"] = (
            "missing" if missing else "extra" if extra else "differs")
        drift = RowDrift(table, namespace,
                         {c: str(v) for c, v in zip(key, keys, strict=True) if c in named},
                         kind)
        if kind == "differs":
            for i, column in enumerate(columns):
                if differs[i]:
                    drift.stored[column] = _clip(stored_text[i])
                    drift.log[column] = _clip(log_text[i])
        result.drifts.append(drift)
    return counts


# --- helpers --------------------------------------------------------------------------


async def _qualified(conn: psycopg.AsyncConnection[Any], table: str) -> str | None:
    """The schema-qualified, quoted name the live table resolves to (None: no such)."""
    cur = await conn.execute(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass(quote_ident(%s))", (table,))
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def _drop_plain_indexes(conn: psycopg.AsyncConnection[Any], t: Tables) -> None:
    """Drop the scratch tables' non-unique indexes (copied from the live tables for its
    readers): they cannot change what a fold computes, and maintaining them is most of
    the cost of filling the tables. Unique ones stay: ON CONFLICT may rely on them."""
    cur = await conn.execute(
        "SELECT i.indexrelid::regclass::text FROM pg_index i"
        " WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisunique",
        ([t[name] for name in t],))
    for index, in await cur.fetchall():
        await conn.execute(f"DROP INDEX {index}".encode())


async def _columns(conn: psycopg.AsyncConnection[Any], relation: str) -> list[str]:
    cur = await conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum", (relation,))
    return [str(name) for name, in await cur.fetchall()]


async def _primary_key(conn: psycopg.AsyncConnection[Any], relation: str) -> list[str]:
    cur = await conn.execute(
        "SELECT a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord),"
        " pg_attribute a WHERE i.indrelid = %s::regclass AND i.indisprimary"
        " AND a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord", (relation,))
    return [str(name) for name, in await cur.fetchall()]


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _hex(total: Any) -> str:
    return format(int(total) % 2**64, "016x")


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= VALUE_CHARS:
        return text
    return text[:VALUE_CHARS] + "…"


def _consistent(outcome: Any) -> bool:
    """Whether a reconcile outcome reports no drift: its ``consistent`` (member or
    attribute), else whether its counts of missing, stale, extra and differing are 0."""
    if isinstance(outcome, dict):
        if "consistent" in outcome:
            return bool(outcome["consistent"])
        return not any(outcome.get(kind) for kind in _DRIFT_KINDS)
    return bool(getattr(outcome, "consistent", True))


def _plain(outcome: Any) -> Any:
    """A reconcile outcome as JSON-ready data."""
    if is_dataclass(outcome) and not isinstance(outcome, type):
        return {k: _plain(v) for k, v in asdict(outcome).items()}
    if isinstance(outcome, dict):
        return {str(k): _plain(v) for k, v in outcome.items()}
    if isinstance(outcome, (list, tuple, set, frozenset)):
        return [_plain(v) for v in outcome]
    if outcome is None or isinstance(outcome, (bool, int, float, str)):
        return outcome
    return str(outcome)


def describe(report: ConsistencyReport) -> Iterable[str]:
    """The drifts as lines: view, namespace, row and what differs."""
    for v in report.views:
        several = len({n.table for n in v.namespaces}) > 1
        for d in v.drifts:
            where = f"{d.table} " if several else ""
            name = " ".join(f"{c} {val}" for c, val in d.key.items()) or "row"
            what = {"missing": "missing (in the log, not in the view)",
                    "extra": "extra (in the view, not in the log)",
                    "differs": "differs"}[d.kind]
            line = f"{v.view}: namespace {d.namespace}: {where}{name} {what}"
            if d.kind == "differs":
                line += " (" + "; ".join(
                    f"stored {c} {_short(d.stored[c])}, log {c} {_short(d.log[c])}"
                    for c in d.stored) + ")"
            yield line
        for n in v.drifting():
            sizes = f"stored {n.stored_rows} rows, log {n.log_rows} rows"
            named = sum(1 for d in v.drifts
                        if (d.table, d.namespace) == (n.table, n.namespace))
            if n.drifting_rows is None:
                yield (f"{v.view}: namespace {n.namespace}: {n.table} drifts ({sizes};"
                       " rows not named)")
            elif n.drifting_rows > named:
                yield (f"{v.view}: namespace {n.namespace}: {n.table}:"
                       f" {n.drifting_rows - named} more rows drift ({n.drifting_rows} in"
                       f" all; {sizes})")
        for problem in v.problems:
            yield f"{v.view}: {problem}"
        if not v.external_consistent:
            yield f"{v.view}: its outside copy drifts: {_external(v.external)}"


def _external(outcome: Any) -> str:
    """A reconcile outcome's drift counts with their examples (``missing 1 (ns/key)``)."""
    if not isinstance(outcome, dict):
        return str(outcome)
    given = outcome.get("examples")
    examples: dict[str, Any] = given if isinstance(given, dict) else {}
    parts = []
    for kind in _DRIFT_KINDS:
        if outcome.get(kind):
            shown = examples.get(kind) or []
            parts.append(f"{kind} {outcome[kind]}"
                         + (f" ({', '.join(map(str, shown))})" if shown else ""))
    return "; ".join(parts) or str(outcome)


def _short(text: str | None, width: int = 60) -> str:
    if text is None:
        return "null"
    return text if len(text) <= width else text[:width - 1] + "…"
