"""Deciding a batch of writes: each command against the state the commands before it left.

The writer commits a batch as one append, so its commands are decided in order against an
overlay of the states the earlier ones produced: per-entry version checks stay exact inside
a batch, an idempotency key used twice is answered once (and as the store remembers it:
an outcome, or a refusal), and a stale If-Match is merged
under its namespace's conflict policy by replaying the versions it missed (from the batch
and the store's history). A command that would change nothing appends nothing: its result
is ``Unchanged``. Current states are cached across batches; a refusal, or an "unchanged"
answer (which no primary key checks), is only ever made on the store's own state, never on
a cached one. Without implicit namespaces, a write into a namespace that has neither
settings nor entries is refused (namespaces only ever come to exist, so those known to
exist are remembered).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import orjson

from .addressing import ACCESS_NAMESPACE, SCHEMAS_NAMESPACE, is_system_namespace, stream_id
from .commands import Command, ConfigureNamespace, Context, SetSchema
from .documents import Limits
from .domain import Unchanged, decide
from .errors import (
    EditConflict,
    IdempotencyKeyReused,
    LedgerError,
    NotFound,
    PreconditionFailed,
)
from .event_store import Address, Committed, EventStore, Idempotency, Outcome
from .events import EntryDeleted, EntryEvent, EntryState, evolve
from .merge import MAX_REPLAY_VERSIONS, Replay, needs_replay
from .namespace_settings import SETTINGS_NAMESPACE, asserts_formats, settings_of
from .schemas.compiler import CompiledSchema, SchemaCache, compile_schema
from .schemas.records import (
    DEFINITION_PREFIX,
    NAMESPACE_PREFIX,
    namespace_key,
    record_from,
    record_of,
)

#: What one operation comes to: the event it appends, or that it leaves its entry as is.
Result = EntryEvent | Unchanged


#: The memory the state cache may take by default (about: see ``state_weight``).
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
_ABSENT = object()
#: Python's objects of a decoded JSON document take several times its encoding (a
#: 150-byte document: ~1 KB), and each state has its own (~500 bytes with its key).
_DOCUMENT_FACTOR, _STATE_OVERHEAD = 6, 512


def state_weight(state: EntryState | None) -> int:
    """About how much memory a cached state takes: its document's encoding, weighed."""
    if state is None or state.document is None:
        return _STATE_OVERHEAD
    return _STATE_OVERHEAD + _DOCUMENT_FACTOR * len(orjson.dumps(state.document))


@dataclass
class Request:
    """One request held by the writer until it is answered: its operations (all or none
    when ``atomic``), its idempotency key, its Future, how often it was retried alone, and
    what its operations came to when last decided."""

    ops: tuple[tuple[Command, Context], ...]
    idempotency: Idempotency | None
    future: Future[Any]
    atomic: bool = False
    attempts: int = 0
    results: tuple[Result, ...] = ()


@dataclass
class Decision:
    """What one request of a batch comes to: a result per operation (the events among
    them to append), or the error refusing it, or the answer of an earlier request under its
    idempotency key (``replay_of`` in this batch, ``outcome`` from the store)."""

    request: Request
    results: list[Result] = field(default_factory=list)
    error: LedgerError | None = None
    replay_of: Request | None = None  # same idempotency key earlier in this batch
    outcome: Outcome | list[Outcome] | None = None  # replayed from an earlier request
    #: Decided here, under an idempotency key no request has used yet: its answer is to be
    #: remembered under the key (with its events, or on its own when it appended nothing).
    keyed: bool = False

    @property
    def events(self) -> list[EntryEvent]:
        """The events to append (the results that are not ``Unchanged``)."""
        return [r for r in self.results if isinstance(r, EntryEvent)]


class BatchDecider:
    """Decides batches against ``store`` and a cache of up to ``cache_size`` current
    states taking about ``cache_bytes`` of memory at most (see ``state_weight``);
    ``hash_chain`` chains the events it decides."""

    def __init__(
        self,
        store: EventStore,
        limits_for: Callable[[str], Limits],
        *,
        cache_size: int = 100_000,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        hash_chain: bool = True,
        implicit_namespaces: bool = True,
    ) -> None:
        self._store = store
        self._chain = hash_chain
        self._limits_for = limits_for
        self._cache_size = cache_size
        self._cache: OrderedDict[Address, EntryState | None] = OrderedDict()
        #: The weight of each cached state, and their sum, held to ``cache_bytes``.
        self._weights: dict[Address, int] = {}
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._pending_states: dict[Address, EntryState | None] = {}
        self._implicit = implicit_namespaces
        #: Namespaces known to exist (they never stop existing).
        self._existing: set[str] = set()
        #: Compiled schemas by the id of the event that set them (and the format mode),
        #: and the shared definitions' schemas by (name, version): both never change.
        self._schemas = SchemaCache()
        self._definitions: dict[tuple[str, int], Any] = {}

    def decide(self, batch: list[Request]) -> list[Decision]:
        """Each request's decision, in order; the states they leave are kept for
        ``keep_decided_states`` once the batch has committed."""
        addresses = {(c.namespace, c.key) for r in batch for c, _ in r.ops}
        cached = {a for a in addresses if a in self._cache}
        states = self._states(addresses)
        stored = self._store.stored_results([r.idempotency for r in batch if r.idempotency])
        seen: dict[tuple[str, str], Request] = {}
        in_batch: dict[Address, list[EntryEvent]] = {}
        decided: list[Decision] = []
        for req in batch:
            d = Decision(req)
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
                    request_hash, answer = stored[scope]
                    if request_hash != idem.request_hash:
                        d.error = _reused(idem)
                    elif isinstance(answer, LedgerError):  # refused: so is its retry
                        d.error = answer
                    else:
                        d.outcome = answer
                    continue
                seen[scope] = req
                d.keyed = True
            overlay: dict[Address, EntryState | None] = {}
            results: list[Result] = []
            events: list[EntryEvent] = []
            try:
                for command, context in req.ops:
                    address = (command.namespace, command.key)
                    from_cache = address in cached and address not in overlay
                    state = overlay[address] if address in overlay else states.get(address)
                    result = self._decide_one(state, command, context, from_cache, states,
                                              overlay, in_batch, events)
                    results.append(result)
                    if isinstance(result, Unchanged):
                        overlay[address] = result.state
                        continue
                    # (``states`` holds a fresher state if the cached one was re-checked)
                    state = overlay[address] if address in overlay else states.get(address)
                    overlay[address] = evolve(state, result)
                    events.append(result)
            except LedgerError as e:
                if req.atomic:
                    e.extra["operation"] = len(results)
                # The key stays taken: a retry behind a refusal is the same request and
                # gets the same refusal, even if a write between the two would let it
                # through (the client may have seen only the refusal). The writer records
                # the refusal under the key, so later retries get it too.
                d.error = e
                continue
            for address, state in overlay.items():
                cached.discard(address)
                states[address] = state
            for event in events:
                in_batch.setdefault((event.namespace, event.key), []).append(event)
            d.results = results
            req.results = tuple(results)
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
    ) -> Result:
        """Decide one command against ``state`` (which ``overlay`` and ``states`` hold),
        under its namespace's conflict policy, replaying history for a stale If-Match."""
        address = (command.namespace, command.key)
        limits = self._limits_for(command.namespace)
        try:
            result = self._decide_with_policy(state, command, context, limits, states,
                                              overlay, in_batch, earlier)
        except (PreconditionFailed, NotFound, EditConflict):
            if not from_cache:
                raise
        else:
            if not (from_cache and isinstance(result, Unchanged)):
                return result
        # Accepting on a stale cached state is safe (the primary key refuses it), refusing
        # is not: another process may have moved the entry on; nor is answering
        # "unchanged", which appends nothing a key could refuse. Refuse, or answer that,
        # only on the database's own state.
        fresh = self._store.current_states([address]).get(address)
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
    ) -> Result:
        exists = self._namespace_exists(state, command, states, overlay)
        if isinstance(command, SetSchema):
            changed = self._data_changed(command, earlier, in_batch)
            return decide(state, command, context, limits, chain=self._chain,
                          data_changed=changed)
        schema = (None if is_system_namespace(command.namespace)
                  else self._schema(command.namespace, states, overlay))
        if command.expected.if_match is None or isinstance(command, ConfigureNamespace):
            return decide(state, command, context, limits, chain=self._chain,
                          namespace_exists=exists, schema=schema)
        if command.namespace == ACCESS_NAMESPACE:  # a stale policy edit is refused, never merged
            return decide(state, command, context, limits, chain=self._chain)
        settings_state = self._settings_state(command.namespace, states, overlay)
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
                      chain=self._chain, namespace_exists=exists, schema=schema)

    def _data_changed(self, command: SetSchema, earlier: list[EntryEvent],
                      in_batch: dict[Address, list[EntryEvent]]) -> bool:
        """Whether an entry of the namespace a schema is set for changed after the
        position its entries were checked at (in this batch, or in the store)."""
        if command.checked_position is None or not command.key.startswith(NAMESPACE_PREFIX):
            return False
        namespace = command.key[len(NAMESPACE_PREFIX):]
        if any(e.namespace == namespace for e in earlier) or any(
                ns == namespace for ns, _ in in_batch):
            return True
        return self._store.last_position(namespace) > command.checked_position

    def _schema(self, namespace: str, states: dict[Address, EntryState | None],
                overlay: dict[Address, EntryState | None]) -> CompiledSchema | None:
        """The compiled schema of ``namespace`` as this batch has it so far (None: none)."""
        state = self._state_of((SCHEMAS_NAMESPACE, namespace_key(namespace)), states, overlay)
        record = record_of(state)
        if record is None:
            return None
        assert state is not None
        assert_formats = asserts_formats(settings_of(
            self._settings_state(namespace, states, overlay)))
        return self._schemas.get(
            (state.event_id, record.version, assert_formats),
            lambda: compile_schema(record.schema, {
                name: self._definition(name, version)
                for name, version in record.definitions.items()},
                assert_formats=assert_formats))

    def _definition(self, name: str, version: int) -> Any:
        """The schema of a shared definition at ``version`` (pinned: it exists)."""
        found = self._definitions.get((name, version))
        if found is None:
            recorded = self._store.versions(SCHEMAS_NAMESPACE, DEFINITION_PREFIX + name,
                                            version, version)
            record = record_from(recorded[version][0], version) if recorded else None
            found = record.schema if record is not None else False
            self._definitions[(name, version)] = found
        return found

    def _settings_state(self, namespace: str, states: dict[Address, EntryState | None],
                        overlay: dict[Address, EntryState | None]) -> EntryState | None:
        """The state of ``namespace``'s settings entry, as this batch has it so far."""
        return self._state_of((SETTINGS_NAMESPACE, namespace), states, overlay)

    def _state_of(self, address: Address, states: dict[Address, EntryState | None],
                  overlay: dict[Address, EntryState | None]) -> EntryState | None:
        """The state of the entry at ``address``, as this batch has it so far."""
        if address in overlay:
            return overlay[address]
        if address not in states:
            states.update(self._states({address}))
        return states[address]

    def _namespace_exists(self, state: EntryState | None, command: Command,
                          states: dict[Address, EntryState | None],
                          overlay: dict[Address, EntryState | None]) -> bool:
        """Whether the command's namespace exists (has settings or an entry, ever), as far
        as it matters: always with implicit namespaces, and for the system namespaces.
        What says it does may be cached (namespaces never stop existing); what says it
        does not is the store."""
        namespace = command.namespace
        if self._implicit or is_system_namespace(namespace) or namespace in self._existing:
            return True
        if state is not None or self._settings_state(namespace, states, overlay) is not None:
            return True  # (known once the batch that made them commits)
        if self._store.existing_namespaces([namespace]):
            self._existing.add(namespace)
            return True
        return False

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
            recorded = self._store.versions(namespace, key, min(missing), max(missing))
            for version, content in recorded.items():
                versions.setdefault(version, content)
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
            states.update(self._store.current_states(missing))
        return states

    # --- the state cache -----------------------------------------------------------

    def keep_decided_states(self, committed: Committed) -> None:
        """The last decided batch committed (at ``committed``'s positions): cache the
        states it left, each with the position and commit time of its last event."""
        for address, state in self._pending_states.items():
            if state is not None and state.position is None:
                at = committed.get((stream_id(*address), state.version))
                if at is not None:
                    state = state.placed(at[0], at[1])
            if state is not None:
                namespace, key = address
                self._existing.add(key if namespace == SETTINGS_NAMESPACE else namespace)
            self._remember(address, state)

    def forget(self, batch: list[Request]) -> None:
        """Drop the cached states of ``batch``'s entries (what we knew may be stale)."""
        for req in batch:
            for command, _ in req.ops:
                self._drop((command.namespace, command.key))

    def _remember(self, address: Address, state: EntryState | None) -> None:
        if self._cache_size <= 0:
            return
        weight = state_weight(state)
        self._cached_bytes += weight - self._weights.get(address, 0)
        self._weights[address] = weight
        self._cache[address] = state
        self._cache.move_to_end(address)
        while self._cache and (len(self._cache) > self._cache_size
                               or self._cached_bytes > self._cache_bytes):
            oldest, _ = self._cache.popitem(last=False)
            self._cached_bytes -= self._weights.pop(oldest)

    def _drop(self, address: Address) -> None:
        if self._cache.pop(address, _ABSENT) is not _ABSENT:
            self._cached_bytes -= self._weights.pop(address)

    @property
    def cached(self) -> tuple[int, int]:
        """How many states the cache holds, and their weight (see ``state_weight``)."""
        return len(self._cache), self._cached_bytes


def _reused(idem: Idempotency) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"Idempotency-Key {idem.key!r} was already used with a different request",
        field="Idempotency-Key",
    )
