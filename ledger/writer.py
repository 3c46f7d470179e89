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
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import DataError, IntegrityError, PersistenceError

from .commands import Command, ConfigureNamespace, Context
from .documents import Limits
from .domain import decide
from .errors import (
    EditConflict,
    IdempotencyKeyReused,
    InvalidInput,
    LedgerError,
    NotFound,
    PreconditionFailed,
    Unavailable,
)
from .events import EVENT_TYPE_NAMES, EntryDeleted, EntryEvent, EntryState, evolve
from .merge import MAX_REPLAY_VERSIONS, Replay, needs_replay
from .namespace_settings import SETTINGS_NAMESPACE, settings_of
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
    #: How a stale If-Match was resolved (see ``EntryEvent.resolution``), else None.
    resolution: dict[str, Any] | None = None


@dataclass(frozen=True)
class Write:
    """One request to the writer: its operations, applied all or none when ``atomic``
    (then its result is the list of their outcomes), under one idempotency key."""

    ops: tuple[tuple[Command, Context], ...]
    idempotency: Idempotency | None = None
    atomic: bool = False


@dataclass
class _Request:
    ops: tuple[tuple[Command, Context], ...]
    idempotency: Idempotency | None
    future: Future[Any]
    atomic: bool = False
    attempts: int = 0


@dataclass
class _Decided:
    request: _Request
    events: list[EntryEvent] = field(default_factory=list)
    error: LedgerError | None = None
    replay_of: _Request | None = None  # same idempotency key earlier in this batch
    outcome: Outcome | list[Outcome] | None = None  # replayed from an earlier request


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
        hash_chain: bool = True,
    ) -> None:
        self._app = app
        self._chain = hash_chain
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
        return self._submit(_Request(((command, context),), idempotency, Future()))

    def submit_all(
        self, ops: Sequence[tuple[Command, Context]], idempotency: Idempotency | None = None
    ) -> Future[list[Outcome]]:
        """Apply ``ops`` in one transaction, all or none; the Future gives their outcomes.
        A rejected operation fails the whole request, with ``extra["operation"]`` its
        index."""
        return self._submit(_Request(tuple(ops), idempotency, Future(), atomic=True))

    def _submit(self, request: _Request) -> Future[Any]:
        if self._stopped.is_set():
            request.future.set_exception(Unavailable("the writer is shutting down; retry"))
        else:
            self._queue.put(request)
        return request.future

    def write_batch(
        self, items: Sequence[tuple[Command, Context, Idempotency | None] | Write]
    ) -> list[Future[Any]]:
        """Decide and commit ``items`` as one batch now, on the calling thread; the futures
        are done on return (an ``Outcome`` each, a list of them for an atomic ``Write``).
        For a caller that does its own batching (the writer process); never use it while
        the writer thread runs."""
        batch = [
            _Request(item.ops, item.idempotency, Future(), atomic=item.atomic)
            if isinstance(item, Write) else _Request(((item[0], item[1]),), item[2], Future())
            for item in items
        ]
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
        except DataError as e:
            # PostgreSQL refused a value of one of these writes (nothing was committed):
            # go one by one so the write carrying it fails alone, as a bad input.
            self._forget(batch)
            if len(batch) == 1:
                batch[0].future.set_exception(InvalidInput(
                    f"the write holds a value the event store cannot store ({e})",
                    code="unstorable_value", field="document"))
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
        if self._confirm_committed(req):
            return
        if req.attempts >= _MAX_ATTEMPTS:
            req.future.set_exception(
                Unavailable("the entry is being written by another process; retry")
            )
            return
        self._write([req])

    # --- deciding ------------------------------------------------------------------

    def _decide(self, batch: list[_Request]) -> list[_Decided]:
        addresses = {(c.namespace, c.key) for r in batch for c, _ in r.ops}
        cached = {a for a in addresses if a in self._cache}
        states = self._states(addresses)
        stored = self._stored_idempotency([r.idempotency for r in batch if r.idempotency])
        seen: dict[tuple[str, str], _Request] = {}
        in_batch: dict[Address, list[EntryEvent]] = {}
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
            overlay: dict[Address, EntryState | None] = {}
            events: list[EntryEvent] = []
            try:
                for command, context in req.ops:
                    address = (command.namespace, command.key)
                    from_cache = address in cached and address not in overlay
                    state = overlay[address] if address in overlay else states.get(address)
                    event = self._decide_one(state, command, context, from_cache, states,
                                             overlay, in_batch, events)
                    # (``states`` holds a fresher state if the cached one was re-checked)
                    state = overlay[address] if address in overlay else states.get(address)
                    overlay[address] = evolve(state, event)
                    events.append(event)
            except LedgerError as e:
                if req.atomic:
                    e.extra["operation"] = len(events)
                d.error = e
                if idem is not None:
                    del seen[(idem.actor, idem.key)]
                continue
            for address, state in overlay.items():
                cached.discard(address)
                states[address] = state
            for event in events:
                in_batch.setdefault((event.namespace, event.key), []).append(event)
            d.events = events
        self._pending_states = states
        return decided

    def _decide_one(
        self,
        state: EntryState | None,
        command: Command,
        context: Context,
        from_cache: bool,
        states: dict[Address, EntryState | None],
        overlay: dict[Address, EntryState | None],
        in_batch: dict[Address, list[EntryEvent]],
        earlier: list[EntryEvent],
    ) -> EntryEvent:
        """Decide one command against ``state`` (which ``overlay`` and ``states`` hold),
        under its namespace's conflict policy, replaying history for a stale If-Match."""
        address = (command.namespace, command.key)
        limits = self._limits_for(command.namespace)
        try:
            return self._decide_with_policy(state, command, context, limits, states, overlay,
                                            in_batch, earlier)
        except (PreconditionFailed, NotFound, EditConflict):
            if not from_cache:
                raise
            # Accepting on a stale cached state is safe (the primary key refuses it),
            # refusing is not: another process may have moved the entry on. Refuse only
            # what the database's own state refuses.
            fresh = self._load([address]).get(address)
            states[address] = fresh
            return self._decide_with_policy(fresh, command, context, limits, states, overlay,
                                            in_batch, earlier)

    def _decide_with_policy(
        self,
        state: EntryState | None,
        command: Command,
        context: Context,
        limits: Limits,
        states: dict[Address, EntryState | None],
        overlay: dict[Address, EntryState | None],
        in_batch: dict[Address, list[EntryEvent]],
        earlier: list[EntryEvent],
    ) -> EntryEvent:
        if command.expected.if_match is None or isinstance(command, ConfigureNamespace):
            return decide(state, command, context, limits, chain=self._chain)
        settings_address = (SETTINGS_NAMESPACE, command.namespace)
        if settings_address in overlay:
            settings_state = overlay[settings_address]
        else:
            if settings_address not in states:
                states.update(self._states({settings_address}))
            settings_state = states[settings_address]
        policy = settings_of(settings_state)["conflict_policy"]
        replay = None
        if needs_replay(state, command, policy):
            assert state is not None and command.expected.if_match is not None
            pending = [*in_batch.get((command.namespace, command.key), []),
                       *(e for e in earlier
                         if (e.namespace, e.key) == (command.namespace, command.key))]
            replay = self._replay(command.namespace, command.key,
                                  command.expected.if_match, state.version, pending)
        return decide(state, command, context, limits, policy=policy, replay=replay,
                      chain=self._chain)

    def _replay(self, namespace: str, key: str, base: int, upto: int,
                pending: list[EntryEvent]) -> Replay | None:
        """The versions ``base`` … ``upto`` of an entry, from this batch's events and the
        version history; None when they are too many to merge over."""
        if upto - base > MAX_REPLAY_VERSIONS:
            return None
        versions: dict[int, tuple[Any, list[dict[str, Any]]]] = {
            e.originator_version: (None if isinstance(e, EntryDeleted) else e.document,
                                   e.patch)
            for e in pending
        }
        missing = [v for v in range(base, upto + 1) if v not in versions]
        if missing:
            with self._app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
                rows = conn.execute(
                    "SELECT version, document::text AS document, patch::text AS patch"
                    " FROM entry_history WHERE namespace = %s AND key = %s"
                    " AND version BETWEEN %s AND %s",
                    (namespace, key, min(missing), max(missing)),
                ).fetchall()
            for row in rows:
                versions.setdefault(row["version"], (
                    None if row["document"] is None else orjson.loads(row["document"]),
                    orjson.loads(row["patch"])))
        if any(v not in versions for v in range(base, upto + 1)):
            return None  # history is incomplete (should not happen): refuse to merge
        return Replay(
            base_version=base,
            documents=tuple(versions[v][0] for v in range(base, upto + 1)),
            patches=tuple(versions[v][1] for v in range(base + 1, upto + 1)),
        )

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
                " e.deleted, e.hash FROM entries e"
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
                hash=row["hash"],
            )
        return states

    def _stored_idempotency(
        self, keys: list[Idempotency]
    ) -> dict[tuple[str, str], tuple[bytes, Outcome | list[Outcome]]]:
        if not keys:
            return {}
        with self._app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT i.actor, i.key, i.request_hash, i.event_ids, h.namespace,"
                " h.key AS entry_key, h.version, h.position, h.recorded_at, h.event_type,"
                " h.document::text AS document, h.resolution::text AS resolution"
                " FROM idempotency_keys i"
                " JOIN unnest(%s::text[], %s::text[]) AS k(actor, key) USING (actor, key)"
                " JOIN entry_history h ON h.namespace = i.namespace"
                "  AND h.key = i.entry_key AND h.version = i.version",
                ([k.actor for k in keys], [k.key for k in keys]),
            ).fetchall()
            found: dict[tuple[str, str], tuple[bytes, Outcome | list[Outcome]]] = {}
            for row in rows:
                outcome: Outcome | list[Outcome] = _outcome_from_row(row)
                if row["event_ids"] is not None:  # an atomic request: all its outcomes
                    ids: list[UUID] = row["event_ids"]
                    by_id = self._committed_events(ids, conn=conn, replayed=True)
                    outcome = [by_id[i] for i in ids]
                found[(row["actor"], row["key"])] = (bytes(row["request_hash"]), outcome)
        return found

    # --- committing ----------------------------------------------------------------

    def _commit(self, decided: list[_Decided]) -> dict[tuple[UUID, int], tuple[int, datetime]]:
        events = [e for d in decided for e in d.events]
        if not events:
            return {}
        mapper = self._app.mapper
        stored = [mapper.to_stored_event(e) for e in events]
        history = [_history_record(e) for e in events]
        idempotency = []
        for d in decided:
            idem = d.request.idempotency
            if idem is None or not d.events:
                continue
            first = d.events[0]
            idempotency.append({
                "actor": idem.actor,
                "key": idem.key,
                "request_hash": idem.request_hash.hex(),
                "namespace": first.namespace,
                "entry_key": first.key,
                "version": first.originator_version,
                "stream_id": first.originator_id,
                "event_ids": [e.event_id for e in d.events] if d.request.atomic else None,
            })
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
        results: dict[int, Outcome | list[Outcome]] = {}
        for d in decided:
            fut = d.request.future
            if d.error is not None:
                fut.set_exception(d.error)
            elif d.outcome is not None:
                fut.set_result(d.outcome)
            elif d.replay_of is not None:
                original = results.get(id(d.replay_of))
                if original is None:  # the original was rejected: so is its retry
                    exc = d.replay_of.future.exception()
                    fut.set_exception(exc if exc else Unavailable("write outcome unknown"))
                else:
                    fut.set_result([_replayed(o) for o in original]
                                   if isinstance(original, list) else _replayed(original))
            else:
                outcomes = []
                for event in d.events:
                    position, recorded_at = committed[
                        (event.originator_id, event.originator_version)]
                    outcomes.append(_outcome(event, position, recorded_at))
                result: Outcome | list[Outcome] = (
                    outcomes if d.request.atomic else outcomes[0])
                results[id(d.request)] = result
                fut.set_result(result)

    def _fail_or_confirm(self, decided: list[_Decided], error: Exception) -> None:
        """The store failed mid-commit. A connection dropped after the server committed
        hides a commit that happened: look for the batch's event ids before reporting
        failure (the batch is one transaction: all of them are there, or none)."""
        accepted = [e for d in decided for e in d.events]
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

    def _confirm_committed(self, req: _Request) -> bool:
        """Whether this request's events are in the log; if so, answer it."""
        ids = [context.event_id for _, context in req.ops]
        committed = self._committed_events(ids)
        if len(committed) != len(ids):
            return False
        outcomes = [committed[i] for i in ids]
        req.future.set_result(outcomes if req.atomic else outcomes[0])
        return True

    def _committed_events(self, event_ids: list[UUID], *, conn: Any = None,
                          replayed: bool = False) -> dict[UUID, Outcome]:
        """Outcomes of those of ``event_ids`` whose events are in the log."""
        if not event_ids:
            return {}
        query = (
            "SELECT namespace, key, version, position, recorded_at, event_type,"
            " document::text AS document, resolution::text AS resolution, event_id"
            " FROM entry_history WHERE event_id = ANY(%s)"
        )
        if conn is not None:
            rows = conn.execute(query, (event_ids,)).fetchall()
        else:
            with self._app.recorder.datastore.get_connection() as own:  # type: ignore[attr-defined]
                rows = own.execute(query, (event_ids,)).fetchall()
        return {row["event_id"]: _outcome_from_row(row, replayed=replayed) for row in rows}

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
            for command, _ in req.ops:
                self._cache.pop((command.namespace, command.key), None)


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
        "resolution": event.resolution,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
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
        resolution=event.resolution,
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
        resolution=orjson.loads(row["resolution"]) if row.get("resolution") else None,
    )
