"""The ``namespace_stats`` view: per namespace, live and deleted entries, the last change
(position and commit time), and writes per actor. Folded in SQL, a range of events per
statement, from the version history the log's entry events are written with, so a rebuild
runs at the speed of the database.

Tables: ``{stats}`` one row per namespace; ``{keys}`` each key's liveness (what turns an
event into +1/-1 of the counts); ``{actors}`` writes per (namespace, actor). Namespace
settings changes (``namespace.configured``) are not entries and are not counted.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg

from nexus_ssot.ledger.log_tail import LogEvent

from .runtime import Tables, apply_ctes

NAME = "namespace_stats"

_DDL = """
CREATE TABLE IF NOT EXISTS {stats} (
    namespace text PRIMARY KEY,
    entries bigint NOT NULL,
    deleted bigint NOT NULL,
    writes bigint NOT NULL,
    last_position bigint NOT NULL,
    last_recorded_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {keys} (
    namespace text NOT NULL,
    key text NOT NULL,
    live boolean NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS {actors} (
    namespace text NOT NULL,
    actor text NOT NULL,
    writes bigint NOT NULL,
    PRIMARY KEY (namespace, actor)
);
"""

# A range's fold as one statement's common table expressions (the runner adds the advance
# of the view's position, ``runtime.apply_statement``): every one sees the tables as they
# were before the statement, so ``prev`` is each key's liveness before the range and
# ``delta`` the change of the counts. The range's entry events are read from the version
# history, written in the same transaction as the log (settings changes have no row
# there): reading namespace, key and actor out of each event's stored state parsed the
# state's JSON four times an event. Each key's liveness before the range is looked up
# by the keys' index whatever the planner estimates (a LATERAL subquery, its LIMIT keeping
# it from being merged into a join): the statement is prepared, and its generic plan,
# made while the table was small, hashed the whole keys table for every range, so a
# range's fold grew with the keys ever written (38 ms a range at 150,000 keys against
# 5 ms; the view took five times as long as the others to catch up with a bulk load,
# docs/performance.md).
_FOLD = """
e AS (
    SELECT position, recorded_at, event_type = 'entry.deleted' AS deleting, namespace, key,
           actor
    FROM entry_history WHERE position > %(after)s AND position <= %(upto)s
), last AS (
    SELECT DISTINCT ON (namespace, key) namespace, key, NOT deleting AS live
    FROM e ORDER BY namespace, key, position DESC
), prev AS (
    SELECT l.namespace, l.key, l.live, k.live AS was_live
    FROM last l LEFT JOIN LATERAL (
        SELECT live FROM {keys} WHERE namespace = l.namespace AND key = l.key LIMIT 1
    ) k ON true
), keys_upsert AS (
    INSERT INTO {keys} (namespace, key, live) SELECT namespace, key, live FROM last
    ON CONFLICT (namespace, key) DO UPDATE SET live = EXCLUDED.live
), delta AS (
    SELECT namespace,
           sum(live::int - coalesce(was_live::int, 0)) AS entries,
           sum((NOT live)::int - coalesce((NOT was_live)::int, 0)) AS deleted
    FROM prev GROUP BY namespace
), per_ns AS (
    SELECT namespace, count(*) AS writes, max(position) AS last_position,
           max(recorded_at) AS last_recorded_at
    FROM e GROUP BY namespace
), actors_upsert AS (
    INSERT INTO {actors} (namespace, actor, writes)
    SELECT namespace, actor, count(*) FROM e GROUP BY namespace, actor
    ON CONFLICT (namespace, actor) DO UPDATE SET writes = {actors}.writes + EXCLUDED.writes
), stats_upsert AS (
INSERT INTO {stats} AS s (namespace, entries, deleted, writes, last_position,
                          last_recorded_at)
SELECT p.namespace, coalesce(d.entries, 0), coalesce(d.deleted, 0), p.writes,
       p.last_position, p.last_recorded_at
FROM per_ns p LEFT JOIN delta d USING (namespace)
ON CONFLICT (namespace) DO UPDATE SET
    entries = s.entries + EXCLUDED.entries,
    deleted = s.deleted + EXCLUDED.deleted,
    writes = s.writes + EXCLUDED.writes,
    last_position = EXCLUDED.last_position,
    last_recorded_at = EXCLUDED.last_recorded_at
)"""


@functools.lru_cache(maxsize=16)
def _fold(stats: str, keys: str, actors: str) -> bytes:
    """The range's common table expressions on these tables (made once: psycopg parses a
    query's placeholders again for every new string)."""
    return _FOLD.format(stats=stats, keys=keys, actors=actors).encode()




class NamespaceStats:
    name: ClassVar[str] = NAME
    tables: ClassVar[tuple[str, ...]] = ("view_namespace_stats", "view_namespace_stats_keys",
                                         "view_namespace_stats_actors")
    #: Half the runtime's 20 ms: the namespace page's counts are read live, and its
    #: lag behind a commit is a target of its own (p99 < 50 ms at 1,000 writes/s; what
    #: halving it gave is in docs/performance-log.md).
    linger: ClassVar[float] = 0.01
    side_effects: ClassVar[bool] = False
    #: Its statement reads each range from the version history: no events needed.
    reads_events: ClassVar[bool] = False

    def _names(self, t: Tables) -> dict[str, str]:
        stats, keys, actors = (t[n] for n in self.tables)
        return {"stats": stats, "keys": keys, "actors": actors}

    def ddl(self, t: Tables) -> str:
        return _DDL.format(**self._names(t))

    async def apply(self, conn: psycopg.AsyncConnection[Any], after: int, upto: int,
                    t: Tables) -> None:
        # prepared: the server plans the statement once per connection, not per range
        await apply_ctes(conn, _fold(*(t[n] for n in self.tables)),
                         {"after": after, "upto": upto})

    async def range_statement(self, conn: psycopg.AsyncConnection[Any], after: int,
                              upto: int, t: Tables, events: Sequence[LogEvent]
                              ) -> tuple[bytes, dict[str, Any]]:
        return _fold(*(t[n] for n in self.tables)), {}


async def stats(conn: psycopg.AsyncConnection[Any], namespace: str,
                t: Tables | None = None) -> dict[str, Any] | None:
    """The namespace's row, with its writes per actor (None: never written)."""
    names = NamespaceStats()._names(t or Tables(NamespaceStats.tables))
    cur = await conn.execute(
        f"SELECT entries, deleted, writes, last_position, last_recorded_at"
        f" FROM {names['stats']} WHERE namespace = %s", (namespace,))
    row = await cur.fetchone()
    if row is None:
        return None
    cur = await conn.execute(
        f"SELECT actor, writes FROM {names['actors']} WHERE namespace = %s"
        " ORDER BY writes DESC, actor", (namespace,))
    return {"entries": row[0], "deleted": row[1], "writes": row[2], "last_position": row[3],
            "last_recorded_at": row[4],
            "writes_by_actor": {actor: writes for actor, writes in await cur.fetchall()}}
