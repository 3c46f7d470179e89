"""What tracing costs a write, in process: ``python -m nexus_ssot.ops.bench.tracing_cost``.
CPU time (``time.process_time``: not disturbed by what else the machine runs, unlike
throughput) per write of each part a write's trace crosses, in three configurations:

- ``off``: ``SSOT_OTEL_EXPORTER=none`` and no ``traceparent`` (the default);
- ``off, caller's traceparent``: no spans, the caller's context carried along and stored;
- ``on``: spans made and exported (the OTLP exporter's protobuf encoding included, its
  HTTP POST, one per 512 spans, not), every span sampled;
- ``on, 1 in 10`` and ``on, 1 in 100``: the same, sampled as docs/tracing.md advises
  (``parentbased_traceidratio``, ratio 0.1 or 0.01): the HTTP span decides at that
  ratio, the writer's and broadcaster's spans follow (here: one write in ten, or in a
  hundred, comes sampled).

The parts: the HTTP worker's (the request's headers looked at, its server span), the
writer's (``GroupCommitWriter.write_batch`` of one write on the in-memory event store,
with its commit span; the store's own work is the same in all three) and the
broadcaster's (the publish span of one event). Each figure is the least of three runs.
Prints one line per part; run it twice, the machine's speed drifts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from starlette.datastructures import Headers

from nexus_ssot.ledger import telemetry
from nexus_ssot.ledger.broadcaster import Broadcaster
from nexus_ssot.ledger.commands import Context, Put, Trace
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.memory_store import MemoryEventStore
from nexus_ssot.ledger.writer import GroupCommitWriter

WRITES, ROUNDS = 10_000, 3
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_RAW = [(b"content-type", b"application/json"), (b"authorization", b"Bearer x" * 8),
        (b"user-agent", b"bench"), (b"host", b"127.0.0.1:8080")]


class EncodingExporter(SpanExporter):
    """The OTLP exporter's work but the POST: each batch encoded as it would be sent."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode_spans(spans).SerializeToString()
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


#: (name, spans exported, caller's trace context: None, "sampled", or N: one in N sampled)
CONFIGS: tuple[tuple[str, bool, str | int | None], ...] = (
    ("off", False, None), ("off, caller's traceparent", False, "sampled"),
    ("on", True, "sampled"), ("on, 1 in 10", True, 10), ("on, 1 in 100", True, 100))


def _provider(on: bool, one_in: int | None) -> TracerProvider:
    provider: TracerProvider = telemetry.LedgerTracerProvider(
        sampler=ParentBased(TraceIdRatioBased(1 / one_in)) if one_in else None)
    if on:  # a queue for every span: none dropped, all encoded
        provider.add_span_processor(BatchSpanProcessor(EncodingExporter(),
                                                       max_queue_size=4 * WRITES))
    return provider


def _trace(caller: str | int | None, i: int) -> Trace | None:
    """The trace context write ``i`` comes with: sampled always, or one in ``caller``."""
    if caller is None:
        return None
    flags = "01" if caller == "sampled" or i % int(caller) == 0 else "00"
    return f"00-{uuid.uuid4().hex}-00f067aa0ba902b7-{flags}", None


def _http(provider: TracerProvider, caller: str | int | None, n: int) -> Callable[[], None]:
    # the HTTP span is where sampling at a ratio is decided: no traceparent then
    raw = [*_RAW, (b"traceparent", CALLER.encode())] if caller == "sampled" else _RAW
    tracer = provider.get_tracer("bench")

    def run() -> None:
        for _ in range(n):
            headers = Headers(raw=raw)
            parent = telemetry.incoming(headers)
            with telemetry.span(provider, tracer, "ledger.write", context=parent,
                                kind=SpanKind.SERVER) as made:
                telemetry.trace_of_span(made, parent)
    return run


def _writer(provider: TracerProvider, caller: str | int | None, n: int) -> Callable[[], None]:
    writer = GroupCommitWriter(MemoryEventStore(), lambda _ns: Limits(),
                               tracer_provider=provider)
    now = datetime.now(UTC)
    writes = [(Put("bench", f"k{i % 100}", document={"n": i}),
               Context(uuid.uuid4(), now, "bench", "c", trace=_trace(caller, i)), None)
              for i in range(n)]

    def run() -> None:
        for write in writes:
            writer.write_batch([write])
    return run


def _broadcaster(provider: TracerProvider, caller: str | int | None, n: int
                 ) -> Callable[[], None]:
    broadcaster = Broadcaster("postgresql://unused/x", "nats://unused",
                              tracer_provider=provider)
    rows = []
    for i in range(512):
        trace = _trace(caller, i)
        rows.append({"traceparent": trace[0] if trace else None, "tracestate": None,
                     "event_id": uuid.uuid4(), "position": i})

    def run() -> None:
        for _ in range(n // len(rows)):
            for made in broadcaster.publish_spans(rows):
                made.end()
    return run


def _cpu_us(make: Callable[[TracerProvider, str | int | None, int], Callable[[], None]], on: bool,
            caller: str | int | None, n: int) -> float:
    provider = _provider(on, caller if isinstance(caller, int) else None)
    make(provider, caller, 512)()  # warm
    run = make(provider, caller, n)
    started = time.process_time()
    run()
    provider.shutdown()  # the last spans exported: their encoding counts too
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parts = (("HTTP worker", _http), ("writer", _writer), ("broadcaster", _broadcaster))
    for name, make in parts:
        # the least of ROUNDS runs: a busy machine only ever adds to a figure
        figures = {config: min(_cpu_us(make, on, caller, WRITES) for _ in range(ROUNDS))
                   for config, on, caller in CONFIGS}
        off = figures["off"]
        print(f"{name}: " + ", ".join(
            f"{config} {us:.1f} us" + (f" ({us - off:+.1f})" if config != "off" else "")
            for config, us in figures.items()) + " of CPU per write")


if __name__ == "__main__":
    main()
