"""Each write is an OpenTelemetry span carrying its namespace, key, version and position;
a caller's W3C trace context is kept with the events it writes, an invalid one ignored."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
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


CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"


def stored_trace(db: psycopg.Connection[Any], position: int) -> tuple[Any, ...] | None:
    return db.execute("SELECT traceparent, tracestate FROM ssot_events"
                      " WHERE notification_id = %s", (position,)).fetchone()


def test_a_callers_trace_is_kept_with_the_event_it_writes(
        client: httpx.Client, ns: str, db: psycopg.Connection[Any]) -> None:
    caller = f"00-{CALLER_TRACE}-b7ad6b7169203331-01"
    written = client.put(f"/v1/namespaces/{ns}/entries/traced", json={"a": 1},
                         headers={"traceparent": caller, "tracestate": "congo=t61rcWkgMzE"})
    assert written.status_code == 201, written.text
    stored = stored_trace(db, written.json()["position"])
    assert stored is not None
    traceparent, tracestate = stored
    # the caller's context itself while no span is recorded, else the commit span's, in
    # the caller's trace either way (another test of the session may add a processor)
    assert traceparent[3:35] == CALLER_TRACE and tracestate == "congo=t61rcWkgMzE"


def test_an_invalid_traceparent_is_ignored_not_refused(
        client: httpx.Client, ns: str, db: psycopg.Connection[Any]) -> None:
    bad = "00-ffffffffffffffffffffffffffffffff-zzzzzzzzzzzzzzzz-01"
    written = client.put(f"/v1/namespaces/{ns}/entries/untraced", json={"a": 1},
                         headers={"traceparent": bad, "tracestate": "a=b"})
    assert written.status_code == 201, written.text
    stored = stored_trace(db, written.json()["position"])
    assert stored is not None and (stored[0] is None or bad not in stored[0])
    assert stored[1] != "a=b"
