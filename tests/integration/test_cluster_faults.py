"""The cluster's long runs (make test-cluster; skipped without pytest --cluster): each
fault of docs/cluster.md in a chaos run of its own under load, checked by the chaos
checker and held to its documented time; every fault in one run; what asynchronous
replication would lose; reads from the read replica that still see their own writes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexus_ssot.ops.cluster import faults
from nexus_ssot.ops.cluster.topology import DATABASE, Topology
from tests.integration.test_cluster import TAKEOVER_TARGET_S, chaos_on_the_cluster, measured

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

#: The seed's recovery target: the first write acknowledged after the primary is lost.
FAILOVER_TARGET_S = 60.0


@pytest.mark.parametrize("kind", ["kill_api", "kill_followers", "kill_nats_leader",
                                  "pg_failover"])
def test_each_fault_under_load_loses_nothing(tmp_path: Path, kind: str) -> None:
    report = chaos_on_the_cluster(tmp_path / "run", 30, [kind], clients=8)
    found = measured(report, kind)
    if kind == "kill_followers":
        assert all(max(f["takeover_s"].values()) < TAKEOVER_TARGET_S for f in found), found
    if kind == "pg_failover":
        assert all(f["first_write_s"] < FAILOVER_TARGET_S for f in found), found
    if kind == "kill_nats_leader":
        assert all(f["killed"] for f in found)


def test_every_fault_in_one_run_loses_nothing(tmp_path: Path) -> None:
    report = chaos_on_the_cluster(tmp_path / "run", 60, [], clients=12)
    assert set(report["faults"]["by_kind"]) == {"kill_api", "kill_followers",
                                                "kill_nats_leader", "pg_failover"}


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    top = Topology(tmp_path, {"stream": "CLUSTER_T", "prefix": "cluster_t",
                              "kv_prefix": "clustert_"})
    try:
        top.start(read_from_replica=True)
        yield top
    finally:
        top.close()


class Writer(threading.Thread):
    """Writes one entry after another through both API nodes until stopped; keeps the
    position of every acknowledged write."""

    def __init__(self, top: Topology) -> None:
        super().__init__(daemon=True)
        self.top = top
        self.acknowledged: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.top.admin_token}"}
        with httpx.Client(timeout=5.0, headers=headers) as http:
            n = 0
            while not self.stopping.is_set():
                n += 1
                url = self.top.api_urls[n % 2]
                try:
                    answer = http.put(f"{url}/v1/namespaces/load/entries/k{n % 50}",
                                      json={"n": n}, headers={"Idempotency-Key": f"w{n}"})
                except httpx.HTTPError:
                    continue
                if answer.status_code < 300:
                    self.acknowledged.append(answer.json()["position"])


def test_asynchronous_replication_loses_acknowledged_writes_that_the_synchronous_standby_kept(
        topology: Topology) -> None:
    writer = Writer(topology)
    writer.start()
    try:
        time.sleep(1.0)
        loss = faults.async_loss(topology, lag=2.0)
    finally:
        writer.stopping.set()
        writer.join(30)
    standby_head = loss["standby_head"]
    # every acknowledged write is on the synchronous standby...
    assert writer.acknowledged and max(writer.acknowledged) <= standby_head
    # ...and those made while the replica lagged are not on the asynchronous one
    lost = [p for p in writer.acknowledged if p > loss["replica_head"]]
    assert loss["events_lost_by_async"] > 0 and len(lost) > 0, loss


def test_a_client_reads_its_own_write_from_the_replica_or_else_from_the_primary(
        topology: Topology) -> None:
    headers = {"Authorization": f"Bearer {topology.admin_token}"}
    api = topology.api_urls[0]
    replica = topology.pg["replica"]
    with httpx.Client(base_url=api, headers=headers, timeout=10.0) as http:
        written = http.put("/v1/namespaces/ryw/entries/a", json={"v": 1}).json()
        read = http.get("/v1/namespaces/ryw/entries/a",
                        params={"min_position": written["position"]})
        assert read.status_code == 200 and read.json()["document"] == {"v": 1}
        # a read at a position: the replica once it holds it (else the primary), which
        # refuses one beyond its head
        at = http.get("/v1/namespaces/ryw/entries/a", params={"position": written["position"]})
        assert at.status_code == 200 and at.json()["document"] == {"v": 1}
        at = http.get("/v1/namespaces/ryw/entries/a",
                      params={"position": written["position"] + 1000})
        assert (at.status_code, at.json()["code"]) == (400, "position_beyond_head")
        replica.pause()  # the replica falls behind (and stops answering)
        try:
            written = http.put("/v1/namespaces/ryw/entries/a", json={"v": 2}).json()
            started = time.monotonic()
            read = http.get("/v1/namespaces/ryw/entries/a",
                            params={"min_position": written["position"]})
            waited = time.monotonic() - started
            assert read.status_code == 200 and read.json()["document"] == {"v": 2}
            assert waited < 5.0
        finally:
            replica.resume()
        beyond = http.get("/v1/namespaces/ryw/entries/a",
                          params={"min_position": written["position"] + 1000})
        assert beyond.status_code == 400
        assert beyond.json()["code"] == "position_beyond_head"
    # the replica serves reads again once it has caught up
    deadline = time.monotonic() + 30
    while faults.max_position(replica.url(DATABASE)) < written["position"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_reads_spread_over_the_replica_carry_on_when_it_is_down(topology: Topology) -> None:
    headers = {"Authorization": f"Bearer {topology.admin_token}"}
    with httpx.Client(base_url=topology.api_urls[1], headers=headers, timeout=10.0) as http:
        written = http.put("/v1/namespaces/ryw/entries/b", json={"v": 1}).json()
        topology.pg["replica"].stop("immediate")
        answers: list[Any] = [http.get("/v1/namespaces/ryw/entries/b",
                                       params={"min_position": written["position"]})
                              for _ in range(5)]
    assert all(a.status_code == 200 and a.json()["document"] == {"v": 1} for a in answers)
