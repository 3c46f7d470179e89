"""The service's Prometheus metrics that processes count as they work (docs/metrics.md has
the table): made once per process on first use, never at import, so that ``ssot serve`` can
first give every process of it one metrics folder (``PROMETHEUS_MULTIPROC_DIR``, read by
prometheus-client) and one scrape of ``GET /metrics`` adds up the HTTP workers, the writer
and the followers. What PostgreSQL already knows (positions, lags, ages) is read at scrape
time instead (``api/metrics.py``).

Names are ``ssot_``-prefixed. The stable tier keeps its names, types and labels; names under
``ssot_debug_`` may change between releases. Every label has a bounded set of values: route
templates (never raw paths), methods, statuses, error codes, event types, and namespaces
only when ``SSOT_METRICS_NAMESPACE_LABELS`` is on, at most ``SSOT_METRICS_NAMESPACE_LIMIT``
of them (the rest count under ``_other``)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

#: Request durations: the SLO's 100 ms threshold is a bucket bound.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
#: Change delivery (commit to NATS acknowledgement): the SLO's 50 ms is a bucket bound.
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

#: The namespace label of what lies past the limit.
OTHER_NAMESPACE = "_other"


@dataclass(frozen=True)
class LedgerMetrics:
    http_requests: Counter
    http_duration: Histogram
    http_errors: Counter
    auth_denials: Counter
    writes: Counter
    idempotent_replays: Counter
    sse_clients: Gauge
    writer_batch_size: Histogram
    writer_commit_duration: Histogram
    broadcaster_publish_errors: Counter
    broadcaster_delivery: Histogram
    namespace_writes: Counter
    entry_reads_gathered: Histogram
    entry_reads_alone: Counter


@functools.cache
def metrics() -> LedgerMetrics:
    """This process's metrics, made on the first call (in the default registry)."""
    # One process or many, the same samples: the multiprocess mode has no ``_created``.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    return LedgerMetrics(
        http_requests=Counter(
            "ssot_http_requests", "HTTP requests answered, by route template, method and "
            "status", ["route", "method", "status"]),
        http_duration=Histogram(
            "ssot_http_request_duration_seconds", "Time to answer an HTTP request (to the "
            "first byte of the answer's head), by route template and method",
            ["route", "method"], buckets=LATENCY_BUCKETS),
        http_errors=Counter(
            "ssot_http_errors", "Problem answers by their machine-readable code (bad input, "
            "conflicts, schema rejections, unavailability)", ["status", "code"]),
        auth_denials=Counter(
            "ssot_auth_denials", "Requests refused by authentication, the access policy or "
            "a rate limit, by reason", ["reason"]),
        writes=Counter(
            "ssot_writes", "Write outcomes: appended (an event), unchanged (nothing to "
            "append) or replayed (a repeated Idempotency-Key), by event type",
            ["event_type", "outcome"]),
        idempotent_replays=Counter(
            "ssot_idempotent_replays", "Writes answered from the outcome of an earlier "
            "request with the same Idempotency-Key"),
        sse_clients=Gauge(
            "ssot_sse_clients", "Change-feed (server-sent events) clients connected",
            multiprocess_mode="livesum"),
        writer_batch_size=Histogram(
            "ssot_writer_batch_size", "Commands committed per writer transaction",
            buckets=BATCH_BUCKETS),
        writer_commit_duration=Histogram(
            "ssot_writer_commit_duration_seconds", "Time from a batch's decision to its "
            "commit, per writer transaction", buckets=COMMIT_BUCKETS),
        broadcaster_publish_errors=Counter(
            "ssot_broadcaster_publish_errors", "Broadcaster failures (NATS or PostgreSQL "
            "away, a publish not acknowledged); each is retried"),
        broadcaster_delivery=Histogram(
            "ssot_broadcaster_delivery_seconds", "Time from an event's commit to NATS "
            "acknowledging its publication", buckets=DELIVERY_BUCKETS),
        namespace_writes=Counter(
            "ssot_debug_namespace_writes", "Events appended per namespace (only with "
            "SSOT_METRICS_NAMESPACE_LABELS; past the limit as _other)", ["namespace"]),
        entry_reads_gathered=Histogram(
            "ssot_debug_entry_reads_gathered", "Reads of one entry's current state "
            "answered by one statement, of the statements run for reads that waited for "
            "the one before (those that waited together share one)", buckets=BATCH_BUCKETS),
        # a counter, not an observation of 1: a histogram's observation costs a GET ~4 %
        # of its CPU in the multiprocess mode (docs/performance.md)
        entry_reads_alone=Counter(
            "ssot_debug_entry_reads_alone", "Reads of one entry's current state that ran "
            "at once, alone (no statement in flight)"),
    )


class NamespaceLabels:
    """The namespace label values this process hands out: the first ``limit`` namespaces
    seen keep their names, the rest are ``_other``; off, nothing is counted."""

    def __init__(self, enabled: bool, limit: int) -> None:
        self.enabled = enabled
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def label(self, namespace: str) -> str:
        if namespace in self._seen:
            return namespace
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(namespace)
                return namespace
        return OTHER_NAMESPACE

    def count_write(self, namespace: str) -> None:
        if self.enabled:
            _namespace_counter(self.label(namespace)).inc()


# The labelled children are looked up once per process: prometheus-client's ``labels``
# takes a lock and converts every value each call.
@functools.cache
def write_counter(event_type: str, kind: str) -> Counter:
    """The child of ``writes`` for one event type and outcome."""
    return metrics().writes.labels(event_type, kind)


@functools.cache
def _namespace_counter(label: str) -> Counter:
    """The child of ``namespace_writes`` for one label (``NamespaceLabels`` hands out at
    most its limit of them, and ``_other``)."""
    return metrics().namespace_writes.labels(label)


def record_delivery(committed_at: Iterable[datetime]) -> None:
    """The broadcaster's: NATS acknowledged the events committed at ``committed_at``."""
    delivery = metrics().broadcaster_delivery
    now = datetime.now(UTC)
    for at in committed_at:
        delivery.observe(max(0.0, (now - at).total_seconds()))


def record_commit(commands: int, seconds: float) -> None:
    """The writer's ``on_commit``: one transaction of ``commands`` took ``seconds``."""
    m = metrics()
    m.writer_batch_size.observe(commands)
    m.writer_commit_duration.observe(seconds)
