"""Each write is an OpenTelemetry span carrying its namespace, key, version and position."""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def test_every_write_is_a_span_with_its_coordinates(api: Any, client: httpx.Client,
                                                    ns: str) -> None:
    exporter = InMemorySpanExporter()
    service = api.app.state.service
    service.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    written = client.put(f"/v1/namespaces/{ns}/entries/traced", json={"a": 1}).json()
    spans = [s for s in exporter.get_finished_spans() if s.name == "ledger.write"
             and s.attributes and s.attributes.get("ssot.namespace") == ns]
    assert len(spans) == 1
    attributes = spans[0].attributes
    assert attributes is not None
    assert attributes["ssot.key"] == "traced"
    assert attributes["ssot.version"] == written["version"]
    assert attributes["ssot.position"] == written["position"]
