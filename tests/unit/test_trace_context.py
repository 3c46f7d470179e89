"""A write's W3C trace context: taken from the request, carried to the writer, stored with
its events and put on their CloudEvents; and the OTLP exporter chosen by settings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from nexus_ssot.ledger import telemetry
from nexus_ssot.ledger.cloudevents import cloudevent
from nexus_ssot.ledger.commands import Context, Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.errors import InvalidInput
from nexus_ssot.ledger.memory_store import MemoryEventStore
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ledger.writer import GroupCommitWriter, Write
from nexus_ssot.ledger.writer_service import decode_request, encode_request

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _context(trace: tuple[str, str | None] | None) -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="t",
                   correlation_id="c", trace=trace)


def test_a_valid_traceparent_is_taken_with_its_tracestate() -> None:
    parent = telemetry.incoming({"traceparent": CALLER, "tracestate": "vendor=1"})
    assert telemetry.trace_of(parent) == (CALLER, "vendor=1")


@pytest.mark.parametrize("value", [
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
    "garbage", "",
])
def test_an_invalid_traceparent_is_ignored_as_w3c_says(value: str) -> None:
    assert telemetry.incoming({"traceparent": value}) is None


def test_no_traceparent_no_context() -> None:
    assert telemetry.incoming({"content-type": "application/json"}) is None
    assert telemetry.context_of(None) is None


def test_the_trace_crosses_the_writers_socket() -> None:
    command = Put("ns", "k", document={"a": 1})
    sent = encode_request(1, Write(((command, _context((CALLER, "v=1"))),)))
    (_, context), = decode_request(orjson.loads(sent)).ops
    assert context.trace == (CALLER, "v=1")
    bare = encode_request(2, Write(((command, _context(None)),)))
    assert decode_request(orjson.loads(bare)).ops[0][1].trace is None


def test_a_malformed_trace_on_the_socket_is_refused() -> None:
    sent = orjson.loads(encode_request(1, Write(((Put("ns", "k", document={}),
                                                  _context(None)),))))
    sent["ops"][0][2]["trace"] = [1, None]
    with pytest.raises(ValueError, match="traceparent, tracestate"):
        decode_request(sent)


def _write(writer: GroupCommitWriter, trace: tuple[str, str | None] | None) -> Context:
    context = _context(trace)
    writer.write_batch([(Put("ns", "k", document={"n": str(context.event_id)}), context,
                         None)])
    return context


def test_without_spans_an_event_is_stored_with_the_callers_trace() -> None:
    store = MemoryEventStore()
    provider = telemetry.tracer_provider(Settings(database_url="postgresql://unused/x"))
    writer = GroupCommitWriter(store, lambda _ns: Limits(), tracer_provider=provider)
    context = _write(writer, (CALLER, None))
    assert store.traces == {context.event_id: (CALLER, None)}
    _write(writer, None)
    assert len(store.events) == 2 and len(store.traces) == 1  # none given, none stored


def test_with_spans_the_event_carries_its_commit_span_a_child_of_the_caller() -> None:
    store = MemoryEventStore()
    provider = telemetry.tracer_provider(Settings(database_url="postgresql://unused/x"))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    writer = GroupCommitWriter(store, lambda _ns: Limits(), tracer_provider=provider)
    context = _write(writer, (CALLER, "v=1"))
    (commit,) = exporter.get_finished_spans()
    assert commit.name == "ledger.commit" and commit.kind is SpanKind.PRODUCER
    assert commit.parent is not None and commit.parent.span_id == int("00f067aa0ba902b7", 16)
    assert f"{commit.context.trace_id:032x}" == TRACE_ID
    traceparent, tracestate = store.traces[context.event_id]
    assert traceparent == f"00-{TRACE_ID}-{commit.context.span_id:016x}-01"
    assert tracestate == "v=1"
    assert commit.attributes is not None and commit.attributes["ssot.version"] == 1


def _row(**trace: Any) -> dict[str, Any]:
    return {"position": 7, "event_id": uuid.uuid4(), "namespace": "ns", "key": "k",
            "version": 1, "event_type": "entry.created", "recorded_at": datetime.now(UTC),
            "actor": "t", "reason": None, "correlation_id": "c", "causation_id": None,
            "patch": "[]", "document": "{}", "resolution": None, "auth": None, **trace}


def test_the_cloudevent_carries_the_distributed_tracing_extension() -> None:
    event = orjson.loads(cloudevent(_row(traceparent=CALLER, tracestate="v=1")))
    assert (event["traceparent"], event["tracestate"]) == (CALLER, "v=1")
    bare = orjson.loads(cloudevent(_row(traceparent=None, tracestate=None)))
    assert "traceparent" not in bare and "tracestate" not in bare


def test_otlp_export_is_over_http_protobuf_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    settings = Settings(database_url="postgresql://unused/x", otel_exporter="otlp")
    with pytest.raises(InvalidInput, match="http/protobuf") as refused:
        telemetry.tracer_provider(settings)
    assert refused.value.field == "OTEL_EXPORTER_OTLP_PROTOCOL"


def test_an_unknown_exporter_is_refused_naming_the_setting() -> None:
    with pytest.raises(InvalidInput, match="none, console, otlp") as refused:
        telemetry.tracer_provider(Settings(database_url="postgresql://unused/x",
                                           otel_exporter="jaeger"))
    assert refused.value.field == "otel_exporter"


def test_otlp_export_records_from_the_start() -> None:
    provider = telemetry.tracer_provider(Settings(database_url="postgresql://unused/x",
                                                  otel_exporter="otlp"))
    try:
        assert telemetry.records(provider)
    finally:
        provider.shutdown()
