"""Group commit: one writer thread turns the write commands in flight into one transaction.

The library serialises every insert transaction on a table lock, so one command per
transaction caps throughput at ~1k/s whatever the parallelism. The writer instead drains
its queue, decides every command against the state left by the commands before it (so
per-entry version checks stay exact inside a batch), and records all resulting events in
one ``insert_events`` call. Outcomes are released only after the commit; if the batch
fails (another process wrote one of its entries, a poison row, a dropped connection) the
writer re-runs each command alone against fresh state, so a conflicting request fails
alone and nothing is reported that did not commit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import IntegrityError, PersistenceError

from .domain import (
    EVENT_TYPE_NAMES,
    Command,
    Context,
    EntryDeleted,
    EntryEvent,
    EntryState,
    Limits,
    decide,
    evolve,
)
from .errors import IdempotencyKeyReused, LedgerError, NotFound, PreconditionFailed, Unavailable
from .store import InlineBatch, LedgerApplication

log = logging.getLogger(__name__)

Address = tuple[str, str]


@dataclass(frozen=True)
class Idempotency:
    """An idempotency key (scoped by actor) and the hash of the request it names."""

    actor: str
    key: str
    request_hash: bytes


@dataclass(frozen=True)
class Outcome:
    """What a committed write produced (or, when ``replayed``, what it had produced)."""

    namespace: str
    key: str
    version: int
    position: int
    recorded_at: datetime
    event_type: str
    document: Any
    replayed: bool = False


@dataclass
class _Request:
    command: Command
    context: Context
    idempotency: Idempotency | None
    future: Future[Outcome]
    attempts: int = 0


@dataclass
class _Decided:
    request: _Request
    event: EntryEvent | None = None
    error: LedgerError | None = None
    replay_of: _Request | None = None  # same idempotency key earlier in this batch
    outcome: Outcome | None = None  # replayed from an earlier request


_STOP = object()
_MAX_ATTEMPTS = 5


class GroupCommitWriter:
    """Owns every write of this process. ``submit`` is thread-safe and returns a Future."""

    def __init__(
        self,
        app: LedgerApplication,
        limits_for: Callable[[str], Limits],
        *,
        max_batch: int = 256,
        cache_size: int = 100_000,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self._app = app
        self._limits_for = limits_for
        self._max_batch = max_batch
        self._cache_size = cache_size
        self._cache: OrderedDict[Address, EntryState | None] = OrderedDict()
        self._queue: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ssot-writer", daemon=True)
        self._stopped = threading.Event()
        self._on_commit = on_commit
        self._pending_states: dict[Address, EntryState | None] = {}

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish every command already submitted, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self._stopped.set()

    def submit(
        self, command: Command, context: Context, idempotency: Idempotency | None = None
    ) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        if self._stopped.is_set():
            future.set_exception(Unavailable("the writer is shutting down; retry"))
            return future
        self._queue.put(_Request(command, context, idempotency, future))
        return future

    def write_batch(
        self, items: list[tuple[Command, Context, Idempotency | None]]
    ) -> list[Future[Outcome]]:
        """Decide and commit ``items`` as one batch now, on the calling thread; the futures
        are done on return. For a caller that does its own batching (the writer process);
        never use it while the writer thread runs."""
        batch = [_Request(c, x, i, Future()) for c, x, i in items]
        for start in range(0, len(batch), self._max_batch):
            self._write_guarded(batch[start:start + self._max_batch])
        return [req.future for req in batch]

    # --- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Request] = [first]  # type: ignore[list-item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._write_guarded(batch)
            if stop:
                return

    def _write_guarded(self, batch: list[_Request]) -> None:
        try:
            self._write(batch)
        except Exception as e:  # never let the writer die silently: fail the batch
            log.exception("writer failed a batch of %d", len(batch))
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(Unavailable(f"the write failed unexpectedly: {e}"))

    def _write(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        try:
            decided = self._decide(batch)
        except PersistenceError as e:  # nothing was written
            self._forget(batch)
            for req in batch:
                req.future.set_exception(Unavailable(f"the event store is unavailable ({e})"))
            return
        try:
            committed = self._commit(decided)
        except IntegrityError:
            # Another writer got to one of these entries first, or an idempotency key
            # was taken meanwhile: forget what we thought we knew and go one by one.
            self._forget(batch)
            if len(batch) == 1:
                self._retry_alone(batch[0])
            else:
                for req in batch:
                    self._write([req])
            return
        except PersistenceError as e:
            self._forget(batch)
            self._fail_or_confirm(decided, e)
            return
        self._release(decided, committed)
        if self._on_commit is not None and committed:
            self._on_commit(len(committed), time.perf_counter() - started)

    def _retry_alone(self, req: _Request) -> None:
        req.attempts += 1
        if self._confirm_committed([req]):
            return
        if req.attempts >= _MAX_ATTEMPTS:
            req.future.set_exception(
                Unavailable("the entry is being written by another process; retry")
            )
            return
        self._write([req])

    # --- deciding ------------------------------------------------------------------

    def _decide(self, batch: list[_Request]) -> list[_Decided]:
        addresses = {(r.command.namespace, r.command.key) for r in batch}
        cached = {a for a in addresses if a in self._cache}
        states = self._states(addresses)
        stored = self._stored_idempotency([r.idempotency for r in batch if r.idempotency])
        seen: dict[tuple[str, str], _Request] = {}
        decided: list[_Decided] = []
        for req in batch:
            d = _Decided(req)
            decided.append(d)
            idem = req.idempotency
            if idem is not None:
                scope = (idem.actor, idem.key)
                earlier = seen.get(scope)
                if earlier is not None:
                    assert earlier.idempotency is not None
                    if earlier.idempotency.request_hash != idem.request_hash:
                        d.error = _reused(idem)
                    else:
                        d.replay_of = earlier
                    continue
                if scope in stored:
                    request_hash, outcome = stored[scope]
                    if request_hash != idem.request_hash:
                        d.error = _reused(idem)
                    else:
                        d.outcome = outcome
                    continue
                seen[scope] = req
            address = (req.command.namespace, req.command.key)
            limits = self._limits_for(req.command.namespace)
            try:
                try:
                    event = decide(states.get(address), req.command, req.context, limits)
                except (PreconditionFailed, NotFound):
                    if address not in cached:
                        raise
                    # Accepting on a stale cached state is safe (the primary key refuses
                    # it), refusing is not: another process may have moved the entry on.
                    # Refuse only what the database's own state refuses.
                    cached.discard(address)
                    states[address] = self._load([address]).get(address)
                    event = decide(states.get(address), req.command, req.context, limits)
            except LedgerError as e:
                d.error = e
                if idem is not None:
                    del seen[(idem.actor, idem.key)]
                continue
            cached.discard(address)
            states[address] = evolve(states.get(address), event)
            d.event = event
        self._pending_states = states
        return decided

    def _states(self, addresses: set[Address]) -> dict[Address, EntryState | None]:
        states: dict[Address, EntryState | None] = {}
        missing: list[Address] = []
        for address in addresses:
            if address in self._cache:
                self._cache.move_to_end(address)
                states[address] = self._cache[address]
            else:
                missing.append(address)
        if missing:
            states.update(self._load(missing))
        return states

    def _load(self, addresses: list[Address]) -> dict[Address, EntryState | None]:
        """Current states from the database (None for entries never written)."""
        states: dict[Address, EntryState | None] = dict.fromkeys(addresses)
        with self._app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT e.namespace, e.key, e.version, e.document::text AS document,"
                " e.deleted FROM entries e"
                " JOIN unnest(%s::text[], %s::text[]) AS a(namespace, key)"
                " USING (namespace, key)",
                ([a[0] for a in addresses], [a[1] for a in addresses]),
            ).fetchall()
        for row in rows:
            states[(row["namespace"], row["key"])] = EntryState(
                namespace=row["namespace"],
                key=row["key"],
                version=row["version"],
                document=None if row["document"] is None else orjson.loads(row["document"]),
                deleted=row["deleted"],
            )
        return states

    def _stored_idempotency(
        self, keys: list[Idempotency]
    ) -> dict[tuple[str, str], tuple[bytes, Outcome]]:
        if not keys:
            return {}
        with self._app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT i.actor, i.key, i.request_hash, h.namespace, h.key AS entry_key,"
                " h.version, h.position, h.recorded_at, h.event_type,"
                " h.document::text AS document"
                " FROM idempotency_keys i"
                " JOIN unnest(%s::text[], %s::text[]) AS k(actor, key) USING (actor, key)"
                " JOIN entry_history h ON h.namespace = i.namespace"
                "  AND h.key = i.entry_key AND h.version = i.version",
                ([k.actor for k in keys], [k.key for k in keys]),
            ).fetchall()
        return {
            (row["actor"], row["key"]): (bytes(row["request_hash"]), _outcome_from_row(row))
            for row in rows
        }

    # --- committing ----------------------------------------------------------------

    def _commit(self, decided: list[_Decided]) -> dict[tuple[UUID, int], tuple[int, datetime]]:
        accepted = [d for d in decided if d.event is not None]
        if not accepted:
            return {}
        mapper = self._app.mapper
        stored = [mapper.to_stored_event(d.event) for d in accepted]  # type: ignore[arg-type]
        history = [_history_record(d.event) for d in accepted]  # type: ignore[arg-type]
        idempotency = [
            {
                "actor": d.request.idempotency.actor,
                "key": d.request.idempotency.key,
                "request_hash": d.request.idempotency.request_hash.hex(),
                "namespace": d.event.namespace,  # type: ignore[union-attr]
                "entry_key": d.event.key,  # type: ignore[union-attr]
                "version": d.event.originator_version,  # type: ignore[union-attr]
                "stream_id": d.event.originator_id,  # type: ignore[union-attr]
            }
            for d in accepted
            if d.request.idempotency is not None
        ]
        inline = InlineBatch(history=history, idempotency=idempotency)
        self._app.recorder.insert_events(stored, inline=inline)
        return inline.committed

    def _release(
        self,
        decided: list[_Decided],
        committed: dict[tuple[UUID, int], tuple[int, datetime]],
    ) -> None:
        for address, state in self._pending_states.items():
            self._remember(address, state)
        outcomes: dict[int, Outcome] = {}
        for d in decided:
            fut = d.request.future
            if d.error is not None:
                fut.set_exception(d.error)
            elif d.outcome is not None:
                fut.set_result(d.outcome)
            elif d.replay_of is not None:
                original = outcomes.get(id(d.replay_of))
                if original is None:  # the original was rejected: so is its retry
                    exc = d.replay_of.future.exception()
                    fut.set_exception(exc if exc else Unavailable("write outcome unknown"))
                else:
                    fut.set_result(_replayed(original))
            else:
                event = d.event
                assert event is not None
                position, recorded_at = committed[(event.originator_id, event.originator_version)]
                outcome = _outcome(event, position, recorded_at)
                outcomes[id(d.request)] = outcome
                fut.set_result(outcome)

    def _fail_or_confirm(self, decided: list[_Decided], error: Exception) -> None:
        """The store failed mid-commit. A connection dropped after the server committed
        hides a commit that happened: look for the batch's event ids before reporting
        failure (the batch is one transaction: all of them are there, or none)."""
        accepted = [d.event for d in decided if d.event is not None]
        try:
            committed = self._committed_events([e.event_id for e in accepted])
        except PersistenceError:
            committed = {}
        if accepted and len(committed) == len(accepted):
            self._release(decided, {
                (e.originator_id, e.originator_version): (
                    committed[e.event_id].position, committed[e.event_id].recorded_at)
                for e in accepted
            })
            return
        for d in decided:
            d.request.future.set_exception(
                Unavailable(f"the event store is unavailable ({error}); retry")
            )

    def _confirm_committed(self, batch: list[_Request]) -> bool:
        """Whether these requests' events are in the log; if so, answer them."""
        committed = self._committed_events([req.context.event_id for req in batch])
        if len(committed) != len(batch):
            return False
        for req in batch:
            req.future.set_result(committed[req.context.event_id])
        return True

    def _committed_events(self, event_ids: list[UUID]) -> dict[UUID, Outcome]:
        """Outcomes of those of ``event_ids`` whose events are in the log."""
        if not event_ids:
            return {}
        with self._app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT namespace, key, version, position, recorded_at, event_type,"
                " document::text AS document, event_id FROM entry_history"
                " WHERE event_id = ANY(%s)",
                (event_ids,),
            ).fetchall()
        return {row["event_id"]: _outcome_from_row(row, replayed=False) for row in rows}

    # --- the state cache -----------------------------------------------------------

    def _remember(self, address: Address, state: EntryState | None) -> None:
        if self._cache_size <= 0:
            return
        self._cache[address] = state
        self._cache.move_to_end(address)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _forget(self, batch: list[_Request]) -> None:
        for req in batch:
            self._cache.pop((req.command.namespace, req.command.key), None)


def _reused(idem: Idempotency) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"Idempotency-Key {idem.key!r} was already used with a different request",
        field="Idempotency-Key",
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
    }


def _outcome(event: EntryEvent, position: int, recorded_at: datetime) -> Outcome:
    return Outcome(
        namespace=event.namespace,
        key=event.key,
        version=event.originator_version,
        position=position,
        recorded_at=recorded_at,
        event_type=EVENT_TYPE_NAMES[type(event)],
        document=event.document,
    )


def _replayed(outcome: Outcome) -> Outcome:
    return Outcome(**{**outcome.__dict__, "replayed": True})


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
    )
