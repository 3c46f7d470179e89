"""The broadcaster: every committed event, in log order, once, on NATS JetStream.

It follows the log by global position and publishes each event as a CloudEvent on its
entry's subject, pipelined, with ``Nats-Msg-Id`` (the event id: JetStream drops a
republished duplicate) and ``Nats-Expected-Last-Sequence`` (the stream's sequence of the
message before it: JetStream refuses a message that would land after a gap, so the stream
can never hold the log out of order, whatever fails in between). Its position advances
only past events acknowledged at the sequence expected of them and is stored in
PostgreSQL; on (re)start it resumes after the last event the stream itself holds, so a
crash between a PubAck and the position update republishes nothing, and a stream that
lost its tail gets it again.

The guard is the previous message's sequence, not its id (``Nats-Expected-Last-Msg-Id``,
used until 2026-12-06): on a stream replicated by JetStream's Raft, nats-server 2.14 and
2.15 apply a message refused for its expected last id on the followers all the same,
which then stop applying anything to the stream ("critical write error: last msgid
mismatch"); every later publish goes unanswered. A refusal for the expected last
sequence leaves the stream working (docs/cluster.md).

Exactly one broadcaster per database is active: the leader holds its role's lease
(``leadership.Leases``); standbys ask for it every second and take over within a second or
two of the leader's death. It takes its events from the process's shared log tail
(``log_tail.LogTail``: woken by the store's NOTIFY, polling slowly too, so a lost
notification never stalls it), or reads them itself while behind the tail. NATS is never
on the write path: while NATS is down the broadcaster retries with backoff and then
catches up in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import psycopg
from nats.js import JetStreamContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import telemetry
from .cloudevents import cloudevent
from .following import Following, followed
from .jetstream import Chain, ensure_stream, nats_servers, stream_tail
from .jetstream_acks import Acks
from .leadership import Lease, retrying
from .log_tail import LogEvent
from .metrics import metrics, record_delivery
from .subjects import entry_subject

log = logging.getLogger(__name__)

_LOCK_NAMESPACE = 0x55_0700_0002  # arbitrary, fixed: "ssot broadcaster <name>"
#: Seconds at least between two saves of the tracked position while publishing.
_SAVE_EVERY = 0.2


def message_headers(row: dict[str, Any]) -> dict[str, str]:
    """The headers of the message of the event of history ``row`` (its publisher adds
    the chain's: ``jetstream.Chain``)."""
    return {"Nats-Msg-Id": str(row["event_id"]), "Ssot-Position": str(row["position"]),
            "Ssot-Version": str(row["version"])}


@dataclass
class Progress:
    """What the broadcaster has done, for health and metrics."""

    leader: bool = False
    position: int = 0
    published: int = 0
    head: int = 0  # the log's last position, as last seen
    lag_events: int = 0
    lag_seconds: float = 0.0  # age of the oldest event not yet published
    last_error: str | None = None


class Broadcaster:
    def __init__(
        self,
        database_url: str,
        nats_url: str,
        *,
        stream: str = "SSOT",
        prefix: str = "ssot",
        name: str = "default",
        batch_size: int = 512,
        poll_interval: float = 1.0,
        ack_timeout: float = 5.0,
        duplicate_window: float = 600.0,
        replicas: int = 1,
        tracer_provider: TracerProvider | None = None,
        gather: float = 0.0,
    ) -> None:
        self.database_url = database_url
        #: The log tail's gather (``LogTail``) when it runs on a following of its own
        #: (``ssot broadcast``); run on a shared one, that one's.
        self.gather = gather
        self.nats_url = nats_url
        self.stream = stream
        self.prefix = prefix
        self.name = name
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.ack_timeout = ack_timeout
        self.duplicate_window = duplicate_window
        self.replicas = replicas
        self.progress = Progress()
        self.tracer_provider = tracer_provider

    async def run(self, stop: asyncio.Event, following: Following | None = None) -> None:
        """Lead (or wait to lead) until ``stop`` is set; failures are retried. With
        ``following``, on the log tail and leases of the process's other followers."""

        def failed(error: str) -> None:
            self.progress.leader = False
            self.progress.last_error = error
            metrics().broadcaster_publish_errors.inc()

        async def role(following: Following) -> None:
            await retrying(f"broadcaster {self.name}",
                           lambda stop: self._lead(stop, following), stop, failed, log)

        await followed(self.database_url, role, following, stop, self.poll_interval,
                       gather=self.gather)

    async def _lead(self, stop: asyncio.Event, following: Following) -> None:
        async with following.leases.lead(_LOCK_NAMESPACE, self.name, stop) as lease:
            if lease is None:
                return
            self.progress.leader = True
            log.info("broadcaster %s leads", self.name)
            nc = await nats.connect(nats_servers(self.nats_url), allow_reconnect=False,
                                    connect_timeout=2)
            try:
                js = nc.jetstream(timeout=self.ack_timeout)
                await ensure_stream(js, self.stream, [f"{self.prefix}.>"],
                                    duplicate_window=self.duplicate_window,
                                    replicas=self.replicas)
                acks = Acks(nc)
                try:
                    await self._publish_until(stop, js, acks, lease, following)
                finally:
                    await acks.close()
            finally:
                with contextlib.suppress(Exception):
                    await nc.close()
                self.progress.leader = False

    async def _stream_tail(self, js: JetStreamContext) -> tuple[int | None, int]:
        """(position of the last event the stream holds, the stream's last sequence):
        (0, 0) for a stream that never held one; position None if its messages are gone
        (retention expired them all, a purge), when only our tracked position can tell."""
        last_seq, msg = await stream_tail(js, self.stream, vanished_is_lost=True)
        if not last_seq:
            return 0, 0
        if msg is None:
            return None, last_seq
        return int((msg.headers or {}).get("Ssot-Position", 0)), last_seq

    async def _publish_until(self, stop: asyncio.Event, js: JetStreamContext, acks: Acks,
                             lease: Lease, following: Following) -> None:
        tail = following.tail
        async with await psycopg.AsyncConnection.connect(self.database_url,
                                                         autocommit=True) as conn:
            # The stream says what it holds: resume after its last event. That is behind
            # our tracked position only if JetStream lost acknowledged messages (a single
            # server acks before fsync) or the stream was purged: publish them again.
            stream_end, last_seq = await self._stream_tail(js)
            tracked = await self._tracked(conn)
            if stream_end is None:
                position = tracked
            else:
                position = stream_end
                if position < tracked:
                    log.warning("broadcaster %s: the stream ends at position %d, behind the "
                                "%d published: publishing again from there", self.name,
                                position, tracked)
            self._report(position)
            # What is stored, not where it resumes: the stream's position is saved at once
            # when it differs. A leader that died after its events were stored and before it
            # saved their position leaves the stream ahead, and that must be saved even if
            # nothing more is ever written; a stream that lost its tail is behind.
            saved, saved_at = tracked, 0.0
            chain = Chain(self.stream, last_seq, self.ack_timeout)
            while not stop.is_set():
                events = await tail.events_after(conn, position,
                                                 chain.limit(self.batch_size))
                if events:
                    self._measure_lag(events, tail.head)
                    rows = [e.history for e in events if e.history is not None]
                    held = len(rows)
                    if rows:
                        held = await self._publish(acks, chain, rows)
                        record_delivery(row["recorded_at"] for row in rows[:held])
                    # all of them; or up to the last held, the rest sent again next
                    position = events[-1].position if held == len(rows) \
                        else int(rows[held - 1]["position"])
                    self.progress.published += held
                    self._report(position)
                else:
                    self.progress.head, self.progress.lag_seconds = position, 0.0
                    self.progress.lag_events = 0
                # The tracked position is for lag reports and for a stream that lost its
                # messages: saving it at most every ``_SAVE_EVERY`` seconds keeps it off
                # the hot path, also under a trickle of one-event commits (saving it as
                # soon as the tail had nothing more cost a round trip, and a wake-up of
                # the thread, per commit). Idle, it is saved once that time has passed.
                now = time.monotonic()
                if position != saved and now - saved_at >= _SAVE_EVERY:
                    await self._save(conn, position)
                    saved, saved_at = position, now
                if not events:
                    lease.check()  # still the leader?
                    wait = tail.idle_timeout(self.poll_interval)
                    if position != saved:
                        wait = min(wait, max(0.0, saved_at + _SAVE_EVERY - now))
                    await tail.wait(stop, position, wait)
            if position != saved:
                await self._save(conn, position)

    def _measure_lag(self, events: list[LogEvent], head: int) -> None:
        """Lag before publishing ``events``: the head (as the tail last saw it) and the
        age of the oldest unpublished event."""
        self.progress.head = max(head, events[-1].position)
        self.progress.lag_events = self.progress.head - events[0].position + 1
        oldest: datetime = events[0].recorded_at
        self.progress.lag_seconds = max(0.0, (datetime.now(UTC) - oldest).total_seconds())

    async def _save(self, conn: psycopg.AsyncConnection[Any], position: int) -> None:
        await conn.execute(
            "INSERT INTO broadcaster_positions (name, position) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position,"
            " updated_at = now()", (self.name, position))

    async def _publish(self, acks: Acks, chain: Chain, rows: list[dict[str, Any]]) -> int:
        """Publish ``rows`` on ``chain``: how many of them, from the first, the stream
        holds once they are answered (``Chain.publish``)."""
        spans = self.publish_spans(rows)
        try:
            return await chain.publish(acks, [
                (entry_subject(self.prefix, row["namespace"], row["key"]), cloudevent(row),
                 message_headers(row)) for row in rows])
        except BaseException as e:
            for made in spans:
                made.set_status(Status(StatusCode.ERROR, str(e) or type(e).__name__))
                made.set_attribute("error.type", type(e).__name__)
            raise
        finally:
            for made in spans:
                made.end()

    def publish_spans(self, rows: list[dict[str, Any]]) -> list[Span]:
        """While spans are recorded: a ``publish`` span for each of ``rows`` stored with a
        trace context, from now until NATS acknowledges it. The OpenTelemetry messaging
        conventions have a publish span link to the message's creation context (here the
        context the event was committed in, which its CloudEvent carries unchanged); it
        is also that context's child, so the publish shows in the write's own trace."""
        provider = self.tracer_provider
        if provider is None or not telemetry.records(provider):
            return []
        tracer = provider.get_tracer("nexus_ssot.broadcaster")
        spans = []
        for row in rows:
            trace = (row["traceparent"], row.get("tracestate"))
            if not trace[0] or telemetry.dropped(provider, trace):
                continue
            created = telemetry.context_of(trace)
            if created is None:
                continue
            spans.append(tracer.start_span(
                f"publish {self.stream}", context=created, kind=SpanKind.CLIENT,
                links=telemetry.linked([created]),
                attributes={"messaging.system": "nats", "messaging.operation.type": "send",
                            "messaging.operation.name": "publish",
                            "messaging.destination.name": self.stream,
                            "messaging.message.id": str(row["event_id"]),
                            "ssot.position": row["position"]}))
        return spans

    async def _tracked(self, conn: psycopg.AsyncConnection[Any]) -> int:
        cur = await conn.execute(
            "SELECT position FROM broadcaster_positions WHERE name = %s", (self.name,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    def _report(self, position: int) -> None:
        self.progress.position = position
        self.progress.last_error = None

