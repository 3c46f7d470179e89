"""The event store adapter: the `eventsourcing` application over PostgreSQL.

The recorder subclass writes the inline views (current state, version history) and the
idempotency rows in the same transaction as the events, under the library's table lock,
once the INSERT has returned the new global positions and database commit times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import orjson
import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic, retry
from psycopg.sql import SQL, Composable, Identifier

from .domain import Entry

APPLICATION_NAME = "SSOT"
EVENTS_TABLE = "ssot_events"


class OrjsonTranscoder(Transcoder):
    """Encodes event state with orjson. Unlike the library's JSON transcoder it never
    reinterprets user documents (which may well contain ``_type_`` keys)."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        state = orjson.loads(data)
        state["timestamp"] = datetime.fromisoformat(state["timestamp"])
        if "event_id" in state:
            state["event_id"] = UUID(state["event_id"])
        return state


@dataclass
class InlineBatch:
    """Rows to write beside one batch of events. ``history`` holds one dict per event, in
    event order, without position/recorded_at; the recorder fills those in and records the
    committed positions in ``committed`` keyed by (stream id, version)."""

    history: list[dict[str, Any]]
    idempotency: list[dict[str, Any]] = field(default_factory=list)
    committed: dict[tuple[UUID, int], tuple[int, datetime]] = field(default_factory=dict)


# One statement appends a batch: the events (into the library's table, through its
# composite type) and, from the positions and commit times their INSERT returns, the
# inline rows. With the library's lock and NOTIFY statements ahead of it in one pipeline,
# a batch costs one round trip to the server.
_APPEND = """
WITH ev AS (
    INSERT INTO {events} AS t (originator_id, originator_version, topic, state)
    SELECT originator_id, originator_version, topic, state FROM unnest(%s::{event_type}[])
    RETURNING originator_id, originator_version, notification_id, recorded_at
), h AS (
    INSERT INTO entry_history (namespace, key, version, position, recorded_at, event_type,
        event_id, actor, reason, correlation_id, causation_id, idempotency_key, patch,
        document)
    SELECT r.namespace, r.key, r.version, ev.notification_id, ev.recorded_at, r.event_type,
        r.event_id, r.actor, r.reason, r.correlation_id, r.causation_id, r.idempotency_key,
        r.patch, r.document
    FROM json_to_recordset(%s::json) AS r(stream_id uuid, namespace text, key text,
        version bigint, event_type text, event_id uuid, actor text, reason text,
        correlation_id text, causation_id text, idempotency_key text, patch json,
        document json)
    JOIN ev ON ev.originator_id = r.stream_id AND ev.originator_version = r.version
    RETURNING namespace, key, version, position, recorded_at, document, event_type
), c AS (
    INSERT INTO entries AS e (namespace, key, version, position, recorded_at, document,
        deleted)
    SELECT DISTINCT ON (namespace, key) namespace, key, version, position, recorded_at,
        document, event_type = 'entry.deleted'
    FROM h ORDER BY namespace, key, version DESC
    ON CONFLICT (namespace, key) DO UPDATE SET version = EXCLUDED.version,
        position = EXCLUDED.position, recorded_at = EXCLUDED.recorded_at,
        document = EXCLUDED.document, deleted = EXCLUDED.deleted
), i AS (
    INSERT INTO idempotency_keys (actor, key, request_hash, namespace, entry_key, version,
        position, recorded_at)
    SELECT k.actor, k.key, decode(k.request_hash, 'hex'), k.namespace, k.entry_key,
        k.version, ev.notification_id, ev.recorded_at
    FROM json_to_recordset(%s::json) AS k(actor text, key text, request_hash text,
        stream_id uuid, namespace text, entry_key text, version bigint)
    JOIN ev ON ev.originator_id = k.stream_id AND ev.originator_version = k.version
)
SELECT originator_id, originator_version, notification_id, recorded_at FROM ev
"""


class LedgerRecorder(PostgresApplicationRecorder):
    """The library's application recorder, appending the inline rows in the same
    transaction as the events, under the same table lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Rendered once: psycopg caches the parsing of plain-string queries, not of
        # composed ones, and a batch should cost the writer as little as possible.
        with self.datastore.get_connection() as conn:
            self._prelude = [
                *(cast(Composable, stmt).as_string(conn) for stmt in self.lock_table_statements),
                SQL("NOTIFY {0}").format(Identifier(self.channel_name)).as_string(conn),
            ]
            self._append = SQL(_APPEND).format(
                events=Identifier(self.datastore.schema, self.events_table_name),
                event_type=Identifier(self.datastore.schema, self.stored_event_type_name),
            ).as_string(conn)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's insert (table lock, NOTIFY, insert: commit order is position
        order) with the inline rows of ``inline`` written by the same statement, in one
        round trip; ``inline.committed`` gets each event's position and commit time."""
        inline: InlineBatch | None = kwargs.get("inline")
        if inline is None:
            raise ProgrammingError(
                "entries are written through the ledger's writer, which keeps the inline "
                "views in the same transaction; Application.save() would bypass them"
            )
        events = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic,
                                           e.state)
            for e in stored_events
        ]
        params = (events, orjson.dumps(inline.history).decode(),
                  orjson.dumps(inline.idempotency).decode())
        with self.datastore.get_connection() as conn:
            curs = conn.cursor()
            with conn.pipeline(), conn.transaction():
                for statement in self._prelude:
                    curs.execute(statement)
                curs.execute(self._append, params)
            rows = curs.fetchall()
        inline.committed = {
            (row["originator_id"], row["originator_version"]): (
                row["notification_id"], row["recorded_at"])
            for row in rows
        }
        return [row["notification_id"] for row in rows]


class LedgerApplication(Application[UUID]):
    """The event-sourced application: entry streams in ``ssot_events``."""

    name = APPLICATION_NAME

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def entry(self, entry_stream_id: UUID, version: int | None = None) -> Entry:
        """The entry aggregate folded from the log (up to ``version``)."""
        aggregate: Entry = self.repository.get(entry_stream_id, version=version)
        return aggregate


def conninfo_parts(database_url: str) -> dict[str, str]:
    parts = psycopg.conninfo.conninfo_to_dict(database_url)
    return {k: str(v) for k, v in parts.items() if v is not None}


def open_application(
    database_url: str, *, pool_size: int = 4, recorder: type[LedgerRecorder] = LedgerRecorder
) -> LedgerApplication:
    """Build the application over an already-migrated database (see ``migrate``)."""
    parts = conninfo_parts(database_url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": get_topic(recorder),
        "POSTGRES_DBNAME": parts.get("dbname", "postgres"),
        "POSTGRES_HOST": parts.get("host", "127.0.0.1"),
        "POSTGRES_PORT": parts.get("port", "5432"),
        "POSTGRES_USER": parts.get("user", "postgres"),
        "POSTGRES_PASSWORD": parts.get("password", ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_CONNECT_TIMEOUT": "5",
        # No pre-ping: it costs a round trip per transaction; a broken connection raises
        # OperationalError, which the recorder retries on a fresh one.
        "POSTGRES_PRE_PING": "n",
        # Never wait forever for the table lock: a stuck transaction becomes a 503.
        "POSTGRES_LOCK_TIMEOUT": "10",
        "CREATE_TABLE": "n",
    }
    return LedgerApplication(env=env)
