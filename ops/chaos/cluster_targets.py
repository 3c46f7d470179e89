"""``ssot chaos --topology cluster``: the run's servers are the cluster of ``ops/cluster``
(two API nodes, followers with standbys, PostgreSQL with a synchronous standby and a read
replica, three NATS nodes), the clients spread over the API nodes and fail over between
them, and the nemesis draws from the cluster's faults:

- ``kill_api``: SIGKILL one API node (and its writer), restarted after ``down`` seconds;
- ``kill_followers``: SIGKILL the leading broadcaster, projector and digester;
- ``kill_nats_leader``: SIGKILL the NATS node leading the ledger's stream;
- ``pg_failover``: stop the PostgreSQL primary (immediate), promote the synchronous
  standby, rebuild the lost node as the new standby.

Each fault's measurements (takeover, first write after the stop, …) go to the history
with the fault's end, and into the report (``faults.measured``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson

from nexus_ssot.ops.cluster import faults
from nexus_ssot.ops.cluster.failover import FailoverTransport
from nexus_ssot.ops.cluster.nats import stream_replicas
from nexus_ssot.ops.cluster.topology import API_HOSTS, Topology

from .nemesis import CLUSTER_KINDS, Fault


class ClusterTargets:
    """The cluster as the chaos runner's servers (the interface of ``servers.Cluster``)."""

    pause_targets: tuple[str, ...] = ()
    faultable: tuple[str, ...] = CLUSTER_KINDS

    def __init__(self, folder: Path, names: dict[str, str]) -> None:
        self.topology = Topology(folder, names)
        self.database_url = self.topology.database_url
        self.nats_url = self.topology.nats_url
        self.admin_token = self.topology.admin_token
        self.api_url = self.topology.api_url
        self._api_kills = 0

    def start_services(self) -> None:
        self.topology.start()

    def transport_for(self, client: int) -> httpx.AsyncBaseTransport:
        """Client ``client``'s way to the API nodes: it starts on node ``client`` mod 2."""
        transport: httpx.AsyncBaseTransport = FailoverTransport(
            self.topology.api_urls, client, limits=httpx.Limits(max_connections=4))
        return transport

    async def inject(self, fault: Fault) -> dict[str, Any]:
        top = self.topology
        if fault.kind == "kill_api":
            node = list(API_HOSTS)[self._api_kills % len(API_HOSTS)]  # each in turn
            self._api_kills += 1
            return await asyncio.to_thread(faults.kill_api_node, top, node, fault.down)
        if fault.kind == "kill_followers":
            return await asyncio.to_thread(faults.kill_leaders, top, fault.down)
        if fault.kind == "kill_nats_leader":
            return await asyncio.to_thread(faults.kill_nats_leader, top, fault.down)
        if fault.kind == "pg_failover":
            return await asyncio.to_thread(faults.failover_postgres, top, fault.down)
        raise ValueError(f"the cluster takes no fault {fault.kind!r}")

    def heal(self) -> None:
        """Every service and NATS node running (the faults restart what they stop); the
        cluster as it ends (where each server runs, each stream's copies) saved to
        ``cluster.json``."""
        top = self.topology
        for node in top.nats:
            if not node.alive:
                node.start()
                node.wait_healthy()
        for name, group in top.services.items():
            if not group.alive:
                group.start()
                if name in API_HOSTS:
                    top.wait_healthy(name)
        state = {**top.describe(), "streams": stream_replicas(top.nats)}
        (top.folder / "cluster.json").write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))

    def close(self, keep_data: bool) -> None:
        self.topology.close(keep_data)
