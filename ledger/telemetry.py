"""OpenTelemetry tracing: the tracer provider, configured from settings; spans that cost
nothing while no span processor is there to receive them; and the W3C trace context a
write carries from the HTTP request to the writer, into the log and onto NATS
(docs/tracing.md).

A write's trace context travels as its W3C header values, ``(traceparent, tracestate)``
(``commands.Trace``): in the writer's requests, stored with each event it appends, and as the
CloudEvents distributed-tracing extension of the event broadcast. Metrics are
Prometheus's (``metrics.py``), not OpenTelemetry's."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    Span,
    SpanKind,
    Tracer,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .commands import Trace
from .errors import InvalidInput
from .settings import Settings

EXPORTERS = ("none", "console", "otlp")
#: The one OTLP protocol served (the official exporter's: protobuf over HTTP).
OTLP_PROTOCOL = "http/protobuf"


_W3C = TraceContextTextMapPropagator()


class LedgerTracerProvider(TracerProvider):
    """The SDK's tracer provider, knowing whether it has a span processor: a span made
    while it has none (no exporter configured) is work that no one ever sees."""

    recording = False

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.recording = True


#: What ``span`` gives while nothing records: a span whose methods do nothing.
_NOT_RECORDED: AbstractContextManager[Span] = contextlib.nullcontext(INVALID_SPAN)


def records(provider: TracerProvider) -> bool:
    """Whether spans of ``provider`` can reach a span processor (made from
    ``tracer_provider``: one can be added later, and spans from then on are recorded)."""
    return not isinstance(provider, LedgerTracerProvider) or provider.recording


def span(provider: TracerProvider, tracer: Tracer, name: str, *,
         context: Context | None = None,
         kind: SpanKind = SpanKind.INTERNAL) -> AbstractContextManager[Span]:
    """``tracer.start_as_current_span(name)`` (a child of ``context`` when given, else of
    the current span), or a span that does nothing when ``provider`` has no span
    processor."""
    if not records(provider):
        return _NOT_RECORDED
    return tracer.start_as_current_span(name, context=context, kind=kind)


def tracer_provider(settings: Settings) -> TracerProvider:
    """Its own provider (not the global one), so several apps in one process stay apart.
    Its sampler is the SDK's default, chosen by ``OTEL_TRACES_SAMPLER`` and
    ``OTEL_TRACES_SAMPLER_ARG`` (parent-based, always on, when unset)."""
    if settings.otel_exporter not in EXPORTERS:
        raise InvalidInput(
            f"SSOT_OTEL_EXPORTER must be one of {', '.join(EXPORTERS)}, "
            f"not {settings.otel_exporter!r}",
            field="otel_exporter",
        )
    provider = LedgerTracerProvider(
        resource=Resource.create({"service.name": settings.service_name}))
    if settings.otel_exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif settings.otel_exporter == "otlp":
        if settings.otel_exporter_otlp_protocol != OTLP_PROTOCOL:
            raise InvalidInput(
                f"OTEL_EXPORTER_OTLP_PROTOCOL must be {OTLP_PROTOCOL} (the one protocol "
                f"served), not {settings.otel_exporter_otlp_protocol!r}",
                field="OTEL_EXPORTER_OTLP_PROTOCOL")
        # imported here: the exporter pulls in requests and protobuf, needed only then
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # endpoint, headers, timeout, compression and certificates: OTEL_EXPORTER_OTLP_*
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def dropped(provider: TracerProvider, trace: Trace | None) -> bool:
    """Whether a child span of ``trace`` would not be sampled: its parent is not, and the
    sampler follows the parent (``parentbased_*``, the SDK's default). Such a span is not
    made at all: it would cost CPU and record nothing, and the context is carried on."""
    return (trace is not None and isinstance(provider.sampler, ParentBased)
            and not int(trace[0][-2:], 16) & 1)


def incoming(headers: Mapping[str, str]) -> Context | None:
    """The trace context of a request's ``traceparent`` (and ``tracestate``) headers; None
    when it has none or one that is not valid W3C trace context (then the request starts
    a trace of its own, as the W3C recommendation says: an invalid one is ignored)."""
    if "traceparent" not in headers:
        return None
    context = _W3C.extract(headers, context=Context())
    return context if get_current_span(context).get_span_context().is_valid else None


def trace_of(context: Context | None) -> Trace | None:
    """The W3C header values of ``context`` (the current context when None), or None
    when it holds no valid span context."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context)
    traceparent = carrier.get("traceparent")
    return None if traceparent is None else (traceparent, carrier.get("tracestate"))


def trace_of_span(made: Span, parent: Context | None) -> Trace | None:
    """What a write carries on from ``made``: its context when it is a real span (tracing
    on, sampled or not), else ``parent``'s (tracing off: the caller's own context, passed
    on unchanged)."""
    if made.get_span_context().is_valid:
        return trace_of(set_span_in_context(made))
    return trace_of(parent) if parent is not None else None


def context_of(trace: Trace | None) -> Context | None:
    """The parent context that ``trace`` names (None: none, or not valid)."""
    if trace is None:
        return None
    carrier = {"traceparent": trace[0]}
    if trace[1]:
        carrier["tracestate"] = trace[1]
    return incoming(carrier)


def linked(contexts: Sequence[Context | None]) -> list[Link]:
    """Links to the span contexts of ``contexts`` (messaging spans link to the creation
    context of each message they account for)."""
    links = []
    for context in contexts:
        if context is not None:
            links.append(Link(get_current_span(context).get_span_context()))
    return links
