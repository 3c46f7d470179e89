"""``GET /metrics``: the Prometheus text exposition of this service (docs/metrics.md).

Two sources make one answer: what the processes counted (``ledger/metrics.py``; under
``ssot serve`` the files every process writes in its metrics folder, added up by
prometheus-client's multiprocess collector), and what PostgreSQL knows at the moment of the
scrape (``projections/log_state.py``: positions, lags, ages of the followers, last verify
and export). The route takes the action ``metrics`` on ``_system``: a caller needs a token
whose policy allows it (an admin's does), like every other route.

``RequestMetrics`` is the ASGI middleware that counts every HTTP request by route template
(never the raw path), method and status, and times it."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from fastapi import APIRouter, Request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexus_ssot.ledger.metrics import metrics
from nexus_ssot.ledger.metrics_exposition import MetricsFolder
from nexus_ssot.projections.log_state import LogState, read_log_state

from .errors import problem_responses
from .params import service_of

#: Prometheus text format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The route label of a request answered before routing (a 401, a 429) or by no route.
UNROUTED = "unrouted"
#: The change feed: timed to the head of its answer, and counted while it is open.
STREAM_ROUTE = "/v1/events/stream"
_METHODS = frozenset({"GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"})

router = APIRouter()
log = logging.getLogger(__name__)


class RequestMetrics:
    """Counts and times every HTTP request. The labelled children are looked up once per
    (route, method, status) and kept: a request costs a dictionary lookup and three
    increments (docs/metrics.md has the figure)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _of(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        key = (route, method, status)
        found = self._children.get(key)
        if found is None:
            m = metrics()
            found = self._children[key] = (
                m.http_requests.labels(route, method, str(status)),
                m.http_duration.labels(route, method))
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app sends nothing
        head_at = 0.0
        feeding = False

        async def noted(message: Message) -> None:
            nonlocal status, head_at, feeding
            if message["type"] == "http.response.start":
                status, head_at = message["status"], time.perf_counter()
                route = scope.get("route")
                if status == 200 and getattr(route, "path", None) == STREAM_ROUTE:
                    feeding = True
                    metrics().sse_clients.inc()
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            ended = head_at if feeding else time.perf_counter()
            if feeding:
                metrics().sse_clients.dec()
            route = getattr(scope.get("route"), "path", None) or UNROUTED
            method = scope["method"] if scope["method"] in _METHODS else "other"
            requests, duration = self._of(route, method, status)
            requests.inc()
            duration.observe(ended - started)


class LogStateCollector(Collector):
    """The gauges of one ``LogState`` (read before the scrape)."""

    def __init__(self, state: LogState | None) -> None:
        self.state = state

    def collect(self) -> Any:
        up = GaugeMetricFamily("ssot_store_up", "1 when this scrape could read the event "
                               "store, else 0 (and the gauges below are absent)")
        up.add_metric([], 0 if self.state is None else 1)
        yield up
        state = self.state
        if state is None:
            return
        yield GaugeMetricFamily("ssot_log_head_position", "Position of the log's latest "
                                "event", value=state.head)
        yield from _followers("broadcaster", "The broadcaster (log to NATS JetStream)",
                              [state.broadcaster] if state.broadcaster else [])
        yield from _followers("view", "Each asynchronous view", state.views)
        if state.digest_age_seconds is not None:
            yield GaugeMetricFamily("ssot_digest_age_seconds", "Seconds since the latest "
                                    "signed digest of the log was recorded",
                                    value=state.digest_age_seconds)
        yield GaugeMetricFamily("ssot_digest_lag_seconds", "Age of the oldest event no "
                                "digest covers yet (0 when every event is digested)",
                                value=state.digest_lag_seconds)
        yield GaugeMetricFamily("ssot_postgres_notify_queue_usage_ratio", "Share of "
                                "PostgreSQL's NOTIFY queue in use, 0 to 1 "
                                "(pg_notification_queue_usage): held by a LISTENer that "
                                "stopped reading; full, every commit fails",
                                value=state.notify_queue_usage)
        finished = GaugeMetricFamily(
            "ssot_operation_last_run_timestamp_seconds", "When each monitored operation "
            "(verify, export) last finished, successfully or not", labels=["operation"])
        succeeded = GaugeMetricFamily(
            "ssot_operation_last_success_timestamp_seconds", "When each monitored operation "
            "last succeeded", labels=["operation"])
        ok = GaugeMetricFamily("ssot_operation_last_run_ok", "1 when the operation's last "
                               "run succeeded (a verify found no problem), else 0",
                               labels=["operation"])
        for name, run in sorted(state.runs.items()):
            finished.add_metric([name], run.finished_at.timestamp())
            ok.add_metric([name], 1 if run.ok else 0)
            if run.last_ok_at is not None:
                succeeded.add_metric([name], run.last_ok_at.timestamp())
        yield from (finished, succeeded, ok)


def _followers(kind: str, what: str, found: list[Any]) -> Any:
    position = GaugeMetricFamily(f"ssot_{kind}_position", f"{what}: the position it has "
                                 "handled", labels=[kind])
    events = GaugeMetricFamily(f"ssot_{kind}_lag_events", f"{what}: events of the log it "
                               "has not handled yet", labels=[kind])
    seconds = GaugeMetricFamily(f"ssot_{kind}_lag_seconds", f"{what}: age of the oldest "
                                "event it has not handled yet (0 when caught up)",
                                labels=[kind])
    for follower in found:
        position.add_metric([follower.name], follower.position)
        events.add_metric([follower.name], follower.lag_events)
        seconds.add_metric([follower.name], follower.lag_seconds)
    yield from (position, events, seconds)


@functools.cache
def _folder(directory: Path) -> MetricsFolder:
    """The reader of a metrics folder, kept for the life of the process: it decodes each
    entry of the files once and rereads only the values at each scrape."""
    return MetricsFolder(directory)


def counted(directory: Path | None) -> bytes:
    """What the processes counted: the files of every process in ``directory`` (the
    metrics folder of ``ssot serve``), else this process's registry. Safe on any thread:
    the folder's reader takes one reading at a time."""
    metrics()  # every counted metric is listed, at zero before its first use
    if directory is not None:
        return _folder(directory).exposition()
    return generate_latest(REGISTRY)


def warm(directory: Path | None) -> None:
    """Read the metrics folder once now, on a thread of its own: the first reading decodes
    every entry of every process's files (100 to 250 ms at 10,000 series), which would
    otherwise fall on this process's first scrape. The reader is made here, before any
    scrape, so the process has one."""
    if directory is None:
        return
    metrics()
    folder = _folder(directory)

    def read() -> None:
        try:
            folder.exposition()
        except Exception:  # the first scrape reads it then, and reports what fails
            log.debug("reading the metrics folder ahead failed", exc_info=True)

    threading.Thread(target=read, name="ssot-metrics-warm", daemon=True).start()


def process_exiting(directory: Path | None) -> None:
    """This process stops: its live gauges (feed clients) no longer count."""
    if directory is not None:
        mark_process_dead(os.getpid(), str(directory))  # type: ignore[no-untyped-call]


@router.get("/metrics", summary="Prometheus metrics (text exposition format)",
            response_class=Response, include_in_schema=False,
            responses=problem_responses(401, 403))
async def scrape(request: Request) -> Response:
    service = service_of(request)
    state: LogState | None
    try:
        async with service.pool.connection(timeout=2.0) as conn:
            state = await read_log_state(conn, service.settings.broadcaster_name)
    except psycopg.Error:  # an unreachable store is a metric (ssot_store_up 0)
        state = None
    gauges = CollectorRegistry()
    gauges.register(LogStateCollector(state))
    # Off the event loop: reading the folder takes milliseconds at thousands of series.
    body = (await asyncio.to_thread(counted, service.settings.metrics_dir)
            + generate_latest(gauges))
    return Response(body, media_type=CONTENT_TYPE)
