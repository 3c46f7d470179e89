"""OpenTelemetry tracer and meter providers, configured from settings; and spans that cost
nothing while no span processor is there to receive them."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import INVALID_SPAN, Span, Tracer

from .errors import InvalidInput
from .settings import Settings

EXPORTERS = ("none", "console")


class LedgerTracerProvider(TracerProvider):
    """The SDK's tracer provider, knowing whether it has a span processor: a span made
    while it has none (no exporter configured) is work that no one ever sees."""

    recording = False

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.recording = True


#: What ``span`` gives while nothing records: a span whose methods do nothing.
_NOT_RECORDED: AbstractContextManager[Span] = contextlib.nullcontext(INVALID_SPAN)


def span(provider: TracerProvider, tracer: Tracer, name: str) -> AbstractContextManager[Span]:
    """``tracer.start_as_current_span(name)``, or a span that does nothing when
    ``provider`` has no span processor (made from ``providers``: one can be added later,
    and spans from then on are recorded)."""
    if isinstance(provider, LedgerTracerProvider) and not provider.recording:
        return _NOT_RECORDED
    return tracer.start_as_current_span(name)


def providers(settings: Settings) -> tuple[TracerProvider, MeterProvider]:
    """Own providers (not the global ones), so several apps in one process stay apart."""
    if settings.otel_exporter not in EXPORTERS:
        raise InvalidInput(
            f"SSOT_OTEL_EXPORTER must be one of {', '.join(EXPORTERS)}, "
            f"not {settings.otel_exporter!r}",
            field="otel_exporter",
        )
    resource = Resource.create({"service.name": settings.service_name})
    tracer_provider = LedgerTracerProvider(resource=resource)
    readers = []
    if settings.otel_exporter == "console":
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(),
                                                     export_interval_millis=60_000))
    return tracer_provider, MeterProvider(resource=resource, metric_readers=readers)
