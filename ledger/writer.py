"""Group commit: one writer thread turns the write commands in flight into one transaction.

The library serialises every insert transaction on a table lock, so one command per
transaction caps throughput at ~1k/s whatever the parallelism. The writer instead drains
its queue, decides every command against the state left by the commands before it (so
per-entry version checks stay exact inside a batch; see ``decider``), and records all
resulting events in one ``append`` of its ``EventStore`` (a command that changes nothing
appends nothing and is answered with the version it found). Outcomes are released only
after the commit; if the batch fails (another process wrote one of its entries, a poison
row, a dropped connection) the writer re-runs each command alone against fresh state, so a
conflicting request fails alone and nothing is reported that did not commit. An answer
that appended nothing (a refusal, "unchanged") is released only once it is recorded under
its idempotency key: the key's row, first come, is the one answer of every attempt of
the key, whichever writer process decides them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from eventsourcing.persistence import DataError, IntegrityError, PersistenceError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context

from . import telemetry
from .addressing import stream_id
from .commands import Command, Context, Trace
from .decider import DEFAULT_CACHE_BYTES, BatchDecider, Decision, Request, Result
from .documents import Limits
from .domain import Unchanged
from .errors import InvalidInput, Unavailable, error_record
from .event_store import (
    AnswerRecord,
    Committed,
    EventStore,
    Idempotency,
    IdempotencyRecord,
    Outcome,
    outcome_of,
    unchanged_outcome,
)
from .events import EntryEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Write:
    """One request to the writer: its operations, applied all or none when ``atomic``
    (then its result is the list of their outcomes), under one idempotency key."""

    ops: tuple[tuple[Command, Context], ...]
    idempotency: Idempotency | None = None
    atomic: bool = False


_STOP = object()
_MAX_ATTEMPTS = 5


class GroupCommitWriter:
    """Owns every write of this process. ``submit`` is thread-safe and returns a Future."""

    def __init__(
        self,
        store: EventStore,
        limits_for: Callable[[str], Limits],
        *,
        max_batch: int = 256,
        cache_size: int = 100_000,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        on_commit: Callable[[int, float], None] | None = None,
        hash_chain: bool = True,
        implicit_namespaces: bool = True,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._store = store
        self._decider = BatchDecider(store, limits_for, cache_size=cache_size,
                                     cache_bytes=cache_bytes,
                                     hash_chain=hash_chain,
                                     implicit_namespaces=implicit_namespaces)
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Request | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ssot-writer", daemon=True)
        self._stopped = threading.Event()
        self._on_commit = on_commit
        self._tracer_provider = tracer_provider
        self._tracer = (tracer_provider.get_tracer("nexus_ssot.writer")
                        if tracer_provider is not None else None)

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        """Whether the writer thread runs (it takes commands)."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish every command already submitted, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self._stopped.set()

    def submit(
        self, command: Command, context: Context, idempotency: Idempotency | None = None
    ) -> Future[Outcome]:
        return self._submit(Request(((command, context),), idempotency, Future()))

    def submit_all(
        self, ops: Sequence[tuple[Command, Context]], idempotency: Idempotency | None = None
    ) -> Future[list[Outcome]]:
        """Apply ``ops`` in one transaction, all or none; the Future gives their outcomes.
        A rejected operation fails the whole request, with ``extra["operation"]`` its
        index."""
        return self._submit(Request(tuple(ops), idempotency, Future(), atomic=True))

    def _submit(self, request: Request) -> Future[Any]:
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
            Request(item.ops, item.idempotency, Future(), atomic=item.atomic)
            if isinstance(item, Write) else Request(((item[0], item[1]),), item[2], Future())
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
            batch: list[Request] = [first]  # type: ignore[list-item]
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

    def _write_guarded(self, batch: list[Request]) -> None:
        spans = self._commit_spans(batch)
        try:
            self._write(batch)
        except Exception as e:  # never let the writer die silently: fail the batch
            log.exception("writer failed a batch of %d", len(batch))
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(Unavailable(f"the write failed unexpectedly: {e}"))
        for req, made in spans:
            _end_commit_span(req, made)

    def _commit_spans(self, batch: list[Request]) -> list[tuple[Request, Span]]:
        """While spans are recorded: one ``ledger.commit`` span per request of ``batch``,
        a child of the trace context it came with (a root without one), from now until
        it is answered. Its context is the one its events are stored with and broadcast
        with: their creation context, in the OpenTelemetry messaging conventions' words
        (hence a PRODUCER span). A batch serves several traces: each gets its own span
        of the same commit. Without spans (or for a trace not sampled), events keep the
        context requests came with."""
        if self._tracer is None or self._tracer_provider is None \
                or not telemetry.records(self._tracer_provider):
            return []
        spans = []
        for req in batch:
            if telemetry.dropped(self._tracer_provider, req.ops[0][1].trace):
                continue
            made = self._tracer.start_span(
                "ledger.commit", context=telemetry.context_of(req.ops[0][1].trace),
                kind=SpanKind.PRODUCER,
                attributes={"ssot.batch.requests": len(batch), "ssot.operations": len(req.ops)})
            trace = telemetry.trace_of(set_span_in_context(made))
            req.ops = tuple((command, replace(context, trace=trace))
                            for command, context in req.ops)
            spans.append((req, made))
        return spans

    def _write(self, batch: list[Request]) -> None:
        started = time.perf_counter()
        try:
            decided = self._decider.decide(batch)
        except PersistenceError as e:  # nothing was written
            self._decider.forget(batch)
            for req in batch:
                req.future.set_exception(Unavailable(f"the event store is unavailable ({e})"))
            return
        try:
            committed = self._commit(decided)
        except IntegrityError:
            # Another writer got to one of these entries first, or an idempotency key
            # was taken meanwhile: forget what we thought we knew and go one by one.
            self._decider.forget(batch)
            if len(batch) == 1:
                self._retry_alone(batch[0])
            else:
                for req in batch:
                    self._write([req])
            return
        except DataError as e:
            # The store refused a value of one of these writes (nothing was committed):
            # go one by one so the write carrying it fails alone, as a bad input.
            self._decider.forget(batch)
            if len(batch) == 1:
                batch[0].future.set_exception(InvalidInput(
                    f"the write holds a value the event store cannot store ({e})",
                    code="unstorable_value", field="document"))
            else:
                for req in batch:
                    self._write([req])
            return
        except PersistenceError as e:
            self._decider.forget(batch)
            self._fail_or_confirm(decided, e)
            return
        again = self._remember_answers(decided)
        self._release(decided, committed, again)
        if self._on_commit is not None and committed:
            self._on_commit(len(committed), time.perf_counter() - started)
        for req in again:  # another writer answered their key first: they find its answer
            self._decider.forget([req])
            self._retry_alone(req)

    def _retry_alone(self, req: Request) -> None:
        req.attempts += 1
        if self._confirm_committed(req):
            return
        if req.attempts >= _MAX_ATTEMPTS:
            req.future.set_exception(
                Unavailable("the entry is being written by another process; retry")
            )
            return
        self._write([req])

    # --- committing ----------------------------------------------------------------

    def _commit(self, decided: list[Decision]) -> Committed:
        keys = [_idempotency_record(d) for d in decided
                if d.request.idempotency is not None and d.events]
        traces: dict[UUID, Trace] = {}
        for d in decided:
            trace = d.request.ops[0][1].trace  # one request, one trace context
            if trace is not None:
                traces.update((e.event_id, trace) for e in d.events)
        return self._store.append([e for d in decided for e in d.events], keys, traces)

    def _remember_answers(self, decided: list[Decision]) -> list[Request]:
        """Record under their keys the answers of a committed batch that appended nothing
        (a refusal, or every operation unchanged): the key's row, not the writer, decides
        which attempt of a key is answered first, so two writer processes deciding
        attempts of one key at once give one answer. Returns the requests whose key was
        taken meanwhile (and their retries in the batch), to be decided again; if the
        store fails, those answers become 503s (their retry is decided afresh)."""
        answers = [(d, record) for d in decided if (record := _answer_record(d)) is not None]
        if not answers:
            return []
        try:
            recorded = self._store.record_answers([record for _, record in answers])
        except PersistenceError as e:
            for d, _ in answers:
                d.error = Unavailable(f"the event store is unavailable ({e}); retry")
            return []
        taken = {id(d.request) for d, record in answers
                 if (record.idempotency.actor, record.idempotency.key) not in recorded}
        return [d.request for d in decided if id(d.request) in taken
                or (d.replay_of is not None and id(d.replay_of) in taken)]

    def _release(self, decided: list[Decision], committed: Committed,
                 again: Sequence[Request] = ()) -> None:
        """Answer each decision of a committed batch but those to be decided ``again``."""
        self._decider.keep_decided_states(committed)
        results: dict[int, Outcome | list[Outcome]] = {}
        skipped = {id(req) for req in again}
        for d in decided:
            fut = d.request.future
            if id(d.request) in skipped:
                continue
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
                outcomes = [_outcome(r, committed) for r in d.results]
                result: Outcome | list[Outcome] = (
                    outcomes if d.request.atomic else outcomes[0])
                results[id(d.request)] = result
                fut.set_result(result)

    def _fail_or_confirm(self, decided: list[Decision], error: Exception) -> None:
        """The store failed mid-commit. A connection dropped after the server committed
        hides a commit that happened: look for the batch's event ids before reporting
        failure (the batch is one transaction: all of them are there, or none)."""
        accepted = [e for d in decided for e in d.events]
        try:
            committed = self._store.committed_outcomes([e.event_id for e in accepted])
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

    def _confirm_committed(self, req: Request) -> bool:
        """Whether the events this request was last decided to append are in the log; if
        so, answer it."""
        ids = [r.event_id for r in req.results if isinstance(r, EntryEvent)]
        if not ids:
            return False
        # (and the events whose versions its other operations found unchanged)
        found_at = [r.state.event_id for r in req.results
                    if isinstance(r, Unchanged) and r.state.event_id is not None]
        found = self._store.committed_outcomes([*ids, *found_at])
        if any(i not in found for i in ids):
            return False
        committed: Committed = {(stream_id(o.namespace, o.key), o.version):
                                (o.position, o.recorded_at) for o in found.values()}
        outcomes = [_outcome(r, committed) for r in req.results]
        req.future.set_result(outcomes if req.atomic else outcomes[0])
        return True


def _end_commit_span(req: Request, made: Span) -> None:
    """End the commit span of ``req`` (answered): where its first operation's entry
    landed, or the error it was answered with."""
    error = req.future.exception()
    if error is not None:
        made.set_status(Status(StatusCode.ERROR, str(error)))
        made.set_attribute("error.type", type(error).__name__)
    else:
        result = req.future.result()
        first: Outcome = result[0] if isinstance(result, list) else result
        made.set_attribute("ssot.namespace", first.namespace)
        made.set_attribute("ssot.key", first.key)
        made.set_attribute("ssot.version", first.version)
        made.set_attribute("ssot.position", first.position)
    made.end()


def _outcome(result: Result, committed: Committed) -> Outcome:
    """The outcome of one operation of a batch committed at ``committed``."""
    if isinstance(result, Unchanged):
        state = result.state
        if state.position is not None and state.recorded_at is not None:
            return unchanged_outcome(state, state.position, state.recorded_at)
        # the version it found was made earlier in the same batch
        position, recorded_at = committed[(stream_id(state.namespace, state.key),
                                           state.version)]
        return unchanged_outcome(state, position, recorded_at)
    position, recorded_at = committed[(result.originator_id, result.originator_version)]
    return outcome_of(result, position, recorded_at)


def _idempotency_record(d: Decision) -> IdempotencyRecord:
    """The idempotency key of a request that appended events, remembered with them (and,
    for an atomic request that left some entries unchanged, the event each operation
    answered with)."""
    assert d.request.idempotency is not None
    answers: tuple[UUID, ...] = ()
    if d.request.atomic and len(d.events) < len(d.results):
        ids = [r.state.event_id if isinstance(r, Unchanged) else r.event_id
               for r in d.results]
        answers = tuple(i for i in ids if i is not None)
        assert len(answers) == len(ids), "a state the writer answers with knows its event"
    return IdempotencyRecord(d.request.idempotency, tuple(d.events), d.request.atomic,
                             answers)


def _answer_record(d: Decision) -> AnswerRecord | None:
    """What to remember under the key of a request decided here that appended nothing:
    its refusal (not a 503: that is no answer), or the versions it left unchanged."""
    idem = d.request.idempotency
    if not d.keyed or idem is None:
        return None
    if d.error is not None:
        if isinstance(d.error, Unavailable):
            return None
        return AnswerRecord(idem, d.request.atomic, error=error_record(d.error))
    if d.events or not d.results:
        return None
    found = tuple(r.state.event_id for r in d.results
                  if isinstance(r, Unchanged) and r.state.event_id is not None)
    assert len(found) == len(d.results), "a state the writer answers with knows its event"
    return AnswerRecord(idem, d.request.atomic, unchanged=found)


def _replayed(outcome: Outcome) -> Outcome:
    return Outcome(**{**outcome.__dict__, "replayed": True})
