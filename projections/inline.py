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

from nexus_ssot.ledger.events import EntryDeleted

from .runtime import SQL_EVENT_TYPE, Tables, View

_DELETED = f"'{EntryDeleted.TOPIC}'"

# The events of a range, decoded by PostgreSQL in one pass per event (json_to_record, not
# one ``->`` per member, each of which would parse the text again). JSON null becomes SQL
# NULL, as it does in ssot_append (json_to_recordset); a deleting event has no document.
_EVENTS = f"""
    SELECT notification_id AS position, recorded_at, originator_version AS version,
           topic = {_DELETED} AS deleted, {SQL_EVENT_TYPE} AS event_type,
           r.namespace, r.key, CASE WHEN topic = {_DELETED} THEN NULL ELSE r.document END
           AS document, r.event_id, r.actor, r.reason, r.correlation_id, r.causation_id,
           r.idempotency_key, r.patch, r.resolution, r.prev_hash, r.hash, r.auth
    FROM ssot_events, json_to_record(convert_from(state, 'UTF8')::json) AS r(
        namespace text, key text, document json, patch json, event_id uuid, actor text,
        reason text, correlation_id text, causation_id text, idempotency_key text,
        resolution json, prev_hash text, hash text, auth jsonb)
    WHERE notification_id > %(after)s AND notification_id <= %(upto)s
"""

# The last event of each stream in a range, chosen on the events table's own columns (its
# primary key order) so that only those events are decoded: a rebuild decodes one event
# per entry and batch, not every event. Their positions are handed over as one array, so
# the events are fetched by one index scan in log order and upserted in that order. (As
# ``IN (…)`` the planner, which cannot estimate the subquery's rows, fetched them by one
# probe each in the hash order of the de-duplicated ids, touching the events and the
# table's index at random: on 1M events of distinct entries, 46k events/s in batches of
# 250,000 against 88k/s this way.)
_LAST_OF_EACH_STREAM = """
    AND notification_id = ANY (ARRAY(
        SELECT DISTINCT ON (originator_id) notification_id FROM ssot_events
        WHERE notification_id > %(after)s AND notification_id <= %(upto)s
        ORDER BY originator_id, originator_version DESC))
"""


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
                                             document, deleted, hash)
            SELECT namespace, key, version, position, recorded_at, document, deleted, hash
            FROM ({_EVENTS} {_LAST_OF_EACH_STREAM}) ev
            ON CONFLICT (namespace, key) DO UPDATE SET version = EXCLUDED.version,
                position = EXCLUDED.position, recorded_at = EXCLUDED.recorded_at,
                document = EXCLUDED.document, deleted = EXCLUDED.deleted,
                hash = EXCLUDED.hash
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
                idempotency_key, patch, document, resolution, prev_hash, hash, auth)
            SELECT namespace, key, version, position, recorded_at, event_type, event_id,
                actor, reason, correlation_id, causation_id, idempotency_key, patch, document,
                resolution, prev_hash, hash, auth
            FROM ({_EVENTS}) ev""".encode(), {"after": after, "upto": upto})


#: The inline views, by name.
INLINE_VIEWS: dict[str, type[View]] = {CurrentState.name: CurrentState,
                                       EntryHistory.name: EntryHistory}
