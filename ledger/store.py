"""The event store adapter: the `eventsourcing` application over PostgreSQL.

The recorder subclass writes the inline views (current state, version history) and the
idempotency rows in the same transaction as the events, under the library's table lock,
once the INSERT has returned the new global positions and database commit times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent, Transcoder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

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


_INSERT_HISTORY_AND_CURRENT = SQL(
    """
    WITH h AS (
        INSERT INTO entry_history (namespace, key, version, position, recorded_at, event_type,
            event_id, actor, reason, correlation_id, causation_id, idempotency_key, patch,
            document)
        SELECT namespace, key, version, position, recorded_at, event_type, event_id, actor,
            reason, correlation_id, causation_id, idempotency_key, patch, document
        FROM json_populate_recordset(NULL::entry_history, %s::json)
        RETURNING namespace, key, version, position, recorded_at, document, event_type
    )
    INSERT INTO entries AS e (namespace, key, version, position, recorded_at, document, deleted)
    SELECT DISTINCT ON (namespace, key) namespace, key, version, position, recorded_at,
        document, event_type = 'entry.deleted'
    FROM h ORDER BY namespace, key, version DESC
    ON CONFLICT (namespace, key) DO UPDATE SET version = EXCLUDED.version,
        position = EXCLUDED.position, recorded_at = EXCLUDED.recorded_at,
        document = EXCLUDED.document, deleted = EXCLUDED.deleted
    """
)

_INSERT_IDEMPOTENCY = SQL(
    """
    INSERT INTO idempotency_keys (actor, key, request_hash, namespace, entry_key, version,
        position, recorded_at)
    SELECT actor, key, decode(request_hash, 'hex'), namespace, entry_key, version, position,
        recorded_at
    FROM json_to_recordset(%s::json) AS r(actor text, key text, request_hash text,
        namespace text, entry_key text, version bigint, position bigint,
        recorded_at timestamptz)
    """
)


class LedgerRecorder(PostgresApplicationRecorder):
    """The library's application recorder, plus the inline rows in the same transaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.insert_events_statement = SQL(
            "INSERT INTO {schema}.{table} AS t (originator_id, originator_version, topic, state)"
            " SELECT originator_id, originator_version, topic, state"
            " FROM unnest(%s::{schema}.{stored_event_type}[])"
            " RETURNING originator_id, originator_version, notification_id, recorded_at"
        ).format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
            stored_event_type=Identifier(self.stored_event_type_name),
        )

    def _fetch_ids_after_insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> Sequence[int] | None:
        rows = curs.fetchall()
        committed = {
            (row["originator_id"], row["originator_version"]): (
                row["notification_id"],
                row["recorded_at"],
            )
            for row in rows
        }
        inline: InlineBatch | None = kwargs.get("inline")
        if inline is not None:
            for record in inline.history:
                position, recorded_at = committed[(record["stream_id"], record["version"])]
                record["position"] = position
                record["recorded_at"] = recorded_at
            curs.execute(_INSERT_HISTORY_AND_CURRENT, (orjson.dumps(inline.history).decode(),))
            if inline.idempotency:
                for row in inline.idempotency:
                    position, recorded_at = committed[(row.pop("stream_id"), row["version"])]
                    row["position"] = position
                    row["recorded_at"] = recorded_at
                curs.execute(_INSERT_IDEMPOTENCY, (orjson.dumps(inline.idempotency).decode(),))
            inline.committed = committed
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
