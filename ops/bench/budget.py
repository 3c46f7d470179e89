"""Step (r) of ``make bench``: the CPU budget of ``ssot serve`` — milliseconds of CPU per
operation for each kind of process it runs, against the targets of each.

The server under test runs a supervisor (uvicorn's main process, whose thread
``ssot-followers`` runs the log's followers: the broadcaster, the views, the digester and
the idempotency purge), its HTTP worker processes and the writer process. Their CPU
is read per thread from ``/proc/PID/task/TID/stat`` before and after each phase:

- ``put_1``: sequential PUTs with ``If-Match`` on one connection (writer batches of 1);
- ``put_16``: the same on 16 connections, each on its own entry (batches of up to 16; the
  mean batch observed is reported, from the transactions that inserted the events: 4 to
  6 in every run, as each connection waits for its answer before its next write);
- ``put_64``: the same on 64 connections, whose batches are those of ~16 events the
  writer's target is set for (a mean batch under ``MIN_MEAN_BATCH`` fails that target:
  it was not measured at its batch size);
- ``get_1``: sequential GETs of one entry on one connection;
- ``idle``: nothing at all, once the followers have caught up.

A PUT phase ends when the followers have caught up with what it wrote, so the followers'
share covers every event of the phase (the seconds that took are recorded as
``catch_up_s``: the whole server's idle CPU over them is counted in the phase too). CPU
time per operation does not depend much on what else the machine runs (the throughput
does), but a phase during which other processes used more than ``NOISY_OTHER`` % of a core
is marked noisy all the same.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .database import Monitor
from .http_load import HttpResult, HttpSpec, run_http
from .measuring import (
    STEP_GRACE,
    Cpu,
    CpuMeter,
    descendants,
    fmt,
    process_table,
    read_stat,
    say,
)
from .seeding import CATCH_UP_TIMEOUT, wait_for_followers
from .server import Server

_TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")

FOLLOWERS, HTTP, WRITER, OTHER = "followers (supervisor)", "HTTP workers", "writer", "other"
KINDS = (HTTP, WRITER, FOLLOWERS)
#: The servers beside ``ssot serve`` whose CPU per operation the phases' table shows.
BESIDE = {"postgres": "PostgreSQL", "nats": "NATS"}

# Targets (ms of CPU per operation, and % of one core when idle), from the issue.
HTTP_PUT_MS, HTTP_GET_MS, FOLLOWERS_MS = 0.5, 0.25, 0.3
WRITER_MS = {"put_1": 0.5, "put_64": 0.15}
#: The mean batch below which a phase did not make the batches the writer's target there
#: is set for.
MIN_MEAN_BATCH = {"put_64": 12.0}
#: Each PUT phase: its connections, and the batches it is meant to make.
PUT_PHASES = {"put_1": (1, "1"), "put_16": (16, "up to 16"), "put_64": (64, "~16")}
IDLE_PERCENT = 1.0


@dataclass(frozen=True)
class ThreadRow:
    kind: str
    name: str  # the thread's name for the operating system (comm)
    ticks: int  # user + system


def kind_of(pid: int, root: int, cmdline: str) -> str:
    """Which part of ``ssot serve`` a process is: the supervisor (``root``, whose threads
    are the followers), the writer (``ssot writer``), an HTTP worker (``ssot
    http-worker``), or something else (an embedded nats-server)."""
    if pid == root:
        return FOLLOWERS
    args = cmdline.split()
    if "nexus_ssot.ops.cli" in args and "writer" in args:
        return WRITER
    if "nexus_ssot.ops.cli" in args and "http-worker" in args:
        return HTTP
    return OTHER


def sample(root: int) -> dict[tuple[int, int], ThreadRow]:
    """Every thread of the server's processes: its kind, name and CPU ticks so far."""
    rows: dict[tuple[int, int], ThreadRow] = {}
    for pid in descendants(root, process_table()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        kind = kind_of(pid, root, cmdline)
        for tid in tids:
            if (stat := read_stat(f"/proc/{pid}/task/{tid}/stat")) is not None:
                name, fields = stat
                rows[(pid, int(tid))] = ThreadRow(kind, name, int(fields[11]) + int(fields[12]))
    return rows


def spent(before: dict[tuple[int, int], ThreadRow], after: dict[tuple[int, int], ThreadRow]
          ) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds of CPU between two samples per kind, and per "kind / thread name"
    (the HTTP workers' threads of one name added up); a thread born meanwhile counts whole."""
    kinds: dict[str, float] = {}
    threads: dict[str, float] = {}
    for key, row in after.items():
        start = before.get(key)
        ms = (row.ticks - (start.ticks if start else 0)) * _TICK_MS
        kinds[row.kind] = kinds.get(row.kind, 0.0) + ms
        name = f"{row.kind} / {row.name}"
        threads[name] = threads.get(name, 0.0) + ms
    return kinds, threads


def phase_figures(label: str, ops: int, seconds: float, kinds: dict[str, float],
                  threads: dict[str, float], cpu: dict[str, Any]) -> dict[str, Any]:
    """A phase's figures: CPU ms per operation (per second when idle) per kind and per
    busy thread, and % of one core."""
    per = max(ops, 1)
    return {
        "label": label, "ops": ops, "seconds": round(seconds, 2),
        "ms_per_op": {k: round(v / per, 3) for k, v in sorted(kinds.items())},
        "percent_of_core": {k: round(v / seconds / 10, 2) for k, v in sorted(kinds.items())}
        if seconds > 0 else {},
        "total_percent_of_core": round(sum(kinds.values()) / seconds / 10, 2)
        if seconds > 0 else None,
        "threads_ms_per_op": {k: round(v / per, 3) for k, v in
                              sorted(threads.items(), key=lambda kv: -kv[1]) if v > 0},
        # PostgreSQL's and the NATS servers' CPU over the phase, per operation (for
        # reference: they share the machine's cores with the server)
        "beside_ms_per_op": {k: round(cpu[k] * seconds * 10 / per, 3) for k in BESIDE
                             if cpu.get(k) is not None},
        "cpu": cpu,
    }


def measure(monitor: Monitor, server: Server, meter: CpuMeter, pool: ProcessPoolExecutor, *,
            token: str, duration: float, idle_seconds: float, headers: str = ""
            ) -> dict[str, Any]:
    """The phases against ``server`` (running): their figures, and the evaluation."""
    phases: dict[str, Any] = {}
    database_url = server.database_url
    loads = [(label, "PUT", connections) for label, (connections, _) in PUT_PHASES.items()]
    for label, method, connections in [*loads, ("get_1", "GET", 1)]:
        say(f"(r) CPU budget: {method} @{connections} for {duration:g} s")
        spec = HttpSpec(f"budget_{label}", method, server.port, f"{token}-budget-{label}",
                        connections, duration, headers=headers)
        head_before = monitor.head()
        cpu: list[Cpu] = []
        before = sample(server.pid)
        started = time.monotonic()
        with meter.measure(cpu.append):
            result: HttpResult = pool.submit(run_http, spec).result(
                timeout=duration + STEP_GRACE * 4)
            head_after = monitor.head()
            loaded = time.monotonic()
            caught_up = wait_for_followers(database_url, head_after)
            catch_up_s = time.monotonic() - loaded
        seconds = time.monotonic() - started
        after = sample(server.pid)
        events, transactions = monitor.batches(head_before, head_after)
        ops = events if method == "PUT" else result.requests
        figures = phase_figures(label, ops, seconds, *spent(before, after), asdict(cpu[0]))
        figures.update(requests_per_s=round(result.requests_per_s), p50_ms=result.p50_ms,
                       non_2xx=result.non_2xx, errors=result.errors, events=events,
                       followers_caught_up=caught_up, catch_up_s=round(catch_up_s, 2),
                       mean_batch=round(events / transactions, 2)
                       if transactions and method == "PUT" else None)
        phases[label] = figures
        say(f"(r) {label}: " + ", ".join(f"{k} {v} ms/op" for k, v in
                                         figures["ms_per_op"].items() if v))
    say(f"(r) idle for {idle_seconds:g} s")
    wait_for_followers(database_url, monitor.head())
    time.sleep(1.0)  # let the last publications and timers settle
    cpu = []
    before = sample(server.pid)
    started = time.monotonic()
    with meter.measure(cpu.append):
        time.sleep(idle_seconds)
    seconds = time.monotonic() - started
    after = sample(server.pid)
    phases["idle"] = phase_figures("idle", round(seconds), seconds, *spent(before, after),
                                   asdict(cpu[0]))
    say(f"(r) idle: {phases['idle']['total_percent_of_core']} % of one core")
    budget = {"phases": phases, "idle_seconds": idle_seconds}
    budget["summary_md"] = summarize(budget)
    return budget


def _row(step: str, value: float | None, target: float, unit: str, phase: dict[str, Any]
         ) -> dict[str, Any]:
    """A row of the main table; ``% of a core`` must stay under its target, ms at most at
    it."""
    strict = unit == "% of a core"
    passed = None if value is None else (value < target if strict else value <= target)
    return {"step": step, "value": value, "unit": unit,
            "target": f"{'<' if strict else '≤'} {target:g} {unit}", "passed": passed,
            "other": (phase.get("cpu") or {}).get("other"), "mean_batch": phase.get("mean_batch")}


def evaluate(budget: dict[str, Any]) -> list[dict[str, Any]]:
    """The main table's rows of the budget: each kind's CPU per operation against its
    target, and the idle server's CPU."""
    phases = budget.get("phases", {})
    rows: list[dict[str, Any]] = []
    for label, (_, batch) in PUT_PHASES.items():
        phase = phases.get(label)
        if not phase:
            continue
        per = phase["ms_per_op"]
        seen = f", mean batch {phase['mean_batch']}" if phase.get("mean_batch") else ""
        where = f"PUT @{label[4:]} (writer batches of {batch}{seen})"
        rows.append(_row(f"(r) CPU per write, {HTTP}, {where}", per.get(HTTP), HTTP_PUT_MS,
                         "ms", phase))
        if label in WRITER_MS:  # (at PUT @16 its CPU is in the phases' table)
            rows.append(_row(f"(r) CPU per write, {WRITER}, {where}", per.get(WRITER),
                             WRITER_MS[label], "ms", phase))
            if (phase.get("mean_batch") or 0) < MIN_MEAN_BATCH.get(label, 0):
                rows[-1]["passed"] = False
                rows[-1]["note"] = (f"mean batch {phase.get('mean_batch')}, not ~16: not "
                                    "measured at the batch size of its target")
        rows.append(_row(f"(r) CPU per event, {FOLLOWERS}, {where}", per.get(FOLLOWERS),
                         FOLLOWERS_MS, "ms", phase))
        if not phase.get("followers_caught_up", True):
            rows[-1]["passed"] = False
            rows[-1]["note"] = f"followers not caught up within {CATCH_UP_TIMEOUT:g} s"
    phase = phases.get("get_1")
    if phase:
        rows.append(_row(f"(r) CPU per GET, {HTTP}, GET @1", phase["ms_per_op"].get(HTTP),
                         HTTP_GET_MS, "ms", phase))
    phase = phases.get("idle")
    if phase:
        rows.append(_row(f"(r) idle `ssot serve`, all its processes, over "
                         f"{phase['seconds']:g} s", phase["total_percent_of_core"],
                         IDLE_PERCENT, "% of a core", phase))
    return rows


def summarize(budget: dict[str, Any]) -> list[str]:
    """Markdown: each phase's CPU per operation by kind, then the busiest threads."""
    phases = budget.get("phases", {})
    lines = ["", "(r) CPU budget of `ssot serve`, ms of CPU per operation (idle: per second) "
             "by kind of process, from /proc/PID/task/TID/stat; a PUT phase lasts until the "
             "followers have caught up with it. PostgreSQL and NATS (the servers beside it, "
             "for reference) are every process of each on this machine, the bench's own "
             "queries included:", "",
             "| phase | ops | ops/s | mean batch | " + " | ".join(KINDS)
             + " | " + " | ".join(BESIDE.values())
             + " | server % of a core | other % of a core |",
             "|---|---:|---:|---:|" + "---:|" * (len(KINDS) + len(BESIDE) + 2)]
    for label, phase in phases.items():
        per = phase["ms_per_op"]
        beside = phase.get("beside_ms_per_op") or {}
        lines.append(f"| {label} | {phase['ops']:,} | {fmt(phase.get('requests_per_s'), 0)} | "
                     f"{phase.get('mean_batch') or '—'} | "
                     + " | ".join(fmt(per.get(k), 3) for k in KINDS) + " | "
                     + " | ".join(fmt(beside.get(k), 3) for k in BESIDE)
                     + f" | {fmt(phase['total_percent_of_core'], 1)} | "
                     f"{fmt((phase.get('cpu') or {}).get('other'), 0)} |")
    lines += ["", "Busiest threads (ms of CPU per operation; idle: per second; names as the "
              "kernel keeps them, 15 characters; an HTTP worker's or the writer's main thread "
              "is `python`):", "",
              "| phase | threads |", "|---|---|"]
    for label, phase in phases.items():
        busiest = list(phase["threads_ms_per_op"].items())[:6]
        lines.append(f"| {label} | " + ", ".join(f"{name} {ms:.3f}" for name, ms in busiest)
                     + " |")
    return lines
