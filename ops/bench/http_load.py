"""Steps (c)-(e) of ``make bench``: our HTTP API in its own process (``ssot serve``) under
the load generator (the worker process, on raw asyncio streams):

(c) read-modify-write PUTs with ``If-Match`` at 1, 16 and 64 connections, each connection
    on its own entry;
(d) GET of one entry at 16 connections;
(e) the server's resident memory once 100k writes have been acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .database import Monitor
from .measuring import (
    HOST,
    NAMESPACE,
    NETWORK_ERRORS,
    STEP_GRACE,
    Cpu,
    CpuMeter,
    HttpConnection,
    fmt,
    quantiles_ms,
    say,
)
from .seeding import wait_for_followers
from .server import Server

PUT_CONNECTIONS = (1, 16, 64)
GET_CONNECTIONS = 16
RSS_CONNECTIONS = 64
RSS_WRITES, RSS_WRITES_QUICK = 100_000, 20_000

# A ~150-byte document that changes with every write (formatted with connection and sequence).
BODY = (
    b'{"service":"payments-api","region":"eu-west-1","host":"db-%03d.internal","port":5432,'
    b'"pool":{"min":2,"max":32},"flags":["tls","audit"],"revision":%d}'
)


@dataclass
class HttpSpec:
    label: str
    method: str  # "PUT" or "GET"
    port: int
    key_prefix: str
    connections: int
    duration: float  # the measured window, or the cap when target_writes is set
    target_writes: int = 0  # PUT only: stop once this many writes were acknowledged
    headers: str = ""  # header lines every request carries ("Authorization: …\r\n")
    #: (host, port) of each API node: connection i goes to node i mod n (default: port)
    nodes: list[tuple[str, int]] = field(default_factory=list)
    query: str = ""  # GET only: appended to the entry's path ("?min_position=1")
    #: GET only: each connection reads an entry of its own (else all read entry 0)
    own_entries: bool = False


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
    #: seconds the step waited for the followers to catch up before it began
    settled_s: float | None = None


# --- the load generator (runs in the worker process) ----------------------------------------


@dataclass
class Tally:
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


class Client:
    """The requests of one connection on one entry."""

    def __init__(self, spec: HttpSpec, index: int, tally: Tally, node: int = 0) -> None:
        address, port = spec.nodes[node % len(spec.nodes)] if spec.nodes else (HOST, spec.port)
        self.conn = HttpConnection(port, address)
        self.tally = tally
        self.index = index
        path = f"/v1/namespaces/{NAMESPACE}/entries/{spec.key_prefix}-{index}"
        host = f"Host: {address}:{port}\r\n{spec.headers}"
        self.put_head = f"PUT {path} HTTP/1.1\r\n{host}Content-Type: application/json\r\n".encode()
        self.get_request = f"GET {path}{spec.query} HTTP/1.1\r\n{host}\r\n".encode()
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
            except NETWORK_ERRORS as e:
                self.conn.close()
                self.tally.problem(f"creating entry {self.index}: {e!r}")
            await asyncio.sleep(0.1)
        return False

    async def put_loop(self, deadline: int, goal: list[int]) -> None:
        """PUT with If-Match until the deadline (or until ``goal[0]`` writes are acknowledged
        in the whole step when it is above 0); after a failure the entry's version is
        learnt again."""
        target, tally = goal[0], self.tally

        def next_request() -> bytes | None:
            if target and tally.acknowledged >= target:
                return None
            return self.put_request(b"If-Match: " + self.etag)

        def accept(status: int, etag: bytes | None) -> bool:
            if 200 <= status < 300 and etag:
                self.etag = etag
                return True
            return False

        await request_loop(self.conn, tally, deadline, "PUT", next_request, acknowledge=True,
                           accept=accept, recover=self.ensure_entry)

    async def get_loop(self, deadline: int) -> None:
        request = self.get_request
        await request_loop(self.conn, self.tally, deadline, "GET", lambda: request,
                           acknowledge=False)


def _is_2xx(status: int, _etag: bytes | None) -> bool:
    return 200 <= status < 300


async def request_loop(conn: HttpConnection, tally: Tally, deadline: int, what: str,
                       next_request: Callable[[], bytes | None], *, acknowledge: bool,
                       accept: Callable[[int, bytes | None], bool] = _is_2xx,
                       recover: Callable[[], Awaitable[object]] | None = None) -> None:
    """Send ``next_request()`` and wait for its answer, again and again until the deadline
    or until it gives None; each answer timed and counted in ``tally``: one that
    ``accept(status, etag)`` takes as acknowledged (when ``acknowledge``), any other as a
    problem, after which (and after a network error) ``recover()`` runs, untimed."""
    latencies, statuses, clock = tally.latencies, tally.statuses, time.perf_counter_ns
    now = clock()
    while now < deadline and (request := next_request()) is not None:
        try:
            status, etag = await conn.exchange(request)
        except NETWORK_ERRORS as e:
            tally.errors += 1
            tally.problem(f"{what}: {e!r}")
            conn.close()
            await asyncio.sleep(0.05)
            if recover is not None:
                await recover()
            now = clock()
            continue
        end = clock()
        latencies.append(end - now)
        statuses[status] = statuses.get(status, 0) + 1
        tally.last_end = now = end
        if accept(status, etag):
            tally.acknowledged += acknowledge
        else:
            tally.non_2xx += 1
            tally.problem(f"{what}: HTTP {status}")
            if recover is not None:
                await recover()
                now = clock()


async def open_clients(spec: HttpSpec, tally: Tally) -> list[Client]:
    """``spec.connections`` clients, connected and ready: for PUTs each on its own entry,
    created (or its version learnt); for GETs all on entry 0, created by the first, or
    with ``own_entries`` each on its own, as for PUTs."""
    if spec.method == "PUT" or spec.own_entries:
        clients = [Client(spec, i, tally, node=i) for i in range(spec.connections)]
        ready = await asyncio.wait_for(
            asyncio.gather(*(c.ensure_entry() for c in clients)), STEP_GRACE * 2
        )
        if not all(ready):
            raise RuntimeError(f"{spec.label}: could not create the entries: {tally.first_problem}")
    else:  # every connection reads entry 0, created by the first
        clients = [Client(spec, 0, tally, node=i) for i in range(spec.connections)]
        if not await asyncio.wait_for(clients[0].ensure_entry(), STEP_GRACE):
            raise RuntimeError(f"{spec.label}: could not create the entry: {tally.first_problem}")
        await asyncio.wait_for(  # open the other connections before the clock starts
            asyncio.gather(*(c.conn.exchange(c.get_request) for c in clients[1:])), STEP_GRACE)
    return clients


async def _http_step(spec: HttpSpec) -> HttpResult:
    tally = Tally()
    clients = await open_clients(spec, tally)
    setup_writes = tally.acknowledged
    goal = [setup_writes + spec.target_writes if spec.target_writes else 0]
    start = time.perf_counter_ns()
    deadline = start + int(spec.duration * 1e9)
    tasks = [
        asyncio.create_task(c.put_loop(deadline, goal) if spec.method == "PUT"
                            else c.get_loop(deadline))
        for c in clients
    ]
    return await _finish(spec, tally, start, tasks, [c.conn for c in clients])


async def _finish(spec: HttpSpec | RawSpec, tally: Tally, start: int,
                  tasks: list[asyncio.Task[None]], conns: list[HttpConnection]) -> HttpResult:
    """Wait for the connections' loops (cut off ``STEP_GRACE`` after the duration), close
    the connections and sum up."""
    _, pending = await asyncio.wait(tasks, timeout=spec.duration + STEP_GRACE)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in conns:
        conn.close()
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


@dataclass
class RawSpec:
    """Requests made in advance (any server: the baselines), sent by ``connections``
    keep-alive connections, each taking the next one of the list (round robin) as soon as
    it has its previous answer; any 2xx answer counts as a success."""

    label: str
    method: str  # what the requests do, for the results ("PUT", "GET")
    port: int
    connections: int
    duration: float
    requests: list[bytes]
    total: int = 0  # stop once this many requests were sent (0: for the whole duration)


async def _raw_step(spec: RawSpec) -> HttpResult:
    tally = Tally()
    conns = [HttpConnection(spec.port) for _ in range(spec.connections)]
    await asyncio.wait_for(asyncio.gather(*(c.connect() for c in conns)), STEP_GRACE)
    requests, sent = spec.requests, [0]
    limit = spec.total or 2**62

    def next_request() -> bytes | None:
        if sent[0] >= limit:
            return None
        sent[0] += 1
        return requests[(sent[0] - 1) % len(requests)]

    async def loop(conn: HttpConnection, deadline: int) -> None:
        await request_loop(conn, tally, deadline, spec.method, next_request, acknowledge=True)

    start = time.perf_counter_ns()
    deadline = start + int(spec.duration * 1e9)
    tasks = [asyncio.create_task(loop(c, deadline)) for c in conns]
    return await _finish(spec, tally, start, tasks, conns)


def run_raw(spec: RawSpec) -> HttpResult:
    import uvloop

    return uvloop.run(_raw_step(spec))


def describe(r: HttpResult) -> str:
    batch = f", mean batch {r.mean_batch}" if r.mean_batch else ""
    return (f"{r.requests_per_s:,.0f} req/s, p50 {fmt(r.p50_ms, 2)} ms, p99 {fmt(r.p99_ms, 2)} ms,"
            f" non-2xx {r.non_2xx}, errors {r.errors}{batch}")


# --- the steps -------------------------------------------------------------------------------


def http_step(monitor: Monitor, server: Server, meter: CpuMeter, pool: ProcessPoolExecutor,
              spec: HttpSpec) -> HttpResult:
    """One step of the load generator, with where the CPU went and, for PUTs, how the
    writer batched the events it recorded meanwhile. It starts once the server's
    followers of the log have caught up with what came before (``settled_s``: how long
    that took), so a step does not pay for the previous one's events."""
    before = monitor.head()
    waited = time.monotonic()
    wait_for_followers(server.database_url, before)
    settled_s = round(time.monotonic() - waited, 2)
    holder: list[Cpu] = []
    cap = spec.duration + STEP_GRACE * 4
    with meter.measure(holder.append):
        result = pool.submit(run_http, spec).result(timeout=cap)
    result.cpu, result.settled_s = holder[0], settled_s
    after = monitor.head()
    if spec.method == "PUT":
        result.events, result.transactions = monitor.batches(before, after)
        if result.transactions:
            result.mean_batch = round(result.events / result.transactions, 2)
    if server.proc is not None and server.proc.poll() is not None:
        raise RuntimeError(f"the server died during {spec.label}:\n{server.log_tail()}")
    return result


def raw_step(meter: CpuMeter, pool: ProcessPoolExecutor, spec: RawSpec) -> HttpResult:
    """A step of made-in-advance requests (a baseline server's), with where the CPU went."""
    holder: list[Cpu] = []
    with meter.measure(holder.append):
        result = pool.submit(run_raw, spec).result(timeout=spec.duration + STEP_GRACE * 4)
    result.cpu = holder[0]
    return result


def measure(report: dict[str, Any], monitor: Monitor, server: Server, meter: CpuMeter,
            pool: ProcessPoolExecutor, *, token: str, duration: float, quick: bool,
            rss_writes: int, headers: str = "") -> None:
    """(c)-(e) into ``report`` (its ``http`` and ``server`` parts); ``headers``: the header
    lines every request carries (the administrator's token)."""
    meter.server_pid = server.pid
    steps: dict[str, Any] = {}
    report["http"] = steps
    report["server"] = {"pid": server.pid, "rss_at_start": server.rss_kb(),
                             "command": " ".join([Path(server.command()[0]).name,
                                                  *server.command()[1:]])}
    acknowledged = 0
    warmup = HttpSpec("warmup", "PUT", server.port, f"{token}-warm", 16,
                      0.5 if quick else 1.0, headers=headers)
    say(f"warm-up: PUT @16 for {warmup.duration:g} s")
    acknowledged += http_step(monitor, server, meter, pool, warmup).acknowledged_writes
    for connections in PUT_CONNECTIONS:
        label = f"put_{connections}"
        say(f"(c) PUT If-Match @{connections} connections, {duration:g} s")
        result = http_step(monitor, server, meter, pool, HttpSpec(
            label, "PUT", server.port, f"{token}-{label}", connections, duration,
            headers=headers))
        steps[label] = asdict(result)
        acknowledged += result.acknowledged_writes
        say(f"(c) done: {describe(result)}")
    for label, own, what in (("get_16", False, "one entry"),
                             ("get_16_own", True, "each connection its own entry")):
        say(f"(d) GET @{GET_CONNECTIONS} connections, {what}, {duration:g} s")
        result = http_step(monitor, server, meter, pool, HttpSpec(
            label, "GET", server.port, f"{token}-{label}", GET_CONNECTIONS, duration,
            headers=headers, own_entries=own))
        steps[label] = asdict(result)
        acknowledged += result.acknowledged_writes
        say(f"(d) done: {describe(result)}")

    remaining = rss_writes - acknowledged
    if remaining > 0:
        cap = 300.0 if quick else 1200.0
        say(f"(e) {remaining:,} more PUTs @{RSS_CONNECTIONS} to reach "
            f"{rss_writes:,} acknowledged writes (at most {cap:.0f} s)")
        result = http_step(monitor, server, meter, pool, HttpSpec(
            "rss_load", "PUT", server.port, f"{token}-rss", RSS_CONNECTIONS, cap,
            target_writes=remaining, headers=headers))
        steps["rss_load"] = asdict(result)
        acknowledged += result.acknowledged_writes
        say(f"(e) load done: {describe(result)}")
    time.sleep(0.5)
    rss = server.rss_kb()
    stored = monitor.query("SELECT count(*) FROM ssot_events")
    events, transactions = monitor.batches(0, monitor.head())
    report["server"].update({
        "acknowledged_writes": acknowledged,
        "events_in_store": int(stored[0]) if stored else None,
        "rss_after_writes": rss,
        "rss_mb": round(rss["vm_rss_kb"] / 1024, 1) if rss["vm_rss_kb"] else None,
        "tree_rss_mb": round(rss["tree_rss_kb"] / 1024, 1) if rss["tree_rss_kb"] else None,
        "mean_writer_batch": round(events / transactions, 2) if transactions else None,
    })
    say(f"(e) server RSS {report['server']['rss_mb']} MB after {acknowledged:,} "
        f"acknowledged writes ({report['server']['events_in_store']:,} events stored)")

