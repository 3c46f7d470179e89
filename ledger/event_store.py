"""What the writer needs of an event store, whichever holds the log.

The group-commit writer reads an entry's current state, the versions a stale If-Match is
merged over, the results recorded under idempotency keys and which namespaces exist,
appends each batch of events with its idempotency keys in one atomic step that reports the
events' positions, and records under their keys the answers that appended nothing.
``EventStore`` is exactly that; the PostgreSQL application (``store.LedgerApplication``)
and the in-memory twin (``memory_store.MemoryEventStore``) both provide it, and one
contract suite (tests/contract) holds them to the same behaviour.

Failures are the ``eventsourcing.persistence`` errors the writer already tells apart:
``IntegrityError`` (a version or an idempotency key is already taken), ``DataError`` (the
store refuses a value) and any other ``PersistenceError`` (the store is unavailable; an
append may or may not have happened). A failed append has written nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from .commands import Trace
from .errors import LedgerError
from .events import EVENT_TYPE_NAMES, EntryEvent, EntryState

#: An entry's (namespace, key).
Address = tuple[str, str]

#: Each appended event's (stream id, version) -> (position, recorded_at).
Committed = dict[tuple[UUID, int], tuple[int, datetime]]


@dataclass(frozen=True)
class Idempotency:
    """An idempotency key (scoped by actor) and the hash of the request it names."""

    actor: str
    key: str
    request_hash: bytes


@dataclass(frozen=True)
class Outcome:
    """What a committed write produced (or, when ``replayed``, what it had produced): the
    entry's version, and the event that made it — ``event_type`` None when the write left
    the entry unchanged and appended nothing (the version is the one it found)."""

    namespace: str
    key: str
    version: int
    position: int
    recorded_at: datetime
    event_type: str | None
    document: Any
    replayed: bool = False
    #: How a stale If-Match was resolved (see ``EntryEvent.resolution``), else None.
    resolution: dict[str, Any] | None = None

    @property
    def unchanged(self) -> bool:
        """The write appended nothing: the entry already was what it asked for."""
        return self.event_type is None


#: A used idempotency key: the hash of the request it named and that request's answer
#: (a fresh error when it was refused).
StoredResult = tuple[bytes, Outcome | list[Outcome] | LedgerError]


@dataclass(frozen=True)
class IdempotencyRecord:
    """An idempotency key to remember with the events its request appended (at least one:
    a request that appended nothing is remembered by an ``AnswerRecord``). A retry is
    answered with the first event's outcome, or, when ``atomic``, with one outcome per
    operation: ``answers`` names the event each operation answered with, in order — the
    one it appended or, for one that left its entry unchanged, the one that made the
    version it found (so its retry answers that version again, as unchanged)."""

    idempotency: Idempotency
    events: tuple[EntryEvent, ...]
    atomic: bool = False
    answers: tuple[UUID, ...] = ()

    @property
    def answered(self) -> tuple[UUID, ...]:
        """The event ids a retry is answered with, one per operation when atomic."""
        return self.answers or tuple(e.event_id for e in self.events)


@dataclass(frozen=True)
class AnswerRecord:
    """An idempotency key to remember with an answer that appended nothing: a refusal
    (``error``, as ``errors.error_record`` gives it), or, when ``error`` is None, every
    operation leaving its entry as it was (``unchanged``: the event that made the version
    each operation found, in order)."""

    idempotency: Idempotency
    atomic: bool = False
    unchanged: tuple[UUID, ...] = ()
    error: dict[str, Any] | None = None


class EventStore(Protocol):
    """The log of entry events with its inline views, as the writer uses it."""

    def current_states(self, addresses: Sequence[Address]) -> dict[Address, EntryState | None]:
        """The current state of each of ``addresses`` (None for an entry never written)."""
        ...

    def versions(
        self, namespace: str, key: str, first: int, last: int
    ) -> dict[int, tuple[Any, list[dict[str, Any]]]]:
        """Version -> (document, None where that version deleted the entry; the patch it
        recorded) for the recorded versions ``first`` … ``last`` of an entry."""
        ...

    def stored_results(self, keys: Sequence[Idempotency]) -> dict[tuple[str, str], StoredResult]:
        """For each of ``keys`` already used, by (actor, key): the request hash it was
        used with and the outcome (a list of them for an atomic request), ``replayed``;
        an operation that had left its entry unchanged is answered unchanged again."""
        ...

    def record_answers(self, records: Sequence[AnswerRecord]) -> set[tuple[str, str]]:
        """Remember each of ``records`` whose key is not taken yet (by an append or an
        earlier answer); the (actor, key) of those remembered. A retry of a refused request
        is then refused again, one of an unchanged answer answered unchanged again."""
        ...

    def existing_namespaces(self, namespaces: Sequence[str]) -> set[str]:
        """Those of ``namespaces`` that exist: that have settings or an entry (ever)."""
        ...

    def committed_outcomes(self, event_ids: Sequence[UUID]) -> dict[UUID, Outcome]:
        """The outcomes of those of ``event_ids`` whose events are in the log."""
        ...

    def last_position(self, namespace: str) -> int:
        """The position of the last event of an entry of ``namespace`` (0: none)."""
        ...

    def append(
        self, events: Sequence[EntryEvent], keys: Sequence[IdempotencyRecord] = (),
        traces: Mapping[UUID, Trace] | None = None,
    ) -> Committed:
        """Append ``events`` and remember ``keys``, all or nothing: positions increase in
        the order given, after every position already taken. ``traces``: the trace
        context to store with an event, by event id (operational metadata beside the
        event, not part of its content or hash). Raises ``IntegrityError``
        when an event's (stream, version) or event id, or a key, is already taken."""
        ...


def unchanged_outcome(state: EntryState, position: int, recorded_at: datetime) -> Outcome:
    """The outcome of a write that left ``state`` as it was (its last event committed at
    ``position`` at ``recorded_at``)."""
    return Outcome(namespace=state.namespace, key=state.key, version=state.version,
                   position=position, recorded_at=recorded_at, event_type=None,
                   document=state.document)


def outcome_of(event: EntryEvent, position: int, recorded_at: datetime) -> Outcome:
    """The outcome of ``event``, appended at ``position`` at ``recorded_at``."""
    return Outcome(
        namespace=event.namespace,
        key=event.key,
        version=event.originator_version,
        position=position,
        recorded_at=recorded_at,
        event_type=EVENT_TYPE_NAMES[type(event)],
        document=event.document,
        resolution=event.resolution,
    )
