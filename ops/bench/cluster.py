"""Step (u) of ``make bench`` (``--only cluster``): the cluster of docs/cluster.md on this
machine, its PostgreSQL with ``fsync`` on and a synchronous standby:

- PUT (If-Match, each connection on its own entry) and GET of one entry at 16 and 64
  connections, against one API node and spread over both (connection i on node i mod 2);
- GET with ``?min_position=1`` (read-your-writes) at 16 connections over both nodes, read
  from the primary and then from the read replica (``SSOT_READ_DATABASE_URL``);
- the failover times of the faults, once each with no load: the leading followers killed
  (takeover), the NATS node leading the stream killed (new leader, publishing again), the
  PostgreSQL primary stopped (first write acknowledged after the stop).

Every process of the cluster shares the machine's cores with the load generator: on two
cores a second API node adds no CPU to spend, so two nodes cannot beat one here; the
ratio says what the second node costs or brings on this machine, not on a real cluster.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nexus_ssot.ops.cluster import faults
from nexus_ssot.ops.cluster.topology import API_HOSTS, Topology

from .http_load import HttpSpec, describe, run_http
from .measuring import fmt, say

CONNECTIONS = (16, 64)


def measure(work: Path, duration: float) -> dict[str, Any]:
    token = secrets.token_hex(3)
    names = {"stream": f"BENCH_{token.upper()}", "prefix": f"bench_{token}",
             "kv_prefix": f"bench{token}_"}
    say("(u) the cluster: starting it (PostgreSQL with fsync on and a synchronous standby)")
    top = Topology(work / "cluster", names, pg_settings={"fsync": "on"})
    try:
        top.start()
        headers = f"Authorization: Bearer {top.admin_token}\r\n"
        nodes = [(host, top.api_ports[name]) for name, host in API_HOSTS.items()]
        steps: dict[str, Any] = {}

        def step(label: str, method: str, connections: int, on: list[tuple[str, int]],
                 query: str = "") -> None:
            say(f"(u) {label}: {method} @{connections} on {len(on)} node(s), {duration:g} s")
            result = run_http(HttpSpec(label, method, on[0][1], f"{token}-{label}",
                                       connections, duration, headers=headers, nodes=on,
                                       query=query))
            steps[label] = asdict(result)
            say(f"(u) done: {describe(result)}")

        for connections in CONNECTIONS:
            for method in ("PUT", "GET"):
                for count, on in ((1, nodes[:1]), (2, nodes)):
                    step(f"{method.lower()}_{connections}_{count}_node", method, connections, on)
        step("get_16_primary", "GET", 16, nodes, "?min_position=1")
        top.read_from_replica(True)
        step("get_16_replica", "GET", 16, nodes, "?min_position=1")
        say("(u) failover times, no load")
        failover = {"kill_followers": faults.kill_leaders(top, 0.0),
                    "kill_nats_leader": faults.kill_nats_leader(top, 0.0),
                    "pg_failover": faults.failover_postgres(top, 0.0)}
    finally:
        top.close()
    measured: dict[str, Any] = {"steps": steps, "failover": failover}
    measured["summary_md"] = summarize(measured)
    return measured


def summarize(measured: dict[str, Any]) -> list[str]:
    steps, failover = measured["steps"], measured["failover"]
    lines = ["", "(u) The cluster (docs/cluster.md) on this machine: two `ssot serve` nodes "
             "(one HTTP worker and one writer each) against one PostgreSQL primary with a "
             "synchronous standby (fsync on), requests/s and p99 ms:", "",
             "| step | one node | two nodes | two / one |", "|---|---:|---:|---:|"]
    for method in ("PUT", "GET"):
        for connections in CONNECTIONS:
            one = steps[f"{method.lower()}_{connections}_1_node"]
            two = steps[f"{method.lower()}_{connections}_2_node"]
            ratio = two["requests_per_s"] / one["requests_per_s"] if one["requests_per_s"] \
                else None
            lines.append(f"| {method} @{connections} | {one['requests_per_s']:,.0f} "
                         f"(p99 {fmt(one['p99_ms'], 1)}) | {two['requests_per_s']:,.0f} "
                         f"(p99 {fmt(two['p99_ms'], 1)}) | {fmt(ratio, 2)} |")
    primary, replica = steps["get_16_primary"], steps["get_16_replica"]
    takeover = failover["kill_followers"]["takeover_s"]
    nats = failover["kill_nats_leader"]
    pg = failover["pg_failover"]
    lines += [
        "",
        f"GET @16 over both nodes with `?min_position=1`: from the primary "
        f"{primary['requests_per_s']:,.0f}/s (p99 {fmt(primary['p99_ms'], 1)} ms), from the "
        f"read replica {replica['requests_per_s']:,.0f}/s (p99 {fmt(replica['p99_ms'], 1)} "
        "ms).",
        "",
        "Failover, no load: followers' standbys took over in "
        + ", ".join(f"{role} {s:g} s" for role, s in takeover.items())
        + f" (broadcaster publishing again after {failover['kill_followers']['published_s']:g}"
        f" s); the NATS stream's new leader after {nats['leader_s']:g} s, publishing again "
        f"after {nats['published_s']:g} s; PostgreSQL: standby promoted "
        f"{pg['promoted_s']:g} s and first write acknowledged {pg['first_write_s']:g} s after "
        f"the primary stopped (standby rebuilt in {pg['standby_rebuilt_s']:g} s).",
    ]
    return lines
