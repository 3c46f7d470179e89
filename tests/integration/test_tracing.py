"""One trace per write, end to end: a real `ssot serve` exporting OTLP/HTTP to a receiver
running in the test continues the caller's ``traceparent`` through its HTTP worker, the
writer process and the commit; the event is stored with the commit's context; the
broadcaster's publish and a subscriber's handler join the same trace through the
CloudEvent's ``traceparent``. And docs/tracing.md's commands run as written, on the
same server."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from nexus_ssot.client.subscriber import Subscriber
from tests.integration.conftest import AUTH, free_port, start_serve, wait_until
from tests.integration.test_readme_tour import normalize, run, steps

DOCS = Path(__file__).resolve().parents[2] / "docs"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass(frozen=True)
class Received:
    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    links: tuple[tuple[str, str], ...]


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP receiver: ``POST /v1/traces`` with an ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Received] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    with self.lock:
                        self.spans.append(Received(
                            s.name, service, s.trace_id.hex(), s.span_id.hex(),
                            s.parent_span_id.hex(), s.kind,
                            tuple((k.trace_id.hex(), k.span_id.hex()) for k in s.links)))

    def of_trace(self, trace_id: str) -> dict[str, Received]:
        with self.lock:
            return {s.name.split(" ")[0]: s for s in self.spans if s.trace_id == trace_id}


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/traces" or \
                self.headers["Content-Type"] != "application/x-protobuf":
            self.send_error(400)
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.take(request)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    thread.join(5)
    server.server_close()


def first_change(nats_url: str, url: str, ns: str, stream: tuple[str, str],
                 provider: TracerProvider) -> tuple[Any, str]:
    """The first change of ``ns`` as a subscriber gets it, and the id of the span its
    handler made (a child of whatever span is current in the loop's body)."""

    async def read() -> tuple[Any, str]:
        tracer = provider.get_tracer("handler")
        async with Subscriber(nats_url, url, namespace=ns, stream=stream[0],
                              prefix=stream[1], token=AUTH["Authorization"][7:],
                              tracer_provider=provider) as changes:
            async for change in changes:
                with tracer.start_as_current_span("handle") as span:
                    return change, f"{span.get_span_context().span_id:016x}"
        raise AssertionError("no change")

    return asyncio.run(read())


def test_one_write_is_one_trace_from_http_to_the_subscriber(
        fresh_db: str, nats_url: str, stream: tuple[str, str], receiver: Receiver,
        tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": fresh_db, "SSOT_NATS_URL": nats_url,
           "SSOT_NATS_STREAM": stream[0], "SSOT_NATS_SUBJECT_PREFIX": stream[1],
           "SSOT_DATA_DIR": str(tmp_path), "SSOT_HTTP_PORT": str(port),
           # only what the trace crosses: no views, no mirror, no digests
           "SSOT_DIGESTS": "false", "SSOT_PROJECTIONS": "false", "SSOT_KV_MIRROR": "false",
           "SSOT_OTEL_EXPORTER": "otlp",
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
           "OTEL_BSP_SCHEDULE_DELAY": "50"}  # export within 50 ms, not the default 5 s
    proc, url = start_serve(["--workers", "1"], env, port)
    try:
        caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
        put = httpx.put(url + "/v1/namespaces/traced/entries/checkout", json={"a": 1},
                        headers={**AUTH, "traceparent": caller, "tracestate": "vendor=7"})
        assert put.status_code == 201, put.text
        position = put.json()["position"]
        untraced = httpx.put(url + "/v1/namespaces/traced/entries/other", json={"b": 2},
                             headers=AUTH)
        assert untraced.status_code == 201

        provider = TracerProvider(resource=Resource.create({"service.name": "subscriber"}))
        provider.add_span_processor(SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=receiver.endpoint + "/v1/traces")))
        change, handled_in = first_change(nats_url, url, "traced", stream, provider)
        provider.shutdown()

        wanted = {"ledger.write", "ledger.commit", "publish", "process", "handle"}
        wait_until(lambda: set(receiver.of_trace(CALLER_TRACE)) >= wanted,
                   "every span of the write at the receiver", timeout=10)
        spans = receiver.of_trace(CALLER_TRACE)
        write, commit = spans["ledger.write"], spans["ledger.commit"]
        publish, process = spans["publish"], spans["process"]
        # HTTP -> writer -> commit: the caller's trace id kept, each a child of the last
        assert write.parent_id == CALLER_SPAN and write.kind == SpanProto.SPAN_KIND_SERVER
        assert commit.parent_id == write.span_id
        assert commit.kind == SpanProto.SPAN_KIND_PRODUCER
        # the commit's context is the event's creation context: stored and broadcast
        created = f"00-{CALLER_TRACE}-{commit.span_id}-01"
        with psycopg.connect(fresh_db) as conn:
            stored = conn.execute("SELECT traceparent, tracestate FROM ssot_events"
                                  " WHERE notification_id = %s", (position,)).fetchone()
        assert stored == (created, "vendor=7")
        assert (change.position, change.traceparent, change.tracestate) == (
            position, created, "vendor=7")
        # -> NATS publish -> subscriber: children of the creation context, linked to it
        for span in (publish, process):
            assert span.parent_id == commit.span_id
            assert span.links == ((CALLER_TRACE, commit.span_id),)
        assert publish.kind == SpanProto.SPAN_KIND_CLIENT
        assert process.kind == SpanProto.SPAN_KIND_CONSUMER
        assert spans["handle"].parent_id == process.span_id == spans["handle"].parent_id
        assert spans["handle"].span_id == handled_in
        assert {s.service for s in spans.values()} == {"nexus-ssot", "subscriber"}

        # a write without a traceparent is a trace of its own, across the same processes
        def roots() -> list[Any]:
            return [s for s in receiver.spans if s.name == "ledger.write" and not s.parent_id]

        # exported in the HTTP worker's own batch, which may reach the receiver later
        wait_until(roots, "the untraced write's own span", timeout=10)
        assert len(roots()) == 1
        root = roots()[0]
        wait_until(lambda: {"ledger.write", "ledger.commit", "publish"} <= set(
            receiver.of_trace(root.trace_id)), "the untraced write's spans", timeout=10)
        events = httpx.get(url + "/v1/events", params={"namespace": "traced"},
                           headers=AUTH).json()["items"]
        assert [e["traceparent"][3:35] for e in events] == [CALLER_TRACE, root.trace_id]

        # docs/tracing.md, as its reader runs it (the token where `make run` keeps it)
        (tmp_path / "admin-token").write_text(AUTH["Authorization"].removeprefix("Bearer "))
        page = steps((DOCS / "tracing.md").read_text())
        assert len(page) >= 2, "docs/tracing.md must keep its example"
        for command, expected in page:
            assert normalize(run(command, url, tmp_path)) == normalize(expected), command
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output

