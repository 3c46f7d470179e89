"""The projections part of ``make bench``: rebuilding views from the log, beside the plain
library's notification log read, and the live lag of an asynchronous view.

- (m) a log of 1M events is written through the ledger's writer (``seeding``: two
  processes, batches of 2,000) in a realistic shape: 100k entries of four
  namespaces, each written ~10 times, its versions spread over the log (each key comes
  back every 100k events), ~150-byte configuration documents. In the full run this comes
  on top of the log the earlier steps wrote (the history part's 1M events among them),
  and every figure is over the whole log. Then, once the server's followers of the log
  have caught up and the tables are vacuumed and analyzed:
  - the plain ``eventsourcing`` library reading the same log as a library user would:
    ``recorder.select_notifications(start, limit)`` in pages of 500 (the page its own
    subscriptions read), in the load-generator process;
  - ``ssot replay views --view current_state`` and ``--view namespace_stats``, each run as
    the operator runs it (its own process, ``--json``): events/s, total seconds and how
    long the swap held the live tables locked. The server is running meanwhile (idle).
- (n) the live lag of ``namespace_stats``: the load generator PUTs at a fixed 1,000
  writes/s for ~10 s on 16 connections while the bench polls the view's tracked position
  (``projection_tracking``) every ~1 ms on a connection of its own; per write, the time
  from its commit (the event's ``recorded_at``, the database clock on this host) and from
  its HTTP answer to the first poll that saw the view at or past its position.

Every step records where the CPU went (server, PostgreSQL, the client process — the CLI
or the library reader or the load generator — and everything else).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg

from .measuring import (
    HOST,
    NETWORK_ERRORS,
    CpuMeter,
    HttpConnection,
    cpu_shares,
    latency_quantiles,
    measured,
    say,
    verdict,
)
from .seeding import SeedShape, quiesce, seed_log

EVENTS, EVENTS_QUICK = 1_000_000, 200_000
KEYS, KEYS_QUICK = 100_000, 20_000  # ~10 versions per entry
NAMESPACES = 4
ACTORS = 20
LIBRARY_PAGE = 500  # what the library's own subscriptions read per select
REBUILT_VIEWS = ("current_state", "namespace_stats")
LAG_VIEW = "namespace_stats"
LAG_RATE = 1000  # writes/s
LAG_CONNECTIONS = 16
LAG_KEYS = 500
POLL_INTERVAL = 0.001
CATCH_UP_TIMEOUT = 30.0

# Targets from the issue.
REBUILD_RATE, LAG_P99_MS = 50_000, 50.0


# --- the plain library's read of the log (runs in the load-generator process) -------------


def library_read(database_url: str, page: int = LIBRARY_PAGE) -> dict[str, Any]:
    """Read the whole log through the library's recorder, page by page."""
    from nexus_ssot.ledger.store import open_application

    app = open_application(database_url, pool_size=1)
    try:
        recorder = app.recorder
        recorder.select_notifications(1, page)  # warm the connection and the statement
        events, start, selects = 0, 1, 0
        started = time.perf_counter()
        while True:
            notifications = recorder.select_notifications(start, page)
            selects += 1
            if not notifications:
                break
            events += len(notifications)
            start = notifications[-1].id + 1
        elapsed = time.perf_counter() - started
    finally:
        app.close()
    return {"events": events, "seconds": round(elapsed, 2), "page": page, "selects": selects,
            "events_per_s": round(events / elapsed) if elapsed > 0 else None}


# --- a steady rate of writes (runs in the load-generator process) --------------------------


@dataclass
class SteadySpec:
    port: int
    namespace: str
    rate: int
    seconds: float
    connections: int = LAG_CONNECTIONS
    keys: int = LAG_KEYS
    headers: str = ""  # header lines every PUT carries (the administrator's token)


@dataclass
class SteadyResult:
    writes: int  # scheduled
    acknowledged: int
    elapsed_s: float
    writes_per_s: float
    statuses: dict[str, int]
    errors: int
    latest_start_ms: float  # the furthest a write was sent behind its schedule
    first_problem: str | None = None
    #: Per write ``i`` (its document's ``i``): the wall-clock time of its HTTP answer (0: none).
    answered_at: list[float] = field(default_factory=list)


async def _steady(spec: SteadySpec) -> SteadyResult:
    total = int(spec.rate * spec.seconds)
    conns = [HttpConnection(spec.port) for _ in range(spec.connections)]
    health = f"GET /v1/health HTTP/1.1\r\nHost: {HOST}:{spec.port}\r\n\r\n".encode()
    await asyncio.gather(*(c.exchange(health) for c in conns))  # connected before the clock
    answered = [0.0] * total
    statuses: dict[int, int] = {}
    problems: list[str] = []
    late = [0.0]
    started = time.perf_counter()

    async def connection(n: int) -> None:
        conn = conns[n]
        for i in range(n, total, spec.connections):
            delay = started + i / spec.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late[0] = max(late[0], -delay)
            body = orjson.dumps({"i": i, "service": "payments-api", "region": "eu-west-1",
                                 "pool": {"min": 2, "max": 32}, "flags": ["tls", "audit"]})
            request = (f"PUT /v1/namespaces/{spec.namespace}/entries/k{i % spec.keys} HTTP/1.1"
                       f"\r\nHost: {HOST}:{spec.port}\r\n{spec.headers}"
                       "Content-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            try:
                status, _ = await conn.exchange(request)
            except NETWORK_ERRORS as e:
                problems.append(f"PUT: {e!r}")
                conn.close()
                continue
            if 200 <= status < 300:
                answered[i] = time.time()
            else:
                problems.append(f"PUT: HTTP {status}")
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(connection(n) for n in range(spec.connections)))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    acknowledged = sum(1 for t in answered if t)
    return SteadyResult(
        writes=total, acknowledged=acknowledged, elapsed_s=round(elapsed, 3),
        writes_per_s=round(acknowledged / elapsed, 1) if elapsed > 0 else 0.0,
        statuses={str(k): v for k, v in sorted(statuses.items())},
        errors=len(problems), latest_start_ms=round(late[0] * 1000, 2),
        first_problem=problems[0] if problems else None, answered_at=answered)


def run_steady(spec: SteadySpec) -> SteadyResult:
    import uvloop

    return uvloop.run(_steady(spec))


# --- the view's tracked position, polled (a thread of the bench process) -------------------


class TrackingPoller(threading.Thread):
    """Polls a view's row of ``projection_tracking`` every ``POLL_INTERVAL`` on a
    connection of its own; keeps (wall-clock time of the answer, position) at each change.
    The time is that of the answer of the first poll that saw the position: at most one
    poll interval and one round trip after the view committed it."""

    def __init__(self, database_url: str, view: str) -> None:
        super().__init__(name="bench-tracking-poller", daemon=True)
        self.database_url = database_url
        self.view = view
        self.times: list[float] = []
        self.positions: list[int] = []
        self.polls = 0
        self.seconds = 0.0
        self.error: str | None = None
        self.stopping = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                cur = conn.cursor()
                query = ("SELECT notification_id FROM projection_tracking"
                         " WHERE application_name = %s")
                started = time.perf_counter()
                while not self.stopping.is_set():
                    cur.execute(query, (self.view,), prepare=True)
                    row = cur.fetchone()
                    now = time.time()
                    self.polls += 1
                    position = int(row[0]) if row else 0
                    if not self.positions or position != self.positions[-1]:
                        self.times.append(now)
                        self.positions.append(position)
                    self.ready.set()
                    time.sleep(POLL_INTERVAL)
                self.seconds = time.perf_counter() - started
        except psycopg.Error as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.ready.set()

    def seen(self, position: int) -> float | None:
        """When the view was first seen at or past ``position``."""
        index = bisect.bisect_left(self.positions, position)
        return self.times[index] if index < len(self.times) else None

    def wait_for(self, position: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_alive():
            if self.positions and self.positions[-1] >= position:
                return True
            time.sleep(0.05)
        return bool(self.positions and self.positions[-1] >= position)


# --- the steps -----------------------------------------------------------------------------


def _log_shape(database_url: str) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT originator_id),"
                           " coalesce(max(notification_id), 0) FROM ssot_events").fetchone()
        namespaces = conn.execute("SELECT count(DISTINCT namespace) FROM entries").fetchone()
        sizes = conn.execute(
            "SELECT pg_total_relation_size('ssot_events'), pg_total_relation_size('entries')"
        ).fetchone()
    assert row is not None and namespaces is not None and sizes is not None
    return {"events": int(row[0]), "streams": int(row[1]), "head": int(row[2]),
            "namespaces": int(namespaces[0]), "events_table_mb": round(sizes[0] / 2**20),
            "entries_table_mb": round(sizes[1] / 2**20)}


def rebuild_view(database_url: str, view: str, timeout: float) -> dict[str, Any]:
    """``ssot replay views --view <view>`` in its own process; what it reports (--json)."""
    ssot = Path(sys.executable).parent / "ssot"
    base = [str(ssot)] if ssot.is_file() else [sys.executable, "-m", "nexus_ssot.ops.cli"]
    command = [*base, "--json", "replay", "views", "--view", view]
    env = {**os.environ, "SSOT_DATABASE_URL": database_url}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[-5:])} exited with {done.returncode}:\n"
                           f"{done.stderr.strip()[-2000:]}")
    [result] = json.loads(done.stdout)
    assert result["complete"], result
    return {"command": " ".join(["ssot", *command[len(base):]]), "events": result["events"],
            "seconds": round(result["seconds"], 2), "events_per_s": result["rate"],
            "swap_lock_ms": round(result["swap_seconds"] * 1000, 1),
            "process_wall_s": round(wall, 2), "position": result["position"]}


def live_lag(port: int, database_url: str, meter: CpuMeter, pool: ProcessPoolExecutor,
             seconds: float, headers: str = "") -> dict[str, Any]:
    """(n): a steady 1,000 writes/s, and per write the time until ``LAG_VIEW`` reached it."""
    namespace = f"lag{secrets.token_hex(3)}"
    poller = TrackingPoller(database_url, LAG_VIEW)
    poller.start()
    poller.ready.wait(10)
    spec = SteadySpec(port, namespace, LAG_RATE, seconds, headers=headers)
    checkpoints = _checkpoints(database_url)
    try:
        steady, cpu = measured(meter, lambda: pool.submit(run_steady, spec).result(
            timeout=seconds + 120))
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT (document->>'i')::int, position, extract(epoch FROM recorded_at)"
                " FROM entry_history WHERE namespace = %s ORDER BY position",
                (namespace,)).fetchall()
        checkpoints = _checkpoints(database_url) - checkpoints
        last = int(rows[-1][1]) if rows else 0
        caught_up = poller.wait_for(last, CATCH_UP_TIMEOUT)
    finally:
        poller.stopping.set()
        poller.join(10)
    from_commit: list[float] = []
    from_answer: list[float] = []
    timeline: list[tuple[float, float]] = []
    unseen = 0
    for i, position, recorded_at in rows:
        seen = poller.seen(int(position))
        if seen is None:
            unseen += 1
            continue
        from_commit.append((seen - float(recorded_at)) * 1000)
        timeline.append((float(recorded_at), from_commit[-1]))
        answered = steady.answered_at[i] if 0 <= i < len(steady.answered_at) else 0.0
        if answered:
            from_answer.append((seen - answered) * 1000)
    report = asdict(steady)
    del report["answered_at"]
    return {"view": LAG_VIEW, "namespace": namespace, "load": report, "cpu": cpu,
            "events": len(rows), "unseen": unseen, "caught_up": caught_up,
            "from_commit": latency_quantiles(from_commit),
            "from_http_answer": latency_quantiles(from_answer),
            "by_second": by_second(timeline, LAG_P99_MS),
            "checkpoints": checkpoints,
            "polls": poller.polls,
            "mean_poll_interval_ms": round(poller.seconds / poller.polls * 1000, 2)
            if poller.polls else None, "poller_error": poller.error}


def _checkpoints(database_url: str) -> int:
    """Checkpoints the PostgreSQL server has begun so far (timed and requested)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT checkpoints_timed + checkpoints_req"
                           " FROM pg_stat_bgwriter").fetchone()
    return int(row[0]) if row else 0


def by_second(timeline: list[tuple[float, float]], over_ms: float) -> dict[str, Any]:
    """Where the lags of ``timeline`` ((commit time, lag in ms) of each write) lie in
    time: the seconds since the first commit that held a lag over ``over_ms``, and the
    worst of them (its offset, its writes over ``over_ms``, its longest lag). A stall
    shows as one or two such seconds, a steady excess as most of them."""
    if not timeline:
        return {"seconds": 0, "seconds_over": 0, "worst": None}
    first = min(at for at, _ in timeline)
    seconds: dict[int, list[float]] = {}
    for at, lag in timeline:
        seconds.setdefault(int(at - first), []).append(lag)
    over = {s: [lag for lag in lags if lag > over_ms] for s, lags in seconds.items()}
    over = {s: lags for s, lags in over.items() if lags}
    worst = max(over, key=lambda s: (max(over[s]), s), default=None)
    return {"seconds": len(seconds), "seconds_over": len(over),
            "worst": None if worst is None else {
                "second": worst, "writes_over": len(over[worst]),
                "max_ms": round(max(over[worst]), 3)}}


def run_all(port: int, database_url: str, meter: CpuMeter, pool: ProcessPoolExecutor, *,
            events: int = EVENTS, keys: int = KEYS, seconds: float = 10.0,
            headers: str = "") -> dict[str, Any]:
    token = secrets.token_hex(3)
    shape = SeedShape(tuple(f"proj{token}-{n}" for n in range(NAMESPACES)), keys=keys,
                      wide=True)
    actors = [f"actor{n:02d}-{token}" for n in range(ACTORS)]
    report: dict[str, Any] = {}
    say(f"(m) seeding {events:,} events ({keys:,} entries of {NAMESPACES} namespaces, "
        f"~{events // keys} versions each, spread over the log) through the writer")
    seed_s = seed_log(database_url, shape, events, actors, f"rare-{token}")
    say(f"(m) seeded in {seed_s:.1f} s ({events / seed_s:,.0f}/s)")
    quiet = quiesce(database_url)
    report["seeding"] = {"events_seeded": events, "keys": keys, "namespaces": NAMESPACES,
                         "seconds": round(seed_s, 1), "events_per_s": round(events / seed_s),
                         **quiet}
    report["log"] = _log_shape(database_url)
    say(f"(m) the log: {report['log']['events']:,} events of {report['log']['streams']:,} "
        f"streams; quiet after {quiet['followers_wait_s']} s, VACUUM ANALYZE "
        f"{quiet['vacuum_analyze_s']} s")

    say(f"(m) the plain library reads the log (select_notifications, pages of {LIBRARY_PAGE})")
    library, cpu = measured(meter, lambda: pool.submit(library_read, database_url).result(
        timeout=1800))
    report["library_read"] = {**library, "cpu": cpu}
    say(f"(m) library: {library['events']:,} events in {library['seconds']} s "
        f"({library['events_per_s']:,}/s)")

    rebuilds: dict[str, Any] = {}
    report["rebuild"] = rebuilds
    timeout = report["log"]["events"] / 2000 + 300
    for view in REBUILT_VIEWS:
        say(f"(m) ssot replay views --view {view}")
        done, cpu = measured(meter, functools.partial(rebuild_view, database_url, view,
                                                       timeout), children_are_load=True)
        rebuilds[view] = {**done, "cpu": cpu}
        say(f"(m) {view}: {done['events']:,} events in {done['seconds']} s "
            f"({done['events_per_s']:,}/s), tables locked {done['swap_lock_ms']} ms")

    say(f"(n) live lag of {LAG_VIEW}: {LAG_RATE:,} writes/s for {seconds:g} s")
    report["lag"] = live_lag(port, database_url, meter, pool, seconds, headers)
    lag = report["lag"]
    say(f"(n) {lag['load']['writes_per_s']:,} writes/s; commit → view p50 "
        f"{lag['from_commit']['p50_ms']} ms, p99 {lag['from_commit']['p99_ms']} ms")
    return report


# --- reporting -----------------------------------------------------------------------------


def evaluate(report: dict[str, Any], *, quick: bool = False) -> list[dict[str, Any]]:
    """One row per line of the table: what was measured, the target and whether it was met."""
    log = report["log"]
    enough = log["events"] >= EVENTS
    note = "" if enough else (" (quick run)" if quick else f" (only {log['events']:,} events)")
    library = report["library_read"]
    rows: list[dict[str, Any]] = [{
        "step": f"(m) plain library: select_notifications, pages of {library['page']}",
        "value": library["events_per_s"], "unit": "events/s", "events": library["events"],
        "seconds": library["seconds"], "cpu": library["cpu"], "target": "baseline",
        "status": "—"}]
    for view, done in report["rebuild"].items():
        rate = done["events_per_s"]
        row = {"step": f"(m) `{done['command']}`", "value": rate, "unit": "events/s",
               "events": done["events"], "seconds": done["seconds"],
               "swap_lock_ms": done["swap_lock_ms"], "cpu": done["cpu"],
               "x_library": round(rate / library["events_per_s"], 2)
               if library["events_per_s"] else None,
               "seconds_per_1m": round(1e6 / rate, 1) if rate else None}
        if view == "current_state":
            passed = bool(rate and rate >= REBUILD_RATE and enough)
            row.update(target=f"≥ {REBUILD_RATE:,} events/s (1M in < 60 s)", passed=passed,
                       status=verdict(passed, done["cpu"].get("other")) + note)
        else:
            row.update(target="(for reference)", status="—")
        rows.append(row)
    lag = report["lag"]
    p99 = lag["from_commit"]["p99_ms"]
    rate = lag["load"]["writes_per_s"]
    complete = lag["caught_up"] and not lag["unseen"] and not lag["load"]["errors"]
    reached = rate >= 0.9 * LAG_RATE
    passed = bool(p99 is not None and p99 < LAG_P99_MS and complete and reached)
    note = "" if reached else f" (only {rate:,.0f} of {LAG_RATE:,} writes/s reached)"
    rows.append({"step": f"(n) live lag of {lag['view']} at {LAG_RATE:,} writes/s: commit "
                         "(recorded_at) → tracked position", "value": rate, "unit": "writes/s",
                 **lag["from_commit"], "cpu": lag["cpu"],
                 "target": f"p99 < {LAG_P99_MS:g} ms at ~{LAG_RATE:,} writes/s",
                 "passed": passed, "status": verdict(passed, lag["cpu"].get("other")) + note})
    rows.append({"step": "(n) the same, from the HTTP answer", "value": None,
                 "unit": "writes/s", **lag["from_http_answer"], "cpu": {},
                 "target": "(for reference)", "status": "—"})
    return rows


def _seconds_over(seconds: dict[str, Any] | None) -> str:
    """The (n) line's account of when the lags over the target happened."""
    if not seconds:
        return ""
    worst = seconds["worst"]
    if worst is None:
        return f"; no lag over {LAG_P99_MS:g} ms in any of its {seconds['seconds']} seconds"
    return (f"; lags over {LAG_P99_MS:g} ms in {seconds['seconds_over']} of its "
            f"{seconds['seconds']} seconds, the worst second +{worst['second']} s "
            f"({worst['writes_over']:,} writes over, up to {worst['max_ms']:,.1f} ms)")


def summarize(report: dict[str, Any], *, quick: bool = False) -> list[str]:
    rows = evaluate(report, quick=quick)
    report["summary"] = rows
    log, seeding, lag = report["log"], report["seeding"], report["lag"]
    lines = ["", f"Projections: rebuilding views from a log of {log['events']:,} events "
             f"({log['streams']:,} streams, {log['namespaces']} namespaces; events table "
             f"{log['events_table_mb']:,} MB), beside the plain library reading the same "
             "log, and the live lag of an asynchronous view; CPU in % of one core (client: "
             "the CLI, the library reader or the load generator; `other`: every other "
             "process on the machine):", "",
             "| step | result | seconds | p50 ms | p99 ms | x library read "
             "| CPU % server / PostgreSQL / client / other | target | status |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for row in rows:
        value = "" if row["value"] is None else f"{row['value']:,.0f} {row['unit']}"
        if row.get("swap_lock_ms") is not None:
            value += f", swap locked {row['swap_lock_ms']:,.0f} ms"
        seconds = "" if row.get("seconds") is None else f"{row['seconds']:,}"
        ratio = "" if row.get("x_library") is None else f"{row['x_library']:.2f}x"
        p50 = "" if row.get("p50_ms") is None else str(row["p50_ms"])
        p99 = "" if row.get("p99_ms") is None else str(row["p99_ms"])
        lines.append(f"| {row['step']} | {value} | {seconds} | {p50} | {p99} | {ratio} "
                     f"| {cpu_shares(row['cpu']) if row['cpu'] else ''} | {row['target']} "
                     f"| {row['status']} |")
    load = lag["load"]
    lines += ["", f"(m) seeded {seeding['events_seeded']:,} events ({seeding['keys']:,} "
              f"entries, ~{seeding['events_seeded'] // seeding['keys']} versions) through "
              f"the writer in {seeding['seconds']} s ({seeding['events_per_s']:,}/s), then "
              f"waited {seeding['followers_wait_s']} s for the server's followers and ran "
              f"VACUUM ANALYZE ({seeding['vacuum_analyze_s']} s). (n) {load['acknowledged']:,}"
              f"/{load['writes']:,} writes acknowledged in {load['elapsed_s']} s, the latest "
              f"sent {load['latest_start_ms']} ms behind schedule, {load['errors']} errors; "
              f"{lag['events']:,} events, {lag['unseen']} never seen at the view; tracking "
              f"polled every {lag['mean_poll_interval_ms']} ms ({lag['polls']:,} polls)"
              f"{_seconds_over(lag.get('by_second'))}; PostgreSQL began "
              f"{lag.get('checkpoints', '?')} checkpoints meanwhile."]
    return lines

