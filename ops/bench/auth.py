"""Step (p) of ``make bench``: what identity and access cost, side by side in one run
(``--only auth`` runs just this step).

- in process (``auth_micro``): authenticating an API token and the bootstrap token, and
  the policy's decision and a listing's key filter, with ``POLICY_RULES`` rules loaded,
  for many distinct callers (cold) and for a few (warm); target p99 < 1 ms for a token
  and a decision together, judged on the thread's CPU clock (what the work costs; on a
  machine shared with other work, the wall clock's p99 is the time the thread waited
  for a core, which the report shows beside it);
- the HTTP edge in process (``auth_edge``): the server's middlewares and ``authorize``
  around an endpoint that only answers, auth off, on, and on with rate limiting;
- over HTTP (``auth_http``): PUT with If-Match and GET of one entry at 16 connections
  against two servers of the same build, auth off and auth on with a caller whose rights
  come from those rules, taking turns slot by slot; target on ≥ 0.90 x off.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from .auth_edge import run_edge
from .auth_http import CONNECTIONS, measure_http
from .auth_micro import MICRO_REQUESTS, MICRO_REQUESTS_QUICK, POLICY_RULES, run_micro
from .measuring import CpuMeter, cpu_shares, fmt, say

MICRO_P99_US = 1000.0  # a token and a decision together, per request
HTTP_RATIO = 0.90  # auth on / auth off, PUT@16 and GET@16

_MICRO_ROWS = (("token", "API token: `Authenticator.authenticate`"),
               ("bootstrap", "bootstrap admin token: the same"),
               ("decide", "`PolicySet.decide` (action, namespace, key)"),
               ("key_filter", "`PolicySet.key_filter` (a listing's read filter)"),
               ("request", "API token + decide: one request's whole check"))


def run_all(server_url: str, base: str, nats_url: str, work: Path, workers: int,
            meter: CpuMeter, pool: ProcessPoolExecutor, *, quick: bool) -> dict[str, Any]:
    requests = MICRO_REQUESTS_QUICK if quick else MICRO_REQUESTS
    say(f"(p) identity and access in process: {POLICY_RULES} rules, {requests:,} calls "
        "per measurement")
    micro = pool.submit(run_micro, requests).result(timeout=600)
    micro["edge"] = pool.submit(run_edge, requests // 2).result(timeout=600)
    request = micro["request_cold"], micro["request_warm"]
    say(f"(p) token + decide p50 / p99: cold {request[0]['p50_us']} / "
        f"{request[0]['p99_us']} µs, warm {request[1]['p50_us']} / {request[1]['p99_us']} µs")
    say(f"(p) PUT and GET @{CONNECTIONS}, auth off beside auth on")
    http = measure_http(server_url, base, nats_url, work, workers, meter, pool,
                        quick=quick)
    report: dict[str, Any] = {"micro": micro, "http": http}
    report["summary"] = evaluate(report)
    report["summary_md"] = summarize(report)
    return report


def evaluate(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The main table's rows of this step, against the issue's targets."""
    rows: list[dict[str, Any]] = []
    micro, http = report.get("micro"), report.get("http")
    if micro:
        for label in ("cold", "warm"):
            m = micro[f"request_{label}"]
            rows.append({
                "step": f"(p) API token + policy decision, {micro['rules']:,} rules, "
                        f"in process, {label}",
                "value": m["cpu_p99_us"], "unit": "µs p99",
                "target": f"p99 < {MICRO_P99_US:,.0f} µs of CPU",
                "passed": m["cpu_p99_us"] < MICRO_P99_US,
                "note": f"CPU p50 {m['cpu_p50_us']} µs; wall clock p50 {m['p50_us']}, p99 "
                        f"{m['p99_us']} µs"})
    edge = (micro or {}).get("edge")
    added = edge["on"]["cpu_p50_us"] - edge["off"]["cpu_p50_us"] if edge else None
    if http:
        for method, name in (("put", "PUT If-Match"), ("get", "GET one entry")):
            step = http.get(method)
            if step is None:
                continue
            on, off, median = step["on"], step["off"], step["median_ratio"]
            clean = all(step[s]["non_2xx"] == 0 and step[s]["errors"] == 0
                        for s in ("on", "off"))
            rows.append({
                "step": f"(p) {name} @{http['connections']}, auth on "
                        f"({http['setup']['rules']:,} rules) beside auth off",
                "value": on["requests_per_s"], "unit": "req/s", "p50_ms": on["p50_ms"],
                "p99_ms": on["p99_ms"], "non_2xx": on["non_2xx"] + off["non_2xx"],
                "target": f"≥ {HTTP_RATIO:.2f}x auth off (median of the slot pairs), "
                          "0 non-2xx",
                "passed": bool(median is not None and median >= HTTP_RATIO and clean),
                "note": f"median {fmt(median, 3)}x over {len(step['ratios'])} pairs, totals "
                        f"{fmt(step['totals_ratio'], 3)}x, per server CPU second "
                        f"{fmt(step['cpu_ratio'], 3)}x; off {off['requests_per_s']:,.0f} "
                        f"req/s{_share(added, off['server_cpu_us_per_request'])}"})
    return rows


def _share(added: float | None, per_request: float | None) -> str:
    """The edge's added CPU as a share of what a request cost the server with auth off."""
    if added is None or not per_request:
        return ""
    return (f"; the edge in process adds {added:.1f} µs of CPU, "
            f"{added / per_request * 100:.1f} % of the {per_request:,.0f} µs this request "
            "costs the server with auth off")


def _micro_cell(m: dict[str, Any]) -> str:
    return f"{m['p50_us']} / {m['p99_us']} ({m['cpu_p50_us']} / {m['cpu_p99_us']})"


def summarize(report: dict[str, Any]) -> list[str]:
    micro, http = report["micro"], report["http"]
    lines = ["", f"(p) Identity and access, in process: {micro['rules']:,} rules in "
             f"{micro['policies']} policies, {micro['tokens']:,} API tokens (loaded in "
             f"{micro['load_ms']} ms); {micro['token_cold']['calls']:,} calls per cell, "
             f"cold = cycling through {micro['identities_cold']:,} callers (more than the "
             f"policy set's caches hold), warm = through {micro['identities_warm']}; µs "
             "p50 / p99 on the wall clock (on the thread's CPU clock):", "",
             "| per request | cold | warm |", "|---|---:|---:|"]
    for key, label in _MICRO_ROWS:
        if key == "bootstrap":
            cell = _micro_cell(micro["bootstrap"])
            lines.append(f"| {label} | {cell} | {cell} |")
            continue
        lines.append(f"| {label} | {_micro_cell(micro[f'{key}_cold'])} | "
                     f"{_micro_cell(micro[f'{key}_warm'])} |")
    edge = micro.get("edge")
    if edge:
        off = edge["off"]["cpu_p50_us"]
        lines += ["", "(p) The HTTP edge of a GET in process: `CorrelationId`, `Authenticate`, "
                  "`RateLimit` and `authorize` around an endpoint that only answers, "
                  f"{edge['off']['calls']:,} calls each; µs p50 / p99 on the wall clock (on "
                  "the thread's CPU clock):", "",
                  "| the edge | per request | CPU p50 beside auth off |", "|---|---:|---:|"]
        for key, label in (("off", "auth off"), ("on", "auth on, rate limiting off"),
                           ("on_limited", "auth on, rate limiting on")):
            m = edge[key]
            extra = "" if key == "off" else f"+{m['cpu_p50_us'] - off:.1f} µs"
            lines.append(f"| {label} | {_micro_cell(m)} | {extra} |")
    setup = http["setup"]
    lines += ["", f"(p) Auth off beside auth on over HTTP: two `ssot serve --workers "
              f"{http['workers']}` of this build, each on a database of its own; auth on: "
              f"{setup['rules']:,} rules, a caller who is not an administrator "
              f"({setup['checks'].get('write k')}; a write to secrets/: "
              f"{setup['checks'].get('write secrets/x')}), rate limiting off on both. "
              f"{http['connections']} clients per server, the load on one server at a time "
              f"in {http['rounds']} pairs of {http['slot_s']:g} s slots (off, on, on, off, …)"
              "; requests per server CPU second from the CPU each server used in its slots; "
              "CPU % of one core over the step (server = both servers):", "",
              "| step | auth off | auth on | on / off req/s | server CPU µs per request "
              "off / on (on / off requests per CPU s) | CPU server / PostgreSQL / load / "
              "other |", "|---|---:|---:|---:|---:|---:|"]
    for method in ("put", "get"):
        step = http.get(method)
        if step is None:
            continue
        off, on = step["off"], step["on"]
        cpu = dict(step["cpu"])
        lines.append(
            f"| {method.upper()} @{http['connections']} | {off['requests_per_s']:,.0f} req/s, "
            f"p50 {fmt(off['p50_ms'], 2)} p99 {fmt(off['p99_ms'], 2)} ms | "
            f"{on['requests_per_s']:,.0f} req/s, p50 {fmt(on['p50_ms'], 2)} p99 "
            f"{fmt(on['p99_ms'], 2)} ms | median {fmt(step['median_ratio'], 3)}x (totals "
            f"{fmt(step['totals_ratio'], 3)}x, pairs {fmt(min(step['ratios'], default=None), 2)}"
            f" to {fmt(max(step['ratios'], default=None), 2)}) | "
            f"{off['server_cpu_us_per_request']} / {on['server_cpu_us_per_request']} "
            f"({fmt(step['cpu_ratio'], 3)}x) | {cpu_shares(cpu)} |")
    return lines
