"""Step (p) over HTTP: what identity and access cost a request, auth off beside auth on.

Two servers of the same build run side by side (``ssot serve``, the bench's worker count,
each on a database of its own in the same PostgreSQL): one with ``SSOT_AUTH=off`` (every
request the anonymous administrator, as in steps (c)-(e)), one with auth on, the
``POLICY_RULES`` rules of ``auth_micro.policy_documents`` put through its API by the
bootstrap admin token, and an API token made for a caller who is not an administrator
(administrators bypass the rules), whose rights come from those rules. Rate limiting is
off on both (``SSOT_RATE_LIMIT_PER_SECOND=0``): this is what authentication and
authorisation cost; ``auth_edge`` measures what the rate limiter adds.

The load generator (the worker process) has 16 clients per server and sends its load to
one server at a time, in ``PAIRS`` pairs of slots of ``SLOT`` seconds in the order off,
on, on, off, off, on, … so a drift of the machine's load falls on both sides alike; each
slot on new connections (a server's workers share the connections as they accept them).
Each pair gives an on/off ratio of requests per second; the verdict is their median,
beside the totals. Each slot also counts the CPU its server used (from /proc): requests
per CPU second on/off is the figure least disturbed by what else the machine runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop

from .auth_micro import BENCH_GROUPS, BENCH_SUBJECT, policy_documents
from .database import created
from .http_load import Client, HttpSpec, Tally, open_clients
from .measuring import (
    HOST,
    NAMESPACE,
    STEP_GRACE,
    Cpu,
    CpuMeter,
    descendants,
    process_table,
    quantiles_ms,
    read_stat,
    say,
)
from .server import Server

CONNECTIONS = 16
SLOT, SLOT_QUICK = 0.5, 0.25  # seconds per slot
PAIRS, PAIRS_QUICK = 12, 6  # pairs of slots (one off, one on) per method
ACCESS_WAIT = 30.0  # seconds for every worker to know the new token and policies
SIDES = ("off", "on")


# --- the load, side by side (runs in the worker process) -------------------------------------


@dataclass
class AlternatingSpec:
    method: str  # "PUT" or "GET"
    ports: dict[str, int]  # side → port
    headers: dict[str, str]  # side → header lines of every request
    pids: dict[str, list[int]]  # side → the server's processes (whose CPU a slot used)
    key_prefix: str
    rounds: int
    slot_s: float
    warmup_s: float
    connections: int = CONNECTIONS


@dataclass
class SideTotals:
    requests: int = 0
    seconds: float = 0.0
    non_2xx: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    first_problem: str | None = None
    latencies: list[int] = field(default_factory=list)
    cpu_ticks: int = 0  # the server's CPU during its slots


def _ticks(pids: list[int]) -> int:
    """CPU ticks (user + system) the processes have used so far."""
    total = 0
    for pid in pids:
        if (stat := read_stat(f"/proc/{pid}/stat")) is not None:
            total += int(stat[1][11]) + int(stat[1][12])
    return total


async def _slot(clients: list[Client], method: str, seconds: float) -> tuple[Tally, float]:
    """One side's load for ``seconds`` on new connections (a server's workers share the
    connections as they accept them: new ones each slot, so neither side keeps a lucky
    or unlucky share for the whole step): what it got, and how long it took in fact."""
    tally = Tally()
    for client in clients:
        client.tally = tally
        client.conn.close()
    await asyncio.wait_for(asyncio.gather(*(c.conn.connect() for c in clients)), STEP_GRACE)
    start = time.perf_counter_ns()
    deadline = start + int(seconds * 1e9)
    tasks = [asyncio.create_task(c.put_loop(deadline, [0]) if method == "PUT"
                                 else c.get_loop(deadline)) for c in clients]
    _, pending = await asyncio.wait(tasks, timeout=seconds + STEP_GRACE)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return tally, max(1, tally.last_end - start) / 1e9


async def _alternate(spec: AlternatingSpec) -> dict[str, Any]:
    clients: dict[str, list[Client]] = {}
    for side in SIDES:
        side_spec = HttpSpec(f"auth_{side}", spec.method, spec.ports[side], spec.key_prefix,
                             spec.connections, spec.slot_s, headers=spec.headers[side])
        clients[side] = await open_clients(side_spec, Tally())
    for side in SIDES:  # warm-up, untimed
        await _slot(clients[side], spec.method, spec.warmup_s)
    totals = {side: SideTotals() for side in SIDES}
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    for n in range(spec.rounds):
        rates: dict[str, float] = {}
        per_tick: dict[str, float] = {}
        for side in SIDES if n % 2 == 0 else SIDES[::-1]:
            ticks = _ticks(spec.pids[side])
            tally, seconds = await _slot(clients[side], spec.method, spec.slot_s)
            ticks = _ticks(spec.pids[side]) - ticks
            total = totals[side]
            total.cpu_ticks += ticks
            per_tick[side] = len(tally.latencies) / max(1, ticks)
            total.requests += len(tally.latencies)
            total.seconds += seconds
            total.non_2xx += tally.non_2xx
            total.errors += tally.errors
            total.latencies += tally.latencies
            for status, count in tally.statuses.items():
                total.statuses[str(status)] = total.statuses.get(str(status), 0) + count
            total.first_problem = total.first_problem or tally.first_problem
            rates[side] = len(tally.latencies) / seconds
        if rates["off"] > 0 and per_tick["off"] > 0:
            ratios.append(rates["on"] / rates["off"])
            cpu_ratios.append(per_tick["on"] / per_tick["off"])
    for side in SIDES:
        for client in clients[side]:
            client.conn.close()
    out: dict[str, Any] = {"ratios": ratios, "cpu_ratios": cpu_ratios}
    hz = os.sysconf("SC_CLK_TCK")
    for side, total in totals.items():
        p50, p99, mean, longest = quantiles_ms(total.latencies)
        cpu_s = total.cpu_ticks / hz
        out[side] = {"requests": total.requests, "seconds": round(total.seconds, 3),
                     "requests_per_s": round(total.requests / total.seconds, 1)
                     if total.seconds else 0.0,
                     "server_cpu_s": round(cpu_s, 2),
                     "server_cpu_us_per_request": round(cpu_s / total.requests * 1e6)
                     if total.requests else None,
                     "requests_per_server_cpu_s": round(total.requests / cpu_s, 1)
                     if cpu_s else None,
                     "p50_ms": p50, "p99_ms": p99, "mean_ms": mean, "max_ms": longest,
                     "non_2xx": total.non_2xx, "errors": total.errors,
                     "statuses": total.statuses, "first_problem": total.first_problem}
    return out


def run_alternating(spec: AlternatingSpec) -> dict[str, Any]:
    return uvloop.run(_alternate(spec))


# --- the servers -----------------------------------------------------------------------------


def api_request(port: int, method: str, path: str, token: str | None,
                body: Any = None) -> tuple[int, Any]:
    """One request to the server on ``port`` (with ``token``, a JSON ``body``): its status
    and its answer, decoded."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30.0)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=None if body is None else orjson.dumps(body),
                     headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, orjson.loads(raw) if raw else None
    finally:
        conn.close()


@dataclass
class AuthSetup:
    token: str  # the non-admin caller's API token
    token_id: str
    rules: int
    seconds: float
    checks: dict[str, Any]


def set_up_access(port: int, bootstrap: str) -> AuthSetup:
    """Put the policies and make the caller's token (as the bootstrap admin), then wait
    until every worker knows them: ``ACCESS_WAIT`` at most, polling, never a fixed sleep."""
    started = time.monotonic()
    documents = policy_documents()
    for name, document in documents.items():
        status, answer = api_request(port, "PUT", f"/v1/access/policies/{name}", bootstrap,
                                  document)
        if status not in (200, 201):
            raise RuntimeError(f"PUT policy {name}: HTTP {status} {answer}")
    status, answer = api_request(port, "POST", "/v1/access/tokens", bootstrap, {
        "subject": BENCH_SUBJECT, "groups": list(BENCH_GROUPS), "expires_in": 3600,
        "description": "bench: auth on beside auth off"})
    if status != 201:
        raise RuntimeError(f"POST token: HTTP {status} {answer}")
    token, token_id = answer["token"], answer["id"]
    # Each new connection may land on either worker: the token must work on a run of them.
    deadline, in_a_row = time.monotonic() + ACCESS_WAIT, 0
    while in_a_row < 10:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not know the new token within {ACCESS_WAIT} s")
        status, me = api_request(port, "GET", f"/v1/access/whoami?namespace={NAMESPACE}", token)
        in_a_row = in_a_row + 1 if status == 200 and me["policy_version"] > 0 else 0
        if in_a_row == 0:
            time.sleep(0.05)  # polling interval, not a wait for readiness
    checks = {"whoami_actions": me["actions"], "is_admin": "admins" in me["groups"]}
    for key, action in (("k", "write"), ("secrets/x", "write"), ("k", "delete")):
        status, why = api_request(port, "GET", f"/v1/access/explain?action={action}"
                               f"&namespace={NAMESPACE}&key={key}", token)
        checks[f"{action} {key}"] = why["reason"] if status == 200 else f"HTTP {status}"
    return AuthSetup(token, token_id, sum(len(d["rules"]) for d in documents.values()),
                     round(time.monotonic() - started, 2), checks)


@contextlib.contextmanager
def databases(server_url: str, base: str) -> Iterator[dict[str, str]]:
    """A database per side (``<base>_auth_off``, ``_on``), dropped at the end."""
    with created(server_url, [f"{base}_auth_{side}" for side in SIDES]) as urls:
        yield dict(zip(SIDES, urls, strict=True))


def _tree_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each server's process tree."""
    table = process_table()
    ticks = os.sysconf("SC_CLK_TCK")
    return {side: (sum(table[p].ticks for p in descendants(pid, table) if p in table)
                   + (table[pid].reaped if pid in table else 0)) / ticks
            for side, pid in pids.items()}


def measure_http(server_url: str, base: str, nats_url: str, work: Path, workers: int,
                 meter: CpuMeter, pool: ProcessPoolExecutor, *, quick: bool
                 ) -> dict[str, Any]:
    """PUT@16 and GET@16, auth off beside auth on (see the module's docstring)."""
    slot = SLOT_QUICK if quick else SLOT
    rounds = PAIRS_QUICK if quick else PAIRS
    bootstrap = secrets.token_urlsafe(32)
    common = {"SSOT_RATE_LIMIT_PER_SECOND": "0", "SSOT_RATE_LIMIT_ANONYMOUS_PER_SECOND": "0"}
    env = {"off": {**common, "SSOT_AUTH": "off"},
           "on": {**common, "SSOT_AUTH": "on", "SSOT_BOOTSTRAP_TOKEN_SHA256":
                  hashlib.sha256(bootstrap.encode()).hexdigest()}}
    meter.server_pid = None  # the step's servers are counted on their own
    result: dict[str, Any] = {"connections": CONNECTIONS, "slot_s": slot, "rounds": rounds,
                              "rate_limit_per_second": 0, "workers": workers}
    with databases(server_url, base) as urls, contextlib.ExitStack() as stack:
        servers = {side: Server(urls[side], nats_url, work, workers, name=f"server-auth-{side}",
                                env=env[side]) for side in SIDES}
        started = time.monotonic()
        for server in servers.values():
            stack.callback(server.stop)
            server.launch()
        for server in servers.values():  # both told to stop before either is waited for
            stack.callback(server.terminate)
        for server in servers.values():
            server.wait_until_healthy()
        result["start_s"] = round(time.monotonic() - started, 1)
        say(f"(p) servers up in {result['start_s']} s (auth off :{servers['off'].port}, "
            f"on :{servers['on'].port}); putting {rounds} x 2 slots of {slot:g} s per method")
        setup = set_up_access(servers["on"].port, bootstrap)
        result["setup"] = {"rules": setup.rules, "seconds": setup.seconds,
                           "token_id": setup.token_id, "checks": setup.checks}
        say(f"(p) {setup.rules} rules and a token for {BENCH_SUBJECT} in {setup.seconds} s: "
            f"{setup.checks}")
        headers = {"off": "", "on": f"Authorization: Bearer {setup.token}\r\n"}
        ports = {side: s.port for side, s in servers.items()}
        pids = {side: s.pid for side, s in servers.items()}
        table = process_table()
        trees = {side: sorted(descendants(pid, table)) for side, pid in pids.items()}
        for method in ("PUT", "GET"):
            spec = AlternatingSpec(method, ports, headers, trees, f"auth-{method.lower()}",
                                   rounds, slot, warmup_s=slot)
            cpus: list[Cpu] = []
            before, clock = _tree_seconds(pids), time.monotonic()
            with meter.measure(cpus.append):
                try:
                    got = pool.submit(run_alternating, spec).result(
                        timeout=2 * rounds * (slot + STEP_GRACE) + 4 * STEP_GRACE)
                except Exception:
                    _check_alive(servers)
                    raise
            after, elapsed = _tree_seconds(pids), time.monotonic() - clock
            _check_alive(servers)
            # The meter knows one server: both are counted here, and taken out of "other".
            both = sum(after[side] - before[side] for side in SIDES) / elapsed * 100
            got["cpu"] = {**asdict(cpus[0]), "server": round(both, 1),
                          "other": round(max(0.0, (cpus[0].other or 0.0) - both), 1)}
            got["median_ratio"] = _median(got["ratios"])
            got["median_cpu_ratio"] = _median(got["cpu_ratios"])
            got["ratios"] = [round(r, 3) for r in got["ratios"]]
            got["cpu_ratios"] = [round(r, 3) for r in got["cpu_ratios"]]
            off, on = got["off"]["requests_per_s"], got["on"]["requests_per_s"]
            got["totals_ratio"] = round(on / off, 3) if off else None
            off_cpu = got["off"]["requests_per_server_cpu_s"]
            on_cpu = got["on"]["requests_per_server_cpu_s"]
            got["cpu_ratio"] = round(on_cpu / off_cpu, 3) if off_cpu and on_cpu else None
            result[method.lower()] = got
            say(f"(p) {method}@{CONNECTIONS}: off {off:,.0f} req/s, on {on:,.0f} req/s, "
                f"median on/off {got['median_ratio']} (totals {got['totals_ratio']}); "
                f"server CPU {got['off']['server_cpu_us_per_request']} vs "
                f"{got['on']['server_cpu_us_per_request']} µs per request (requests per "
                f"CPU second on/off {got['cpu_ratio']})")
    return result


def _median(values: list[float]) -> float | None:
    ordered, middle = sorted(values), len(values) // 2
    if not ordered:
        return None
    return round(ordered[middle] if len(ordered) % 2
                 else (ordered[middle - 1] + ordered[middle]) / 2, 3)


def _check_alive(servers: dict[str, Server]) -> None:
    for side, server in servers.items():
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"the auth-{side} server died (exit code "
                               f"{server.proc.returncode}):\n{server.log_tail()}")
