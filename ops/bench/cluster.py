"""Step (v) of ``make bench`` (``--only cluster``): the cluster of docs/cluster.md on this
machine, its PostgreSQL with ``fsync`` on and a synchronous standby, each API node with
one HTTP worker and its writer:

- one API node against both (connection i on node i mod 2): PUT (If-Match, each
  connection on its own entry) and GET of one entry, at 16 and 64 connections;
- GET with ``?min_position=1`` (read-your-writes) at 16 connections on node 1, which reads
  the primary, against node 2, which reads the replica (``SSOT_READ_DATABASE_URL``);
- the failover times of the faults, once each with no load: the leading followers killed
  (takeover), the NATS node leading the stream killed (new leader, publishing again), the
  PostgreSQL primary stopped (first write acknowledged after the stop).

Each comparison takes turns (A, B, A, B, … in ``SLOTS`` slots each) so that what else the
machine does falls on both sides alike; its ratio is over the totals, and the machine's
idle share during it is given. Every process of the cluster shares the machine's cores
with the load generator: on two cores a second API node adds no CPU to spend.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

from nexus_ssot.ops.cluster import faults
from nexus_ssot.ops.cluster.topology import API_HOSTS, Topology

from .http_load import HttpSpec, run_http
from .measuring import fmt, say

CONNECTIONS = (16, 64)
SLOTS = 4


def _ticks(groups: set[int]) -> tuple[int, int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, and the ticks of the
    processes in process groups ``groups`` and of this one (the load generator)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    ours = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(stat_fields[2]) in groups or int(entry.name) == os.getpid():
            ours += int(stat_fields[11]) + int(stat_fields[12])
    return sum(fields) - fields[3] - fields[4], sum(fields), ours


def _groups(top: Topology) -> set[int]:
    """The process groups of the cluster's processes (PostgreSQL's postmasters lead
    theirs; each writer process leads its own)."""
    groups = {g.proc.pid for g in top.services.values() if g.proc is not None}
    groups |= {pid for name in API_HOSTS for pid in top.writers_of(name)}
    groups |= {n.pid for n in top.nats if n.pid is not None}
    groups |= {p.pid for p in top.pg.values() if p.pid is not None}
    return groups


def alternate(label: str, sides: dict[str, Callable[[float], HttpSpec]], duration: float,
              groups: set[int]) -> dict[str, Any]:
    """Each side's spec run in turn, ``SLOTS`` times, ``duration / SLOTS`` seconds each:
    requests/s over its slots, the median of its slots' p99, and the share of the
    machine's CPU that processes other than the cluster's and the load generator's took
    meanwhile (``other_percent``: above a few %, the figures are noisy)."""
    busy0, total0, ours0 = _ticks(groups)
    slot = duration / SLOTS
    sums: dict[str, dict[str, Any]] = {n: {"requests": 0, "seconds": 0.0, "p99": [],
                                           "problems": 0} for n in sides}
    for _ in range(SLOTS):
        for name, make in sides.items():
            result = run_http(make(slot))
            side = sums[name]
            side["requests"] += result.requests
            side["seconds"] += result.elapsed_s
            side["problems"] += result.non_2xx + result.errors
            if result.p99_ms is not None:
                side["p99"].append(result.p99_ms)
    busy1, total1, ours1 = _ticks(groups)
    other = (busy1 - busy0) - (ours1 - ours0)
    out: dict[str, Any] = {"other_percent": round(100 * max(0, other) / max(1, total1 - total0),
                                                  1)}
    for name, side in sums.items():
        out[name] = {"requests_per_s": round(side["requests"] / side["seconds"], 1)
                     if side["seconds"] else 0.0,
                     "p99_ms": round(median(side["p99"]), 2) if side["p99"] else None,
                     "non_2xx_or_errors": side["problems"]}
    first, second = list(sides)
    out["ratio"] = round(out[second]["requests_per_s"] / out[first]["requests_per_s"], 2) \
        if out[first]["requests_per_s"] else None
    say(f"(v) {label}: " + ", ".join(
        f"{n} {out[n]['requests_per_s']:,.0f}/s (p99 {fmt(out[n]['p99_ms'], 1)} ms)"
        for n in sides) + f", ratio {out['ratio']}, other processes {out['other_percent']} % "
        "of the CPU")
    return out


def measure(work: Path, duration: float) -> dict[str, Any]:
    token = secrets.token_hex(3)
    names = {"stream": f"BENCH_{token.upper()}", "prefix": f"bench_{token}",
             "kv_prefix": f"bench{token}_"}
    say("(v) the cluster: starting it (PostgreSQL with fsync on and a synchronous standby)")
    top = Topology(work / "cluster", names, pg_settings={"fsync": "on"})
    try:
        top.start()
        version = faults.server_version(top.database_url)
        headers = f"Authorization: Bearer {top.admin_token}\r\n"
        nodes = [(host, top.api_ports[name]) for name, host in API_HOSTS.items()]

        def spec(label: str, method: str, connections: int, on: list[tuple[str, int]],
                 query: str = "") -> Callable[[float], HttpSpec]:
            return lambda seconds: HttpSpec(label, method, on[0][1], f"{token}-{label}",
                                            connections, seconds, headers=headers, nodes=on,
                                            query=query)

        compared: dict[str, Any] = {}
        for method in ("PUT", "GET"):
            for connections in CONNECTIONS:
                label = f"{method.lower()}_{connections}"
                compared[label] = alternate(f"{method} @{connections}, one node vs two", {
                    "one_node": spec(f"{label}-one", method, connections, nodes[:1]),
                    "two_nodes": spec(f"{label}-two", method, connections, nodes)}, duration,
                    _groups(top))
        top.restart_api({"SSOT_READ_DATABASE_URL": top.read_url}, names=("api2",))
        compared["get_16_min_position"] = alternate(
            "GET @16 ?min_position=1, primary vs replica", {
                "primary": spec("ryw-primary", "GET", 16, nodes[:1], "?min_position=1"),
                "replica": spec("ryw-replica", "GET", 16, nodes[1:], "?min_position=1")},
            duration, _groups(top))
        say("(v) failover times, no load")
        failover = {"kill_followers": faults.kill_leaders(top, 0.0),
                    "kill_nats_leader": faults.kill_nats_leader(top, 0.0),
                    "pg_failover": faults.failover_postgres(top, 0.0)}
    finally:
        top.close()
    measured: dict[str, Any] = {"compared": compared, "failover": failover,
                                "postgresql": version, "slots": SLOTS}
    measured["summary_md"] = summarize(measured)
    return measured


def summarize(measured: dict[str, Any]) -> list[str]:
    compared, failover = measured["compared"], measured["failover"]

    def cell(side: dict[str, Any]) -> str:
        return f"{side['requests_per_s']:,.0f} ({fmt(side['p99_ms'], 1)})"

    lines = ["", "(v) The cluster (docs/cluster.md) on this machine: `ssot serve` nodes of one "
             "HTTP worker and one writer each, one PostgreSQL primary with a synchronous "
             f"standby (fsync on); requests/s (p99 ms), each pair measured in turns "
             f"({measured['slots']} slots a side):", "",
             "| step | one node | two nodes | two / one | other processes' CPU |",
             "|---|---:|---:|---:|---:|"]
    for method in ("PUT", "GET"):
        for connections in CONNECTIONS:
            c = compared[f"{method.lower()}_{connections}"]
            lines.append(f"| {method} @{connections} | {cell(c['one_node'])} | "
                         f"{cell(c['two_nodes'])} | {fmt(c['ratio'], 2)} | "
                         f"{c['other_percent']:g} % |")
    ryw = compared["get_16_min_position"]
    takeover = failover["kill_followers"]["takeover_s"]
    nats, pg = failover["kill_nats_leader"], failover["pg_failover"]
    lines += [
        "",
        f"GET @16 with `?min_position=1` on one node: reading the primary {cell(ryw['primary'])}"
        f", reading the replica {cell(ryw['replica'])}: replica / primary {fmt(ryw['ratio'], 2)}"
        f" (other processes {ryw['other_percent']:g} % of the CPU).",
        "",
        "Failover, no load: the followers' standbys took over in "
        + ", ".join(f"{role} {s:g} s" for role, s in takeover.items())
        + f" (the broadcaster publishing again after "
        f"{failover['kill_followers']['published_s']:g} s); the NATS stream's new leader "
        f"after {nats['leader_s']:g} s, publishing again after {nats['published_s']:g} s; "
        f"PostgreSQL: standby promoted {pg['promoted_s']:g} s and first write acknowledged "
        f"{pg['first_write_s']:g} s after the primary stopped (standby rebuilt in "
        f"{pg['standby_rebuilt_s']:g} s).",
    ]
    return lines
