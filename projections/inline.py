"""The inline views as folds of the log: the same rows ``ssot_append`` writes in each
write's transaction (current state in ``entries``, version history in ``entry_history``),
computed from the events table alone, a range of positions per statement.

The writer keeps the live tables current; these folds are what rebuilds them (into shadow
tables, swapped in), materialises them as of a past position (``--into``), and checks
them (recomputed and compared). Idempotency keys are not a view: the request hashes they
hold are not in the log.
"""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg

from .runtime import SQL_EVENT_TYPE, Tables

_DELETED = "'nexus_ssot.ledger.domain:EntryDeleted'"

# The events of a range, decoded by PostgreSQL: JSON null becomes SQL NULL, as it does in
# ssot_append (json_to_recordset), and a deleting event has no document.
_EVENTS = f"""
    SELECT notification_id AS position, recorded_at, originator_version AS version,
           topic = {_DELETED} AS deleted, {SQL_EVENT_TYPE} AS event_type,
           s->>'namespace' AS namespace, s->>'key' AS key,
           CASE WHEN topic = {_DELETED} OR json_typeof(s->'document') = 'null' THEN NULL
                ELSE s->'document' END AS document,
           s
    FROM ssot_events, LATERAL (SELECT convert_from(state, 'UTF8')::json AS s) j
    WHERE notification_id > %(after)s AND notification_id <= %(upto)s
"""


def _nullable(member: str) -> str:
    return (f"CASE WHEN json_typeof(s->'{member}') = 'null' THEN NULL"
            f" ELSE s->'{member}' END")


class CurrentState:
    """``entries``: one row per entry ever written, its last event's result."""

    name: ClassVar[str] = "current_state"
    tables: ClassVar[tuple[str, ...]] = ("entries",)
    side_effects: ClassVar[bool] = False
    inline: ClassVar[bool] = True

    def ddl(self, t: Tables) -> str:
        return f"CREATE TABLE IF NOT EXISTS {t['entries']} (LIKE entries INCLUDING ALL)"

    async def apply(self, conn: psycopg.AsyncConnection[Any], after: int, upto: int,
                    t: Tables) -> None:
        await conn.execute(f"""
            INSERT INTO {t['entries']} AS e (namespace, key, version, position, recorded_at,
                                             document, deleted)
            SELECT DISTINCT ON (namespace, key) namespace, key, version, position,
                   recorded_at, document, deleted
            FROM ({_EVENTS}) ev ORDER BY namespace, key, position DESC
            ON CONFLICT (namespace, key) DO UPDATE SET version = EXCLUDED.version,
                position = EXCLUDED.position, recorded_at = EXCLUDED.recorded_at,
                document = EXCLUDED.document, deleted = EXCLUDED.deleted
            WHERE e.position < EXCLUDED.position""".encode(),
                           {"after": after, "upto": upto})


class EntryHistory:
    """``entry_history``: one row per event, with its metadata, patch and document."""

    name: ClassVar[str] = "entry_history"
    tables: ClassVar[tuple[str, ...]] = ("entry_history",)
    side_effects: ClassVar[bool] = False
    inline: ClassVar[bool] = True

    def ddl(self, t: Tables) -> str:
        return (f"CREATE TABLE IF NOT EXISTS {t['entry_history']}"
                " (LIKE entry_history INCLUDING ALL)")

    async def apply(self, conn: psycopg.AsyncConnection[Any], after: int, upto: int,
                    t: Tables) -> None:
        await conn.execute(f"""
            INSERT INTO {t['entry_history']} (namespace, key, version, position, recorded_at,
                event_type, event_id, actor, reason, correlation_id, causation_id,
                idempotency_key, patch, document, resolution)
            SELECT namespace, key, version, position, recorded_at, event_type,
                (s->>'event_id')::uuid, s->>'actor', s->>'reason', s->>'correlation_id',
                s->>'causation_id', s->>'idempotency_key', s->'patch', document,
                {_nullable('resolution')}
            FROM ({_EVENTS}) ev""".encode(), {"after": after, "upto": upto})


#: The inline views, by name.
INLINE_VIEWS = {CurrentState.name: CurrentState, EntryHistory.name: EntryHistory}
