"""The subscriber SDK runs the body of ``async for change in changes`` in a ``process``
span, a child of the change's ``traceparent`` linked to it, which ends (and stops being
current) when the next change is asked for, or when the loop is left inside ``aclosing``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from nexus_ssot.client.subscriber import Change, Subscriber

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def change(position: int) -> Change:
    return Change(position=position, namespace="ns", key="k", version=position,
                  type="io.nexus.ssot.entry.updated", document={}, patch=[], actor="a",
                  reason=None, correlation_id="c", causation_id=None, id=f"e{position}",
                  time="t", traceparent=f"00-{TRACE_ID}-00f067aa0ba902b{position}-01")


def traced() -> tuple[Subscriber, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Subscriber("nats://unused", "http://unused", namespace="ns",
                      tracer_provider=provider), exporter


async def changes(subscriber: Subscriber) -> AsyncIterator[Change]:
    for position in (1, 2, 3):
        with subscriber._processing(change(position)):
            yield change(position)


def test_each_change_is_handled_in_a_process_span_of_its_own_trace() -> None:
    subscriber, exporter = traced()

    async def handle() -> list[str]:
        seen = []
        async for c in changes(subscriber):
            current = trace.get_current_span().get_span_context()
            seen.append(f"{current.trace_id:032x}/{c.position}")
        return seen

    assert asyncio.run(handle()) == [f"{TRACE_ID}/{p}" for p in (1, 2, 3)]
    spans = exporter.get_finished_spans()
    assert [s.kind for s in spans] == [SpanKind.CONSUMER] * 3
    for position, span in enumerate(spans, 1):
        assert span.parent is not None
        assert span.parent.span_id == int(f"00f067aa0ba902b{position}", 16)
        assert [link.context.span_id for link in span.links] == [span.parent.span_id]


def test_leaving_the_loop_inside_aclosing_ends_the_span_and_restores_the_context() -> None:
    subscriber, exporter = traced()

    async def handle() -> bool:
        async with contextlib.aclosing(changes(subscriber)) as them:
            async for _ in them:
                break
        return trace.get_current_span().get_span_context().is_valid

    assert asyncio.run(handle()) is False  # nothing current after the loop
    assert len(exporter.get_finished_spans()) == 1
