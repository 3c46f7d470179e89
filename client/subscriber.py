"""The subscriber SDK: every change of a namespace (or one key), in log order, once.

    async with Subscriber(nats_url, api_url, namespace="config",
                          store=FilePositionStore("config.position")) as changes:
        async for change in changes:
            apply(change)          # recorded as handled when you ask for the next one

It reads JetStream through a durable pull consumer that starts right after the recorded
position. Events older than anything the stream still holds (its retention dropped
them) are fetched from the ledger's catch-up API first, so a subscriber that was away
for a month still sees every change, in order. Positions are the ledger's global log
positions; a change is yielded only if its position is above the last one recorded, so
redeliveries never reach the caller twice.

``watch_key`` is the config-hot-reload helper: the current document, then every new one.

Tracing (docs/tracing.md): with ``opentelemetry-api`` installed, the body of the
``async for`` runs in a ``process`` span (kind CONSUMER) of the tracer provider given (the
global one by default) whose parent is the trace context the change was written in (the
CloudEvent's ``traceparent``), and which links to it, as the OpenTelemetry messaging
conventions ask: a handler's own spans join the write's trace. The span ends when the
next change is asked for; without opentelemetry-api nothing of this happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import httpx
import nats
import orjson
from nats.aio.client import Client as NATSClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from nexus_ssot.ledger.subjects import entry_subject, namespace_filter

try:  # optional: tracing needs only the API, never an SDK of ours
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - the ledger's own wheel depends on it
    otel_trace = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Change:
    """One committed change of an entry (the ``data`` of its CloudEvent, and its type)."""

    position: int
    namespace: str
    key: str
    version: int
    type: str
    document: Any
    patch: list[dict[str, Any]]
    actor: str
    reason: str | None
    correlation_id: str
    causation_id: str | None
    id: str
    time: str
    #: How the actor authenticated, e.g. {"method": "token", "token_id": "…"}; None for
    #: events recorded before it was.
    auth: dict[str, Any] | None = None
    #: The W3C trace context the change was written in (the CloudEvents distributed
    #: tracing extension), or None.
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def deleted(self) -> bool:
        return self.type.endswith(".deleted")

    @classmethod
    def from_cloudevent(cls, event: dict[str, Any]) -> Change:
        data = event["data"]
        return cls(position=data["position"], namespace=data["namespace"], key=data["key"],
                   version=data["version"], type=event["type"], document=data["document"],
                   patch=data["patch"], actor=data["actor"], reason=data["reason"],
                   correlation_id=data["correlation_id"], causation_id=data["causation_id"],
                   id=event["id"], time=event["time"], auth=data.get("auth"),
                   traceparent=event.get("traceparent"), tracestate=event.get("tracestate"))


#: Seconds without a message after which the consumer is looked at (is it there, is
#: anything pending for it), and seconds before a lost consumer is made again.
CONSUMER_CHECK_SECONDS, CONSUMER_RETRY_SECONDS = 5.0, 0.5


class PositionStore(Protocol):
    """Where a subscriber keeps the last position it has handled."""

    async def load(self) -> int | None: ...

    async def save(self, position: int) -> None: ...


class MemoryPositionStore:
    def __init__(self, position: int | None = None) -> None:
        self.position = position

    async def load(self) -> int | None:
        return self.position

    async def save(self, position: int) -> None:
        self.position = position


class FilePositionStore:
    """The position in a small file, replaced atomically (a crash leaves old or new)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def load(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except FileNotFoundError:
            return None

    async def save(self, position: int) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name)
        with os.fdopen(fd, "w") as f:
            f.write(f"{position}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class Subscriber:
    def __init__(
        self,
        nats_url: str,
        api_url: str,
        *,
        namespace: str,
        key: str | None = None,
        from_position: int = 0,
        store: PositionStore | None = None,
        durable: str | None = None,
        stream: str = "SSOT",
        prefix: str = "ssot",
        batch: int = 256,
        token: str | None = None,
        tracer_provider: Any = None,
    ) -> None:
        self.nats_url = nats_url
        self.api_url = api_url.rstrip("/")
        #: The bearer token of the catch-up reads from the HTTP API.
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.namespace = namespace
        self.key = key
        self.from_position = from_position
        self.store = store or MemoryPositionStore()
        self.durable = durable
        self.stream = stream
        self.prefix = prefix
        self.batch = batch
        self.subject = (entry_subject(prefix, namespace, key) if key
                        else namespace_filter(prefix, namespace))
        self._nc: NATSClient | None = None
        self.position = 0
        #: The OpenTelemetry tracer provider of the ``process`` spans (None: the global).
        self.tracer_provider = tracer_provider

    async def __aenter__(self) -> AsyncIterator[Change]:
        # a cluster's nodes may be listed separated by commas (nats-py takes a list)
        self._nc = await nats.connect(
            [url.strip() for url in self.nats_url.split(",") if url.strip()])
        return self.changes()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def changes(self) -> AsyncIterator[Change]:
        """Every change after the recorded position (or ``from_position``), in order."""
        assert self._nc is not None, "use `async with Subscriber(...) as changes`"
        js = self._nc.jetstream()
        stored = await self.store.load()
        self.position = stored if stored is not None else self.from_position
        oldest = await self._oldest_in_stream(js)
        if oldest is None or oldest > self.position + 1:
            # JetStream no longer has (or never had) what follows our position: the log does
            async for change in self._catch_up(until=None if oldest is None else oldest - 1):
                with self._processing(change):
                    yield change
                await self.handled(change.position)
        async for change in self._from_stream(js):
            with self._processing(change):
                yield change

    @contextlib.contextmanager
    def _processing(self, change: Change) -> Iterator[None]:
        """The ``process`` span of ``change``, current while the caller handles it."""
        if otel_trace is None:
            yield
            return
        carrier = {"traceparent": change.traceparent or ""}
        if change.tracestate:
            carrier["tracestate"] = change.tracestate
        parent = (TraceContextTextMapPropagator().extract(carrier, context=otel_context.Context())
                  if change.traceparent else None)
        created = otel_trace.get_current_span(parent).get_span_context() if parent else None
        provider = self.tracer_provider or otel_trace.get_tracer_provider()
        span = provider.get_tracer("nexus_ssot.client").start_span(
            f"process {self.stream}", context=parent, kind=otel_trace.SpanKind.CONSUMER,
            links=[otel_trace.Link(created)] if created and created.is_valid else None,
            attributes={"messaging.system": "nats", "messaging.operation.type": "process",
                        "messaging.operation.name": "process",
                        "messaging.destination.name": self.stream,
                        "messaging.message.id": change.id, "ssot.position": change.position})
        token = otel_context.attach(otel_trace.set_span_in_context(span))
        try:
            yield
        except BaseException:
            # closed (the caller left the loop): the span ends, and the caller's context
            # is restored when it is closed from the caller's own context (``aclosing``),
            # which the token tells (the runtime context's token is a contextvars one)
            span.end()
            with contextlib.suppress(ValueError, RuntimeError, AttributeError):
                token.var.reset(token)
            raise
        span.end()
        otel_context.detach(token)

    async def handled(self, position: int) -> None:
        """Record that every change up to ``position`` is handled. Done for you when you
        ask for the next change; call it to record the last one before you stop."""
        self.position = position
        await self.store.save(position)

    async def _oldest_in_stream(self, js: JetStreamContext) -> int | None:
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:  # nothing broadcast yet
            return None
        if not info.state.messages:
            return None
        msg = await js.get_msg(self.stream, seq=info.state.first_seq)
        return int((msg.headers or {})["Ssot-Position"])

    async def _catch_up(self, until: int | None) -> AsyncIterator[Change]:
        params: dict[str, Any] = {"after": self.position, "namespace": self.namespace,
                                  "limit": 1000}
        if self.key:
            params["key"] = self.key
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30,
                                     headers=self.headers) as http:
            while True:
                response = await http.get("/v1/events", params=params)
                response.raise_for_status()
                page = response.json()
                for event in page["items"]:
                    change = Change.from_cloudevent(event)
                    if until is not None and change.position > until:
                        return
                    yield change
                if page["next_cursor"] is None:
                    return
                params = {"cursor": page["next_cursor"], "namespace": self.namespace,
                          "limit": 1000, **({"key": self.key} if self.key else {})}

    async def _start_sequence(self, js: JetStreamContext) -> int:
        """The stream sequence of the first message after our position (binary search:
        the stream holds the log in position order and only its retention removes
        messages, from the front)."""
        info = await js.stream_info(self.stream)
        low, high = info.state.first_seq, info.state.last_seq + 1
        while low < high:
            mid = (low + high) // 2
            msg = await js.get_msg(self.stream, seq=mid)
            if int((msg.headers or {})["Ssot-Position"]) > self.position:
                high = mid
            else:
                low = mid + 1
        return low

    async def _from_stream(self, js: JetStreamContext) -> AsyncIterator[Change]:
        """From a consumer starting after our position; a new one whenever it is lost
        (NATS restarted without it, it was deleted) or stalls (messages pending for it,
        none delivered): positions we already handled are skipped, so nothing repeats."""
        while True:
            try:
                async for change in self._from_consumer(js):
                    yield change
            except (nats.errors.Error, nats.js.errors.Error) as e:
                if isinstance(e, nats.errors.ConnectionClosedError | nats.errors.NoServersError):
                    raise  # our connection is over: the caller decides
            await asyncio.sleep(CONSUMER_RETRY_SECONDS)

    async def _from_consumer(self, js: JetStreamContext) -> AsyncIterator[Change]:
        """Until the consumer is lost or stalls (then it returns or raises)."""
        while True:  # the broadcaster creates the stream on its first run
            try:
                await js.stream_info(self.stream)
                break
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.5)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=await self._start_sequence(js),
            ack_policy=AckPolicy.EXPLICIT, filter_subject=self.subject,
            inactive_threshold=None if self.durable else 300.0)
        if self.durable:  # start the durable where our recorded position says
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_consumer(self.stream, self.durable)
        sub = await js.pull_subscribe(self.subject, durable=self.durable, stream=self.stream,
                                      config=config)
        quiet_since = time.monotonic()
        try:
            while True:
                try:
                    messages = await sub.fetch(self.batch, timeout=1.0)
                except TimeoutError:
                    # Nothing arrived in time. nats-py raises its own TimeoutError or, when
                    # the deadline runs out between its two pull requests, the builtin one
                    # (a busy client hits that): both just mean "fetch again".
                    messages = []
                if messages:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > CONSUMER_CHECK_SECONDS:
                    # nats-py answers a fetch on a consumer that is gone with nothing, and
                    # after a NATS restart a live consumer was seen to deliver nothing
                    # while messages were pending for it: look, and start a new one.
                    quiet_since = time.monotonic()
                    info = await sub.consumer_info()  # NotFoundError when it is gone
                    if info.num_pending:
                        return
                for msg in messages:
                    position = int((msg.headers or {})["Ssot-Position"])
                    if position > self.position:
                        yield Change.from_cloudevent(orjson.loads(msg.data))
                        await self.handled(position)
                    await msg.ack()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def watch_key(nats_url: str, api_url: str, namespace: str, key: str, *,
                    stream: str = "SSOT", prefix: str = "ssot", token: str | None = None
                    ) -> AsyncIterator[Any]:
    """The entry's current document (None if it does not exist), then every new one
    (None when it is deleted): for configuration hot reload. ``token``: the bearer token
    of the HTTP reads."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=api_url.rstrip("/"), timeout=30,
                                 headers=headers) as http:
        response = await http.get(f"/v1/namespaces/{namespace}/entries/{key}")
        if response.status_code == 200:
            entry = response.json()
            position, document = entry["position"], entry["document"]
        elif response.status_code == 404:
            position, document = 0, None
            if response.json().get("code") == "entry_deleted":  # start after the tombstone
                last = await http.get(f"/v1/namespaces/{namespace}/entries/{key}/history",
                                      params={"order": "desc", "limit": 1})
                position = last.json()["items"][0]["position"]
        else:
            response.raise_for_status()
            return
    yield document
    subscriber = Subscriber(nats_url, api_url, namespace=namespace, key=key,
                            from_position=position, stream=stream, prefix=prefix, token=token)
    async with subscriber as changes:
        async for change in changes:
            yield None if change.deleted else change.document

