"""The event store adapter: the `eventsourcing` application over PostgreSQL.

The recorder subclass writes the inline views (current state, version history) and the
idempotency rows in the same transaction as the events, under the library's table lock,
once the INSERT has returned the new global positions and database commit times. The
application is the writer's ``EventStore`` (see ``event_store``): it appends through that
recorder and reads the views back.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.utils import Environment, get_topic, retry

from .commands import Trace
from .errors import LedgerError, error_from_record
from .event_store import (
    Address,
    AnswerRecord,
    Committed,
    Idempotency,
    IdempotencyRecord,
    Outcome,
    StoredResult,
)
from .events import EVENT_TYPE_NAMES, Entry, EntryDeleted, EntryEvent, EntryState
from .namespace_settings import SETTINGS_NAMESPACE

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
    committed: Committed = field(default_factory=dict)


#: One batch: the events (in their order: the function inserts them in its array's order)
#: with their inline rows. ``ssot_append`` takes the events as the library's composite
#: type, built here from what the recorder sends: a JSON array of one ``{"i": id, "v":
#: version, "t": topic, "o": offset, "l": length}`` per event, read into typed columns in
#: one pass over the text, and their states one after the other in one ``bytea``, in
#: binary, each cut out at its offset. Until 0025 each event was ``[id, version, topic,
#: state in hex]``, and ``->>`` on an element of a ``json`` array parses the element, its
#: ~1,300 characters of hex included, once per field: reading the states out of JSON was
#: a quarter of the append's CPU in PostgreSQL at batches of 20 (docs/performance.md,
#: "PostgreSQL's share of a write").
_APPEND = (
    "SELECT * FROM ssot_append(ARRAY(SELECT ROW(e.i, e.v, e.t, substring(%b::bytea"
    " FROM e.o + 1 FOR e.l))::stored_event_uuid FROM ROWS FROM (json_to_recordset(%s::json)"
    " AS (i uuid, v bigint, t text, o integer, l integer)) WITH ORDINALITY"
    " AS e(i, v, t, o, l, n) ORDER BY e.n), %s::json, %s::json, %s)"
)


def append_parameters(stored_events: Sequence[StoredEvent]) -> tuple[bytes, str]:
    """The events of one batch as ``_APPEND``'s first two parameters: their states joined
    (one ``bytes``, which psycopg sends in binary as it is) and, as JSON (orjson, in C),
    each one's address, topic and where its state lies in the first. Cheaper for the
    writer than the states in hex at any batch size (2.8 against 3.8 µs at one event,
    14 against 41 µs at twenty); a ``bytea[]`` of the states cost psycopg's list dumper
    more at one event."""
    rows = []
    offset = 0
    for e in stored_events:
        size = len(e.state)
        rows.append({"i": e.originator_id, "v": e.originator_version, "t": e.topic,
                     "o": offset, "l": size})
        offset += size
    return b"".join(e.state for e in stored_events), orjson.dumps(rows).decode()


class LedgerRecorder(PostgresApplicationRecorder):
    """The library's application recorder, appending the inline rows in the same
    transaction as the events, under the same table lock.

    A batch is one call of ``ssot_append`` (migration 0004; as of 0019), which takes the library's
    EXCLUSIVE table lock and NOTIFYs its channel before inserting the events, exactly as
    the library's own insert does, and writes the inline rows from the positions and
    commit times that insert returns: one round trip and one autocommit transaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._append_cursors: weakref.WeakKeyDictionary[
            psycopg.Connection[Any], psycopg.Cursor[Any]] = weakref.WeakKeyDictionary()

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
        # The events go as JSON and one bytea (``append_parameters``), which the server
        # makes into the function's composite array. psycopg dumps an array of composites
        # as text, escaping each state's bytes in Python (~40 µs of the writer's CPU per
        # event); four arrays in binary, as they went before 0025's time, cost its list
        # dumpers ~85K instructions a batch whatever its size (a tenth of a one-event
        # write; docs/performance.md).
        with self.datastore.get_connection() as conn:
            assert conn.autocommit  # the statement is the transaction
            rows = self._append_cursor(conn).execute(_APPEND, (
                *append_parameters(stored_events),
                orjson.dumps(inline.history).decode(),
                orjson.dumps(inline.idempotency).decode(),
                f"{self.datastore.lock_timeout}s",
            )).fetchall()
        inline.committed = {
            (row["originator_id"], row["originator_version"]): (
                row["notification_id"], row["recorded_at"])
            for row in rows
        }
        return [row["notification_id"] for row in rows]


    def _append_cursor(self, conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
        """The cursor ``conn`` appends with, kept with it: a cursor that runs the same
        query again keeps its adapters (psycopg makes new ones for each new cursor, and
        finding the dumpers of the arrays was ~25 µs of a batch)."""
        cursor = self._append_cursors.get(conn)
        if cursor is None or cursor.closed:
            cursor = self._append_cursors[conn] = conn.cursor()
        return cursor


class LedgerApplication(Application[UUID]):
    """The event-sourced application: entry streams in ``ssot_events``."""

    name = APPLICATION_NAME

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def entry(self, entry_stream_id: UUID, version: int | None = None) -> Entry:
        """The entry aggregate folded from the log (up to ``version``)."""
        aggregate: Entry = self.repository.get(entry_stream_id, version=version)
        return aggregate

    # --- the writer's EventStore ---------------------------------------------------

    def current_states(self, addresses: Sequence[Address]) -> dict[Address, EntryState | None]:
        """Current states from the ``entries`` view (None for entries never written), with
        where their last event is (its id through the history's primary key)."""
        states: dict[Address, EntryState | None] = dict.fromkeys(addresses)
        with self.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT e.namespace, e.key, e.version, e.document::text AS document,"
                " e.deleted, e.hash, e.position, e.recorded_at, h.event_id FROM entries e"
                " JOIN unnest(%s::text[], %s::text[]) AS a(namespace, key)"
                " USING (namespace, key)"
                " LEFT JOIN entry_history h ON h.namespace = a.namespace AND h.key = a.key"
                "  AND h.version = e.version",
                ([a[0] for a in addresses], [a[1] for a in addresses]),
            ).fetchall()
        for row in rows:
            states[(row["namespace"], row["key"])] = EntryState(
                namespace=row["namespace"],
                key=row["key"],
                version=row["version"],
                document=None if row["document"] is None else orjson.loads(row["document"]),
                deleted=row["deleted"],
                hash=row["hash"],
                event_id=row["event_id"],
                position=row["position"],
                recorded_at=row["recorded_at"],
            )
        return states

    def existing_namespaces(self, namespaces: Sequence[str]) -> set[str]:
        """Those with a current-state row (every entry ever written has one) or settings."""
        with self.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT n FROM unnest(%s::text[]) AS n WHERE"
                " EXISTS (SELECT 1 FROM entries WHERE namespace = n)"
                " OR EXISTS (SELECT 1 FROM entries WHERE namespace = %s AND key = n)",
                (list(namespaces), SETTINGS_NAMESPACE),
            ).fetchall()
        return {row["n"] for row in rows}

    def last_position(self, namespace: str) -> int:
        """From the history's (namespace, position) index."""
        with self.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            row = conn.execute("SELECT coalesce(max(position), 0) AS p FROM entry_history"
                               " WHERE namespace = %s", (namespace,)).fetchone()
        return int(row["p"])

    def versions(
        self, namespace: str, key: str, first: int, last: int
    ) -> dict[int, tuple[Any, list[dict[str, Any]]]]:
        """Documents and patches of an entry's versions, from the ``entry_history`` view."""
        with self.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT version, document::text AS document, patch::text AS patch"
                " FROM entry_history WHERE namespace = %s AND key = %s"
                " AND version BETWEEN %s AND %s",
                (namespace, key, first, last),
            ).fetchall()
        return {
            row["version"]: (None if row["document"] is None else orjson.loads(row["document"]),
                             orjson.loads(row["patch"]))
            for row in rows
        }

    def stored_results(self, keys: Sequence[Idempotency]) -> dict[tuple[str, str], StoredResult]:
        if not keys:
            return {}
        with self.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT i.actor, i.key, i.request_hash, i.event_ids, i.answer::text AS answer,"
                " h.namespace, h.key AS entry_key, h.version, h.position, h.recorded_at,"
                " h.event_type, h.document::text AS document, h.resolution::text AS resolution"
                " FROM idempotency_keys i"
                " JOIN unnest(%s::text[], %s::text[]) AS k(actor, key) USING (actor, key)"
                " LEFT JOIN entry_history h ON h.namespace = i.namespace"
                "  AND h.key = i.entry_key AND h.version = i.version",
                ([k.actor for k in keys], [k.key for k in keys]),
            ).fetchall()
            found: dict[tuple[str, str], StoredResult] = {}
            for row in rows:
                if row["answer"] is not None:  # an answer that appended nothing
                    answer = orjson.loads(row["answer"])
                    outcome: Outcome | list[Outcome] | LedgerError = (
                        error_from_record(answer["error"]) if "error" in answer
                        else _unchanged_answers(conn, answer))
                elif row["event_ids"] is not None:  # an atomic request: all its outcomes
                    outcome = _answers(conn, row["event_ids"], row["position"])
                else:
                    outcome = _outcome_from_row(row)
                found[(row["actor"], row["key"])] = (bytes(row["request_hash"]), outcome)
        return found

    def record_answers(self, records: Sequence[AnswerRecord]) -> set[tuple[str, str]]:
        """One ``ssot_record_answers`` (migration 0021): an autocommit INSERT of the keys
        not taken yet, which takes no lock of the log."""
        if not records:
            return set()
        answers = [{
            "actor": r.idempotency.actor,
            "key": r.idempotency.key,
            "request_hash": r.idempotency.request_hash.hex(),
            "answer": {"error": r.error} if r.error is not None else {
                "unchanged": [str(i) for i in r.unchanged], "atomic": r.atomic},
        } for r in records]
        with self.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute("SELECT actor, key FROM ssot_record_answers(%s::json)",
                                # (an error's extras as the writer's socket carries them)
                                (orjson.dumps(answers, default=str).decode(),)).fetchall()
        return {(row["actor"], row["key"]) for row in rows}

    def committed_outcomes(self, event_ids: Sequence[UUID]) -> dict[UUID, Outcome]:
        if not event_ids:
            return {}
        with self.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            return _committed_outcomes(conn, event_ids, replayed=False)

    def append(
        self, events: Sequence[EntryEvent], keys: Sequence[IdempotencyRecord] = (),
        traces: Mapping[UUID, Trace] | None = None,
    ) -> Committed:
        """One ``ssot_append`` through the recorder: the events (with their trace
        contexts), their history rows and the idempotency rows in one transaction."""
        if not events:
            return {}
        stored = [self.mapper.to_stored_event(e) for e in events]
        idempotency = []
        for record in keys:
            idem, first = record.idempotency, record.events[0]
            idempotency.append({
                "actor": idem.actor,
                "key": idem.key,
                "request_hash": idem.request_hash.hex(),
                "namespace": first.namespace,
                "entry_key": first.key,
                "version": first.originator_version,
                "stream_id": first.originator_id,
                "event_ids": list(record.answered) if record.atomic else None,
            })
        history = [_history_record(e) for e in events]
        if traces:  # the function stores them with the events (migration 0019)
            for row, event in zip(history, events, strict=True):
                trace = traces.get(event.event_id)
                if trace is not None:
                    row["traceparent"], row["tracestate"] = trace
        inline = InlineBatch(history=history,
                             idempotency=idempotency)
        self.recorder.insert_events(stored, inline=inline)
        return inline.committed


def _unchanged_answers(conn: Any, answer: dict[str, Any]) -> Outcome | list[Outcome]:
    """The outcomes of a request that left every entry it named unchanged, replayed: the
    versions it found, unchanged again."""
    event_ids = [UUID(i) for i in answer["unchanged"]]
    by_id = _committed_outcomes(conn, event_ids, replayed=True)
    outcomes = [replace(by_id[i], event_type=None, resolution=None) for i in event_ids]
    return outcomes if answer["atomic"] else outcomes[0]


def _answers(conn: Any, event_ids: list[UUID], first_position: int) -> list[Outcome]:
    """The outcomes an atomic request answered with, replayed; its first event is at
    ``first_position``. An event before that one, or named a second time, is the version
    an operation found and left unchanged (its own events come from that position on, in
    the order of its operations)."""
    by_id = _committed_outcomes(conn, event_ids, replayed=True)
    outcomes = []
    for n, event_id in enumerate(event_ids):
        outcome = by_id[event_id]
        if outcome.position < first_position or event_id in event_ids[:n]:
            outcome = replace(outcome, event_type=None, resolution=None)
        outcomes.append(outcome)
    return outcomes


def _committed_outcomes(conn: Any, event_ids: Sequence[UUID], *,
                        replayed: bool) -> dict[UUID, Outcome]:
    rows = conn.execute(
        "SELECT namespace, key, version, position, recorded_at, event_type,"
        " document::text AS document, resolution::text AS resolution, event_id"
        " FROM entry_history WHERE event_id = ANY(%s)",
        (list(event_ids),),
    ).fetchall()
    return {row["event_id"]: _outcome_from_row(row, replayed=replayed) for row in rows}


def _outcome_from_row(row: dict[str, Any], *, replayed: bool = True) -> Outcome:
    return Outcome(
        namespace=row["namespace"],
        key=row["entry_key"] if "entry_key" in row else row["key"],
        version=row["version"],
        position=row["position"],
        recorded_at=row["recorded_at"],
        event_type=row["event_type"],
        document=None if row["document"] is None else orjson.loads(row["document"]),
        replayed=replayed,
        resolution=orjson.loads(row["resolution"]) if row.get("resolution") else None,
    )


def _history_record(event: EntryEvent) -> dict[str, Any]:
    return {
        "stream_id": event.originator_id,
        "namespace": event.namespace,
        "key": event.key,
        "version": event.originator_version,
        "event_type": EVENT_TYPE_NAMES[type(event)],
        "event_id": event.event_id,
        "actor": event.actor,
        "reason": event.reason,
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "idempotency_key": event.idempotency_key,
        "patch": event.patch,
        "document": None if isinstance(event, EntryDeleted) else event.document,
        "resolution": event.resolution,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
        "auth": event.auth,
    }


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
    extra = {k: v for k, v in parts.items() if k not in _LIBRARY_PARTS}
    if extra:
        env["PERSISTENCE_MODULE"] = get_topic(LedgerFactory)
        env[_EXTRA_PARTS] = orjson.dumps(extra).decode()
    return LedgerApplication(env=env)


#: The parts of a libpq URL the library's pool is given; and the setting carrying the rest.
_LIBRARY_PARTS = frozenset({"dbname", "host", "port", "user", "password"})
_EXTRA_PARTS = "SSOT_CONNINFO_EXTRA"


class LedgerFactory(PostgresFactory):
    """The library's PostgreSQL factory, whose pool also gets the database URL's other
    parameters (the library hands it dbname, host, port, user and password alone):
    ``target_session_attrs`` of a multi-host URL, which makes the writer find a promoted
    standby after a failover, ``sslmode``, … Set before the pool opens its first
    connection (when the application is built)."""

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        kwargs = self.datastore.pool.kwargs
        assert isinstance(kwargs, dict)  # the library gives its pool a dict
        kwargs.update(orjson.loads(env.get(_EXTRA_PARTS) or "{}"))
