"""What the routes need, built once per process by the composition root (``app.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import Counter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer
from psycopg_pool import AsyncConnectionPool

from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ledger.writer_service import Writer

from .log_notifier import LogNotifier


@dataclass
class Service:
    settings: Settings
    writer: Writer
    pool: AsyncConnectionPool[Any]
    tracer_provider: TracerProvider
    tracer: Tracer
    writes: Counter
    notifier: LogNotifier
