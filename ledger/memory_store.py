"""The event store in memory: the PostgreSQL store's twin, for tests that need no database.

It keeps the log and the views the writer reads (current states, version history,
idempotency keys) in dicts, with the PostgreSQL store's rules: an append is all or
nothing, a (stream, version), an event id or an idempotency key is taken once
(``IntegrityError``; an answer recorded under a taken key is not recorded), text holding
U+0000 is refused (``DataError``), positions count up from 1 and each event is recorded at
the injected clock's time. Values are kept as the JSON they would be stored as, so
nothing read back aliases what the writer holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import DataError, IntegrityError

from .commands import Trace
from .errors import error_from_record
from .event_store import (
    Address,
    AnswerRecord,
    Committed,
    Idempotency,
    IdempotencyRecord,
    Outcome,
    StoredResult,
    outcome_of,
)
from .events import EntryDeleted, EntryEvent, EntryState, evolve
from .namespace_settings import SETTINGS_NAMESPACE


@dataclass(frozen=True)
class _Recorded:
    outcome: Outcome
    patch: list[dict[str, Any]]


@dataclass(frozen=True)
class _UsedKey:
    request_hash: bytes
    event_ids: tuple[UUID, ...]  # what its request answered with (see IdempotencyRecord)
    atomic: bool
    appended: frozenset[UUID]  # the events its request appended
    error: dict[str, Any] | None = None  # the refusal it answered with (see AnswerRecord)


def _now() -> datetime:
    return datetime.now(UTC)


class MemoryEventStore:
    """An ``EventStore`` in memory; ``clock`` gives each appended event its recorded_at.
    Safe to share between the writer's thread and a test's."""

    def __init__(self, clock: Callable[[], datetime] = _now) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        #: The log, in position order (position n is ``events[n - 1]``).
        self.events: list[EntryEvent] = []
        #: The trace context stored with each event that has one, by event id.
        self.traces: dict[UUID, Trace] = {}
        self._states: dict[Address, EntryState] = {}
        self._history: dict[tuple[str, str, int], _Recorded] = {}
        self._by_event_id: dict[UUID, _Recorded] = {}
        self._versions_taken: set[tuple[UUID, int]] = set()
        self._keys: dict[tuple[str, str], _UsedKey] = {}

    def current_states(self, addresses: Sequence[Address]) -> dict[Address, EntryState | None]:
        with self._lock:
            found = {a: self._states.get(a) for a in addresses}
        return {a: None if state is None else replace(state, document=_json(state.document))
                for a, state in found.items()}

    def versions(
        self, namespace: str, key: str, first: int, last: int
    ) -> dict[int, tuple[Any, list[dict[str, Any]]]]:
        with self._lock:
            found = {v: self._history.get((namespace, key, v)) for v in range(first, last + 1)}
        return {v: (_json(r.outcome.document), _json(r.patch))
                for v, r in found.items() if r is not None}

    def stored_results(self, keys: Sequence[Idempotency]) -> dict[tuple[str, str], StoredResult]:
        found: dict[tuple[str, str], StoredResult] = {}
        with self._lock:
            for idem in keys:
                used = self._keys.get((idem.actor, idem.key))
                if used is None:
                    continue
                if used.error is not None:
                    found[(idem.actor, idem.key)] = (used.request_hash,
                                                     error_from_record(_json(used.error)))
                    continue
                outcomes = []
                for n, i in enumerate(used.event_ids):
                    outcome = _read(self._by_event_id[i].outcome, replayed=True)
                    if i not in used.appended or i in used.event_ids[:n]:
                        outcome = replace(outcome, event_type=None, resolution=None)
                    outcomes.append(outcome)
                found[(idem.actor, idem.key)] = (
                    used.request_hash, outcomes if used.atomic else outcomes[0])
        return found

    def record_answers(self, records: Sequence[AnswerRecord]) -> set[tuple[str, str]]:
        recorded: set[tuple[str, str]] = set()
        with self._lock:
            for record in records:
                idem = record.idempotency
                _refuse_nul(idem.actor, idem.key)
                scope = (idem.actor, idem.key)
                if scope in self._keys:
                    continue
                if any(i not in self._by_event_id for i in record.unchanged):
                    raise ValueError("an unchanged answer names events of the log")
                self._keys[scope] = _UsedKey(idem.request_hash, record.unchanged,
                                             record.atomic, frozenset(), _json(record.error))
                recorded.add(scope)
        return recorded

    def existing_namespaces(self, namespaces: Sequence[str]) -> set[str]:
        with self._lock:
            existing = {key if ns == SETTINGS_NAMESPACE else ns
                        for ns, key in self._states}
        return existing.intersection(namespaces)

    def last_position(self, namespace: str) -> int:
        with self._lock:
            return max((s.position or 0 for (ns, _), s in self._states.items()
                        if ns == namespace), default=0)

    def committed_outcomes(self, event_ids: Sequence[UUID]) -> dict[UUID, Outcome]:
        with self._lock:
            return {i: _read(self._by_event_id[i].outcome, replayed=False)
                    for i in event_ids if i in self._by_event_id}

    def append(
        self, events: Sequence[EntryEvent], keys: Sequence[IdempotencyRecord] = (),
        traces: Mapping[UUID, Trace] | None = None,
    ) -> Committed:
        with self._lock:
            self._check(events, keys)
            # Encoded before anything is kept: a value JSON cannot hold fails the whole append.
            contents = [(_json(_stored_document(e)), _json(e.patch), _json(e.resolution))
                        for e in events]
            committed: Committed = {}
            for event, (document, patch, resolution) in zip(events, contents, strict=True):
                position = len(self.events) + 1
                recorded_at = self._clock()
                recorded = _Recorded(replace(outcome_of(event, position, recorded_at),
                                             document=document, resolution=resolution), patch)
                self.events.append(event)
                if traces and event.event_id in traces:
                    self.traces[event.event_id] = traces[event.event_id]
                self._versions_taken.add((event.originator_id, event.originator_version))
                self._history[(event.namespace, event.key, event.originator_version)] = recorded
                self._by_event_id[event.event_id] = recorded
                address = (event.namespace, event.key)
                self._states[address] = replace(evolve(self._states.get(address), event),
                                                document=document, position=position,
                                                recorded_at=recorded_at)
                committed[(event.originator_id, event.originator_version)] = (
                    position, recorded_at)
            for record in keys:
                idem = record.idempotency
                self._keys[(idem.actor, idem.key)] = _UsedKey(
                    idem.request_hash, record.answered, record.atomic,
                    frozenset(e.event_id for e in record.events))
            return committed

    def _check(self, events: Sequence[EntryEvent], keys: Sequence[IdempotencyRecord]) -> None:
        """Refuse the whole append as PostgreSQL would, before any of it is kept."""
        versions: set[tuple[UUID, int]] = set()
        event_ids: set[UUID] = set()
        for event in events:
            _refuse_nul(event.namespace, event.key, event.actor, event.reason,
                        event.correlation_id, event.causation_id, event.idempotency_key,
                        event.prev_hash, event.hash)
            if event.auth is not None and b"\\u0000" in orjson.dumps(event.auth):
                raise DataError(_NUL)  # jsonb holds none either
            version = (event.originator_id, event.originator_version)
            if version in self._versions_taken or version in versions:
                raise IntegrityError(f"version {event.originator_version} of stream "
                                     f"{event.originator_id} is already recorded")
            if event.event_id in self._by_event_id or event.event_id in event_ids:
                raise IntegrityError(f"event id {event.event_id} is already recorded")
            versions.add(version)
            event_ids.add(event.event_id)
        scopes: set[tuple[str, str]] = set()
        for record in keys:
            idem = record.idempotency
            _refuse_nul(idem.actor, idem.key)
            scope = (idem.actor, idem.key)
            if scope in self._keys or scope in scopes:
                raise IntegrityError(f"idempotency key {idem.key!r} is already used")
            if not record.events or any(e.event_id not in event_ids for e in record.events):
                raise ValueError("an idempotency key is recorded with events of its append")
            if any(i not in event_ids and i not in self._by_event_id for i in record.answered):
                raise ValueError("an idempotency key answers with events of the log")
            scopes.add(scope)


_NUL = "unsupported Unicode escape sequence: \\u0000 cannot be converted to text"


def _refuse_nul(*texts: str | None) -> None:
    for text in texts:
        if text is not None and "\x00" in text:
            raise DataError(_NUL)


def _stored_document(event: EntryEvent) -> Any:
    return None if isinstance(event, EntryDeleted) else event.document


def _json(value: Any) -> Any:
    """``value`` as read back from the JSON it is stored as: never the caller's object."""
    return orjson.loads(orjson.dumps(value))


def _read(outcome: Outcome, *, replayed: bool) -> Outcome:
    return replace(outcome, document=_json(outcome.document),
                   resolution=_json(outcome.resolution), replayed=replayed)
