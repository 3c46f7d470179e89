"""Step (b) of ``make bench``: the plain ``eventsourcing`` library, one event per ``save()``
from 8 threads, in the load generator's process: the baseline the API's writes are
measured against.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from psycopg import sql

from .database import Conninfo, Monitor, conninfo
from .measuring import HOST, STEP_GRACE, Cpu, CpuMeter, quantiles_ms, say

LIBRARY_THREADS = 8
LIBRARY_SCHEMA = "ssot_bench_library"


@dataclass
class LibrarySpec:
    conninfo: Conninfo
    threads: int
    duration: float


@dataclass
class LibraryResult:
    threads: int
    saves: int
    elapsed_s: float
    saves_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    first_error: str | None = None
    cpu: Cpu = field(default_factory=Cpu)


# --- the saves (run in the worker process) ------------------------------------------------


class BenchItem(Aggregate):
    """One event per aggregate: its creation."""

    @event("Registered")
    def __init__(self, value: int) -> None:
        self.value = value


class BenchLibraryApplication(Application[UUID]):
    name = "SsotBenchLibrary"  # tables ssotbenchlibrary_events… never ours


def library_env(conninfo: Conninfo, pool_size: int) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": conninfo.get("dbname", "postgres"),
        "POSTGRES_HOST": conninfo.get("host", HOST),
        "POSTGRES_PORT": conninfo.get("port", "5432"),
        "POSTGRES_USER": conninfo.get("user", "postgres"),
        "POSTGRES_PASSWORD": conninfo.get("password", ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "30",
        # Its own schema: the library creates type stored_event_uuid, as our migrations do.
        "POSTGRES_SCHEMA": LIBRARY_SCHEMA,
        "CREATE_TABLE": "y",
    }


def run_library(spec: LibrarySpec) -> LibraryResult:
    app = BenchLibraryApplication(env=library_env(spec.conninfo, spec.threads))
    try:
        for value in range(20):  # warm the pool and the statements
            app.save(BenchItem(value))
        samples: list[list[int]] = [[] for _ in range(spec.threads)]
        ends = [0] * spec.threads
        errors = [0] * spec.threads
        first_error: list[str] = []
        barrier = threading.Barrier(spec.threads + 1, timeout=60)
        window = {"start": 0, "deadline": 0}

        def work(index: int) -> None:
            mine = samples[index]
            barrier.wait()
            deadline = window["deadline"]
            clock = time.perf_counter_ns
            now = clock()
            while now < deadline:
                try:
                    app.save(BenchItem(index))
                except Exception as e:  # counted and reported, never fatal to the bench
                    errors[index] += 1
                    if not first_error:
                        first_error.append(repr(e))
                    time.sleep(0.01)
                    now = clock()
                    continue
                end = clock()
                mine.append(end - now)
                now = end
            ends[index] = now

        threads = [threading.Thread(target=work, args=(i,), daemon=True)
                   for i in range(spec.threads)]
        for thread in threads:
            thread.start()
        window["start"] = time.perf_counter_ns()
        window["deadline"] = window["start"] + int(spec.duration * 1e9)
        barrier.wait()
        for thread in threads:
            thread.join(spec.duration + STEP_GRACE)
        elapsed = (max(ends) - window["start"]) / 1e9 if max(ends) else spec.duration
        merged = [s for part in samples for s in part]
        p50, p99, _, _ = quantiles_ms(merged)
        return LibraryResult(
            threads=spec.threads, saves=len(merged), elapsed_s=round(elapsed, 3),
            saves_per_s=len(merged) / elapsed if elapsed > 0 else 0.0, p50_ms=p50, p99_ms=p99,
            errors=sum(errors), first_error=first_error[0] if first_error else None,
        )
    finally:
        app.close()


def measure(monitor: Monitor, database_url: str, duration: float, meter: CpuMeter,
            pool: ProcessPoolExecutor) -> dict[str, Any]:
    """(b) in the worker process, in a schema of its own; the result as the report keeps
    it."""
    say(f"(b) eventsourcing save(), one event each, {LIBRARY_THREADS} threads, "
        f"{duration:g} s")
    spec = LibrarySpec(conninfo(database_url), LIBRARY_THREADS, duration)
    holder: list[Cpu] = []
    schema = sql.Identifier(LIBRARY_SCHEMA)
    monitor.conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    try:
        with meter.measure(holder.append):
            library = pool.submit(run_library, spec).result(timeout=duration + 120)
    finally:
        monitor.conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
    library.cpu = holder[0]
    say(f"(b) done: {library.saves_per_s:,.0f} saves/s, {library.errors} errors")
    return asdict(library)
