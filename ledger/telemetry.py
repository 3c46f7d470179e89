"""OpenTelemetry tracer and meter providers, configured from settings."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from .errors import InvalidInput
from .settings import Settings

EXPORTERS = ("none", "console")


def providers(settings: Settings) -> tuple[TracerProvider, MeterProvider]:
    """Own providers (not the global ones), so several apps in one process stay apart."""
    if settings.otel_exporter not in EXPORTERS:
        raise InvalidInput(
            f"SSOT_OTEL_EXPORTER must be one of {', '.join(EXPORTERS)}, "
            f"not {settings.otel_exporter!r}",
            field="otel_exporter",
        )
    resource = Resource.create({"service.name": settings.service_name})
    tracer_provider = TracerProvider(resource=resource)
    readers = []
    if settings.otel_exporter == "console":
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(),
                                                     export_interval_millis=60_000))
    return tracer_provider, MeterProvider(resource=resource, metric_readers=readers)
