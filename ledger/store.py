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
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic, retry

from .events import Entry

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
    """Rows to write beside one batch of events: ``history`` one dict per event (with its
    ``stream_id``), ``idempotency`` one per keyed request; ``ssot_append`` gives them the
    positions and commit times its insert returns. After the commit, ``committed`` maps
    (stream id, version) to (position, recorded_at)."""

    history: list[dict[str, Any]]
    idempotency: list[dict[str, Any]] = field(default_factory=list)
    committed: dict[tuple[UUID, int], tuple[int, datetime]] = field(default_factory=dict)


class LedgerRecorder(PostgresApplicationRecorder):
    """The library's application recorder, appending the inline rows in the same
    transaction as the events, under the same table lock.

    A batch is one call of ``ssot_append`` (migration 0004), which takes the library's
    EXCLUSIVE table lock and NOTIFYs its channel before inserting the events, exactly as
    the library's own insert does, and writes the inline rows from the positions and
    commit times that insert returns: one round trip and one autocommit transaction."""

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Append ``stored_events`` with the inline rows of ``inline``; its
        ``committed`` gets each event's position and commit time."""
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
        with self.datastore.get_connection() as conn:
            assert conn.autocommit  # the statement is the transaction
            rows = conn.execute(
                "SELECT * FROM ssot_append(%s, %s::json, %s::json, %s)",
                (events, orjson.dumps(inline.history).decode(),
                 orjson.dumps(inline.idempotency).decode(), f"{self.datastore.lock_timeout}s"),
            ).fetchall()
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
