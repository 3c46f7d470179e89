"""Spans cost nothing until a span processor is there to receive them."""

from __future__ import annotations

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nexus_ssot.ledger import telemetry
from nexus_ssot.ledger.settings import Settings


def test_no_span_is_made_without_a_processor_and_every_one_after() -> None:
    provider = telemetry.tracer_provider(Settings(database_url="postgresql://unused/x"))
    tracer = provider.get_tracer("test")
    with telemetry.span(provider, tracer, "unseen") as span:
        span.set_attribute("a", 1)
        assert not span.is_recording()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with telemetry.span(provider, tracer, "seen") as span:
        span.set_attribute("a", 1)
        assert span.is_recording()
    assert [(s.name, dict(s.attributes or {})) for s in exporter.get_finished_spans()] == [
        ("seen", {"a": 1})]


def test_a_console_exporter_records_from_the_start() -> None:
    provider = telemetry.tracer_provider(Settings(database_url="postgresql://unused/x",
                                                  otel_exporter="console"))
    try:
        with telemetry.span(provider, provider.get_tracer("test"), "seen") as span:
            assert span.is_recording()
    finally:
        provider.shutdown()
