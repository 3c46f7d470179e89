"""A write request carried to the writer and back: the metadata every event it appends
carries, the bounded wait for the commit, and the answer (the entry made, and how a stale
If-Match was resolved)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
from fastapi import Request
from opentelemetry.trace import Span, SpanKind
from starlette.responses import Response

from nexus_ssot.access.identity import Identity
from nexus_ssot.ledger import stopping, telemetry
from nexus_ssot.ledger.commands import Command, Context, Trace
from nexus_ssot.ledger.errors import InvalidInput, Unavailable
from nexus_ssot.ledger.event_store import Idempotency, Outcome
from nexus_ssot.ledger.metrics import metrics, write_counter

from . import http
from .params import JSON, request_state, service_of
from .service import Service

T = TypeVar("T")


def outcome_json(outcome: Outcome, request: Request | None = None) -> dict[str, Any]:
    """The body of a write's answer: the entry it made, and how a stale If-Match was
    resolved (``merged``, ``base_version``, ``rebased_over``; ``resolution`` in full), or
    ``"unchanged": true`` with the entry as it already was when it appended nothing.
    Given the request, the document is left out (null) for a caller who may write the
    entry but not read it: a patch's answer would show what others wrote."""
    body: dict[str, Any] = {
        "namespace": outcome.namespace,
        "key": outcome.key,
        "version": outcome.version,
        "position": outcome.position,
        "recorded_at": http.rfc3339(outcome.recorded_at),
        "document": outcome.document,
    }
    identity = request_state(request).get("identity") if request is not None else None
    if identity is not None and not service_of(request).access.policies.decide(  # type: ignore[arg-type]
            identity, "read", outcome.namespace, outcome.key).allowed:
        body["document"] = None
        body["document_hidden"] = True
    resolution = outcome.resolution
    if resolution is not None:
        if resolution.get("policy") == "merge":
            body.update(merged=True, base_version=resolution["base_version"],
                        rebased_over=resolution["rebased_over"])
        body["resolution"] = resolution
    if outcome.unchanged:
        body["unchanged"] = True
    return body


class WriteRequest:
    """Who, why and which retry a write request is: the metadata every event it appends
    carries, and its idempotency key scoped by actor.

    ``auth`` — how the actor authenticated, recorded in every event — is the one place
    that says so: ``request.state.identity.auth_record()`` when the authentication
    middleware has set ``request.state.identity`` (an ``access.identity.Identity``; with
    auth off, ``{"method": "anonymous"}``), else None."""

    def __init__(self, request: Request, body: bytes, reason: str | None = None) -> None:
        settings = service_of(request).settings
        self.idempotency_key = http.idempotency_key(request)
        state = request_state(request)
        identity: Identity | None = state.get("identity")
        if identity is None or identity.method == "anonymous":  # auth off
            self.actor = http.actor(request, default=settings.default_actor,
                                    trust_header=settings.trust_actor_header)
        else:
            self.actor = identity.actor
        header_reason = http.reason(request)  # checked even when the body gives one
        self.reason = reason if reason is not None else header_reason
        self.correlation_id: str = state["correlation_id"]
        self.timestamp = http.utc_now()
        self.auth: dict[str, Any] | None = (
            identity.auth_record() if identity is not None else None)
        self.idempotency = (
            Idempotency(self.actor, self.idempotency_key, http.request_hash(request, body))
            if self.idempotency_key else None
        )
        #: The caller's trace context (W3C ``traceparent``/``tracestate``; None without a
        #: valid one), and the one the events carry: the caller's, or the span ``traced``
        #: makes for the request while spans are recorded (docs/tracing.md).
        self.parent = telemetry.incoming(request.headers)
        self.trace: Trace | None = telemetry.trace_of(self.parent) if self.parent else None

    def context(self) -> Context:
        """The context of one more event of this request (each has its own id)."""
        return Context(
            event_id=uuid.uuid4(),
            timestamp=self.timestamp,
            actor=self.actor,
            correlation_id=self.correlation_id,
            reason=self.reason,
            idempotency_key=self.idempotency_key,
            auth=self.auth,
            trace=self.trace,
        )


@contextmanager
def traced(service: Service, meta: WriteRequest, name: str) -> Iterator[Span]:
    """The request's server span ``name``: a child of the caller's trace context when it
    sent one, else a trace's root; its context becomes what the request's events carry.
    A span that does nothing while spans are not recorded (the caller's context, if any,
    is then carried on unchanged)."""
    with service.span(name, context=meta.parent, kind=SpanKind.SERVER) as span:
        meta.trace = telemetry.trace_of_span(span, meta.parent)
        yield span


async def within_write_timeout(service: Service, write: Awaitable[T]) -> T:
    """``write`` awaited for at most the configured write timeout, else a 503."""
    try:
        return await stopping.within(service.settings.write_timeout, write)
    except TimeoutError:
        raise Unavailable(
            f"the write did not complete within {service.settings.write_timeout}s; it may "
            "still commit: retry with the same Idempotency-Key to learn its outcome"
        ) from None


async def write_command(request: Request, command: Command, body: bytes,
                        reason: str | None = None) -> Response:
    """Append the one event of ``command`` and answer the entry it made: 201 (with
    Location) when it created the entry, else 200 (also when it changed nothing and
    appended nothing: ``"unchanged": true``)."""
    service = service_of(request)
    meta = WriteRequest(request, body, reason)
    with traced(service, meta, "ledger.write") as span:
        span.set_attribute("ssot.namespace", command.namespace)
        span.set_attribute("ssot.key", command.key)
        span.set_attribute("ssot.command", type(command).__name__)
        outcome = await within_write_timeout(
            service, service.writer.write(command, meta.context(), meta.idempotency))
        span.set_attribute("ssot.version", outcome.version)
        span.set_attribute("ssot.position", outcome.position)
        if outcome.resolution is not None:
            span.set_attribute("ssot.resolution", outcome.resolution["policy"])
    count_writes(service, [outcome])
    status = 201 if outcome.event_type == "entry.created" else 200
    headers = {"ETag": http.etag(outcome.version)}
    if status == 201:
        headers["Location"] = str(request.url.path)
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(orjson.dumps(outcome_json(outcome, request)), status_code=status,
                    media_type=JSON,
                    headers=headers)


def count_writes(service: Service, outcomes: list[Outcome]) -> None:
    """Count the writes of ``outcomes`` by event type and outcome (``ledger/metrics.py``),
    and note their positions as committed (``service.log_head``)."""
    m = metrics()
    for outcome in outcomes:
        service.log_head.saw(outcome.position)
        if outcome.replayed:
            m.idempotent_replays.inc()
            kind = "replayed"
        elif outcome.event_type is None:
            kind = "unchanged"
        else:
            kind = "appended"
            service.namespace_labels.count_write(outcome.namespace)
        write_counter(outcome.event_type or "none", kind).inc()


def replayed(outcomes: list[Outcome]) -> dict[str, str] | None:
    """The headers of an answer that repeats the first request's (same Idempotency-Key)."""
    return {"Idempotent-Replayed": "true"} if outcomes and outcomes[0].replayed else None


def check_reason(reason: Any) -> str | None:
    """The ``reason`` member of a request body, when given: 1-1024 characters of text."""
    if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= 1024):
        raise InvalidInput("reason must be 1-1024 characters of text", code="invalid_reason",
                           field="reason")
    return reason
