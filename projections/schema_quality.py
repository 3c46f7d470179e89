"""The ``schema_quality`` view: for each namespace with a schema, which live entries
violate the schema current at the view's position, and with what violations. A schema
(or ``schema_format``) change re-validates the whole namespace, any other change only the
entries it touched. The counts, staleness and refusals are put together when read
(``quality``).

It is a fold of the log like every view: the documents, the schema and the
``schema_format`` setting are read as of the end of the range being applied, so a rebuild
to a position holds what the view held there.

Tables: ``{violations}`` one row per violating live entry; ``{namespaces}`` the schema
version each namespace was validated against, and the position of the last event that
changed what it was validated against (an entry of it, its schema or its settings).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar

import orjson
import psycopg

from nexus_ssot.ledger.addressing import SCHEMAS_NAMESPACE, is_system_namespace
from nexus_ssot.ledger.log_tail import LogEvent
from nexus_ssot.ledger.namespace_settings import SETTINGS_NAMESPACE
from nexus_ssot.ledger.schemas.compiler import CompiledSchema, SchemaCache
from nexus_ssot.ledger.schemas.records import NAMESPACE_PREFIX, namespace_key

from .runtime import Tables
from .schema_records import Definitions, format_asserts, recorded

NAME = "schema_quality"

_DDL = """
CREATE TABLE IF NOT EXISTS {violations} (
    namespace text NOT NULL,
    key text NOT NULL,
    violations json NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS {namespaces} (
    namespace text PRIMARY KEY,
    schema_version bigint NOT NULL,
    has_schema boolean NOT NULL,
    allow_existing_violations boolean NOT NULL,
    violating bigint NOT NULL,
    last_position bigint NOT NULL
);
"""

_CHANGED = ("SELECT namespace, key, max(position) FROM entry_history"
            " WHERE position > %s AND position <= %s GROUP BY namespace, key")

# The live documents of a namespace (of some keys) as of a position: each key's last
# version at or before it, through the history's primary key.
_DOCUMENTS = (
    "SELECT key, document::text FROM (SELECT DISTINCT ON (key) key, document, event_type"
    " FROM entry_history WHERE namespace = %s AND position <= %s {keys}"
    " ORDER BY key, version DESC) last WHERE event_type <> 'entry.deleted'")


class SchemaQuality:
    name: ClassVar[str] = NAME
    tables: ClassVar[tuple[str, ...]] = ("view_schema_quality",
                                         "view_schema_quality_namespaces")
    side_effects: ClassVar[bool] = False
    #: A report, read by people and ``ssot status``, not a feed: a quarter of a second
    #: behind the log is as good as 20 ms, and under a trickle of one-event commits its
    #: ranges (three round trips per namespace each) then hold ~12 times as many events.
    linger: ClassVar[float] = 0.25

    def __init__(self) -> None:
        self._compiled = SchemaCache()

    def _names(self, t: Tables) -> dict[str, str]:
        violations, namespaces = (t[n] for n in self.tables)
        return {"violations": violations, "namespaces": namespaces}

    def ddl(self, t: Tables) -> str:
        return _DDL.format(**self._names(t))

    async def apply(self, conn: psycopg.AsyncConnection[Any], after: int, upto: int,
                    t: Tables) -> None:
        cur = await conn.execute(_CHANGED, (after, upto))
        await self._fold(conn, upto, t, await cur.fetchall())

    async def apply_events(self, conn: psycopg.AsyncConnection[Any], after: int, upto: int,
                           t: Tables, events: Sequence[LogEvent]) -> None:
        """``apply``, told which entries changed by the range's history rows as the runner
        was handed them, instead of asking ``entry_history`` (a round trip per range, most
        of a range's cost under a trickle of one-event commits)."""
        if any(e.history is None for e in events):  # read without them, or of old: ask
            await self.apply(conn, after, upto, t)
            return
        changed: dict[tuple[str, str], int] = {}
        for e in events:  # in log order: the last position of each entry stays
            history = e.history
            assert history is not None
            changed[(history["namespace"], history["key"])] = history["position"]
        await self._fold(conn, upto, t, [(ns, key, at) for (ns, key), at in changed.items()])

    async def _fold(self, conn: psycopg.AsyncConnection[Any], upto: int, t: Tables,
                    changed: Iterable[tuple[str, str, int]]) -> None:
        """Re-validate what ``changed`` (namespace, key, its last position in the range)
        calls for."""
        names = self._names(t)
        whole: set[str] = set()
        keys: dict[str, list[str]] = defaultdict(list)
        last: dict[str, int] = {}
        for namespace, key, position in changed:
            if namespace == SCHEMAS_NAMESPACE and key.startswith(NAMESPACE_PREFIX):
                namespace = key[len(NAMESPACE_PREFIX):]
                whole.add(namespace)
            elif namespace == SETTINGS_NAMESPACE:
                namespace = key
                whole.add(namespace)
            elif not is_system_namespace(namespace):
                keys[namespace].append(key)
            else:
                continue
            last[namespace] = max(position, last.get(namespace, 0))
        for namespace in sorted(last):
            await self._validate(conn, names, namespace, upto, last[namespace],
                                 None if namespace in whole else keys[namespace])

    async def _validate(self, conn: psycopg.AsyncConnection[Any], names: dict[str, str],
                        namespace: str, upto: int, last: int, keys: list[str] | None
                        ) -> None:
        """Validate the namespace's live entries as of ``upto`` (only ``keys``, unless
        None); ``last`` is the position of its last event up to there."""
        found = await recorded(conn, namespace_key(namespace), position=upto)
        record = found.record if found is not None else None
        # RETURNING, fetched: the runner may apply in pipeline mode, where a statement's
        # rowcount is not known until its results are read
        if keys is None:
            cur = await conn.execute(f"DELETE FROM {names['violations']} WHERE namespace = %s"
                                     " RETURNING 1", (namespace,))
        else:
            cur = await conn.execute(f"DELETE FROM {names['violations']} WHERE namespace = %s"
                                     " AND key = ANY(%s) RETURNING 1", (namespace, keys))
        change = -len(await cur.fetchall())
        rows: list[tuple[str, str, str]] = []
        if record is not None:
            compiled = await self._schema(conn, namespace, upto, record.version,
                                          record.schema, record.definitions)
            sql = _DOCUMENTS.format(keys="" if keys is None else "AND key = ANY(%s)")
            args: tuple[Any, ...] = (namespace, upto)
            if keys is not None:
                args = (namespace, upto, keys)
            async with conn.cursor() as entries:
                await entries.execute(sql, args)
                while batch := await entries.fetchmany(5000):
                    for key, text in batch:
                        document = orjson.loads(text)
                        if not compiled.conforms(document):
                            rows.append((namespace, key,
                                         orjson.dumps(compiled.violations(document)).decode()))
            if rows:
                async with conn.cursor() as insert:
                    await insert.executemany(
                        f"INSERT INTO {names['violations']} (namespace, key, violations)"
                        " VALUES (%s, %s, %s)", rows)
        # the count moves by what was removed and added, so reading it costs nothing
        await conn.execute(
            f"INSERT INTO {names['namespaces']} AS n (namespace, schema_version, has_schema,"
            " allow_existing_violations, violating, last_position)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (namespace) DO UPDATE SET schema_version = EXCLUDED.schema_version,"
            " has_schema = EXCLUDED.has_schema, allow_existing_violations ="
            " EXCLUDED.allow_existing_violations, violating = n.violating + %s,"
            " last_position = EXCLUDED.last_position",
            (namespace, found.version if found is not None else 0, record is not None,
             record.allow_existing_violations if record is not None else False,
             change + len(rows), last, change + len(rows)))

    async def _schema(self, conn: psycopg.AsyncConnection[Any], namespace: str, upto: int,
                      version: int, schema: Any, pins: dict[str, int]) -> CompiledSchema:
        asserts = await format_asserts(conn, namespace, upto)
        key = (namespace, version, asserts)
        found = self._compiled.cached(key)
        if found is None:
            definitions = await Definitions.read(conn) if pins else Definitions({})
            found = self._compiled.get(
                key, lambda: definitions.compile(schema, pins, assert_formats=asserts))
        return found


_STALENESS = """
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM now() - recorded_at)),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM now() - recorded_at)),
       max(extract(epoch FROM now() - recorded_at)),
       count(*) FILTER (WHERE recorded_at < now() - make_interval(days => %s))
FROM entries WHERE namespace = %s AND NOT deleted
"""

_REFUSED = """
SELECT coalesce(sum(refused) FILTER (WHERE minute > now() - interval '1 hour'), 0),
       coalesce(sum(refused), 0)
FROM schema_refusals WHERE namespace = %s AND minute > now() - interval '1 day'
"""


async def quality(conn: psycopg.AsyncConnection[Any], namespace: str, *, stale_days: int,
                  after: str = "", limit: int = 100, t: Tables | None = None
                  ) -> dict[str, Any]:
    """A namespace's data quality: counts against its schema (as the view has it), a page
    of violating keys after ``after`` (one more than ``limit`` when there are more), how
    long entries have gone unchanged, and the writes refused for the schema lately."""
    names = SchemaQuality()._names(t or Tables(SchemaQuality.tables))
    cur = await conn.execute(
        f"SELECT schema_version, has_schema, allow_existing_violations, last_position,"
        f" violating FROM {names['namespaces']} WHERE namespace = %s", (namespace,))
    state = await cur.fetchone()
    violating = int(state[4]) if state else 0
    cur = await conn.execute(
        f"SELECT key, violations::text FROM {names['violations']} WHERE namespace = %s"
        " AND key > %s ORDER BY key LIMIT %s", (namespace, after, limit + 1))
    items = [{"key": key, "violations": orjson.loads(text)}
             for key, text in await cur.fetchall()]
    cur = await conn.execute(_STALENESS, (stale_days, namespace))
    live, p50, p90, oldest, stale = await cur.fetchone() or (0, None, None, None, 0)
    cur = await conn.execute(_REFUSED, (namespace,))
    hour, day = await cur.fetchone() or (0, 0)
    has_schema = bool(state and state[1])
    entries = int(live)
    return {
        "namespace": namespace,
        "schema_version": state[0] if state and has_schema else None,
        "allow_existing_violations": bool(state and state[2]),
        "last_position": state[3] if state else None,
        "entries": entries,
        "conforming": entries - violating if has_schema else None,
        "violating": violating if has_schema else None,
        "conforming_percent": (round(100.0 * (entries - violating) / entries, 2)
                               if has_schema and entries else None),
        "violations": items,
        "staleness": {"p50_seconds": _seconds(p50), "p90_seconds": _seconds(p90),
                      "max_seconds": _seconds(oldest), "stale_days": stale_days,
                      "stale_entries": int(stale)},
        "refused_writes": {"last_hour": int(hour), "last_day": int(day)},
    }


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


async def record_refusal(conn: psycopg.AsyncConnection[Any], namespace: str,
                         at: datetime) -> None:
    """Count one write refused for ``namespace``'s schema (and drop day-old counts)."""
    await conn.execute(
        "INSERT INTO schema_refusals (namespace, minute, refused)"
        " VALUES (%s, date_trunc('minute', %s::timestamptz), 1)"
        " ON CONFLICT (namespace, minute) DO UPDATE SET refused = schema_refusals.refused + 1",
        (namespace, at))
    await conn.execute("DELETE FROM schema_refusals WHERE minute < now() - interval '1 day'")


async def counts(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int, int, int] | None:
    """(namespaces with a schema, entries violating theirs, namespaces holding such
    entries, writes refused for schema reasons in the last hour); None before the view
    is built."""
    names = SchemaQuality()._names(Tables(SchemaQuality.tables))
    try:
        async with conn.transaction():
            cur = await conn.execute(
                f"SELECT (SELECT count(*) FROM {names['namespaces']} WHERE has_schema),"
                f" (SELECT coalesce(sum(violating), 0) FROM {names['namespaces']}),"
                f" (SELECT count(*) FROM {names['namespaces']} WHERE violating > 0),"
                " (SELECT coalesce(sum(refused), 0) FROM schema_refusals"
                "  WHERE minute > now() - interval '1 hour')")
            row = await cur.fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    schemas, violating, namespaces, refused = row or (0, 0, 0, 0)
    return int(schemas), int(violating), int(namespaces), int(refused)


async def summary(conn: psycopg.AsyncConnection[Any]) -> str:
    """One line on the data quality of every namespace with a schema (for /v1/health)."""
    found = await counts(conn)
    if found is None:
        return f"view {NAME} not built yet"
    schemas, violating, namespaces, refused = found
    return (f"{schemas} namespaces with a schema; {violating} entries violate it in "
            f"{namespaces} of them; {refused} writes refused for schema reasons in the "
            "last hour")
