"""The faults the cluster takes, each a verb on a running ``Topology`` that causes it,
measures how the cluster came back, and leaves it whole again (the lost node restarted or
rebuilt), returning what it measured:

- ``kill_api_node``: SIGKILL one ``ssot serve`` node with its writer; restarted after
  ``down`` seconds. The clients fail over (``failover``).
- ``kill_leaders``: SIGKILL the leading candidate of each follower role (broadcaster,
  projector, digester); ``takeover_s``: until the other candidate holds every lock the
  killed one held; ``published_s``: until the broadcaster published past the log's head
  as it was at the kill.
- ``kill_nats_leader``: SIGKILL the NATS node leading the ledger's stream; ``leader_s``:
  until another node leads it; ``published_s`` as above; the node restarted after
  ``down`` and caught up.
- ``failover_postgres``: stop the primary (``immediate``: as if its machine died), promote
  the synchronous standby, point the read replica at it; ``first_write_s``: from the stop
  to the first write acknowledged through the API; then the lost node is rebuilt as the
  new standby and commits wait for it again.
- ``async_loss``: what promoting the asynchronous replica instead would have lost (the
  replica cut off from the primary, as by a network partition, writes go on, the primary
  dies): the positions the synchronous standby holds and the replica does not, every one
  of them an acknowledged write.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

import httpx
import psycopg

from .nats import stream_leader
from .topology import DATABASE, ROLES, Topology

#: How long a measurement waits before it reports what it saw as a failure.
PATIENCE = 120.0
PROBE_NAMESPACE = "cluster-probe"


def kill_api_node(topology: Topology, name: str, down: float) -> dict[str, Any]:
    topology.kill_service(name)
    time.sleep(down)
    started = time.monotonic()
    topology.services[name].start()
    topology.wait_healthy(name)
    return {"node": name, "restart_s": round(time.monotonic() - started, 3)}


def _lock_counts(topology: Topology) -> dict[str, int]:
    with psycopg.connect(topology.database_url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT a.application_name, count(*) FROM pg_locks l JOIN pg_stat_activity a"
            " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
            " GROUP BY a.application_name").fetchall()
    return {str(name): int(n) for name, n in rows}


def _head_and_published(topology: Topology) -> tuple[int, int]:
    with psycopg.connect(topology.database_url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT coalesce((SELECT max(position) FROM entry_history), 0),"
                           " coalesce((SELECT max(position) FROM broadcaster_positions), 0)"
                           ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _wait(what: str, done: Any, patience: float = PATIENCE) -> float:
    """Seconds until ``done()`` is true (polled every 50 ms); raises after ``patience``."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(psycopg.Error, OSError):
            if done():
                return round(time.monotonic() - started, 3)
        if time.monotonic() - started > patience:
            raise TimeoutError(f"{what}: not within {patience:.0f} s")
        time.sleep(0.05)


def kill_leaders(topology: Topology, down: float) -> dict[str, Any]:
    counts = _lock_counts(topology)
    killed: dict[str, tuple[str, str, int]] = {}  # role: (killed, survivor, locks of role)
    for role in ROLES:
        held = {c: counts.get(f"{role}-{c}", 0) for c in ("a", "b")}
        leader = max(held, key=lambda c: held[c])
        survivor = "b" if leader == "a" else "a"
        killed[role] = (f"{role}-{leader}", f"{role}-{survivor}", sum(held.values()))
    head, _ = _head_and_published(topology)
    started = time.monotonic()
    for name, _, _ in killed.values():
        topology.kill_service(name)
    kill_s = time.monotonic() - started
    takeover: dict[str, float] = {}
    for role, (_, survivor, locks) in killed.items():
        takeover[role] = round(kill_s + _wait(
            f"{survivor} taking over", lambda s=survivor, n=locks:
            _lock_counts(topology).get(s, 0) >= n), 3)
    published = round(kill_s + _wait("the broadcaster publishing again",
                                     lambda: _head_and_published(topology)[1] >= head), 3)
    time.sleep(down)
    for name, _, _ in killed.values():
        topology.services[name].start()  # a standby now
    return {"killed": [k for k, _, _ in killed.values()], "takeover_s": takeover,
            "published_s": published}


def kill_nats_leader(topology: Topology, down: float) -> dict[str, Any]:
    stream = topology.names["stream"]
    leader = stream_leader(topology.nats, stream)
    if leader is None:
        raise RuntimeError(f"no NATS node says it leads stream {stream}")
    head, _ = _head_and_published(topology)
    started = time.monotonic()
    leader.kill()
    new_leader = _wait("another NATS node leading the stream", lambda: (
        (n := stream_leader(topology.nats, stream)) is not None and n is not leader))
    published = _wait("the broadcaster publishing again",
                      lambda: _head_and_published(topology)[1] >= head)
    elapsed = round(time.monotonic() - started, 3)
    time.sleep(down)
    leader.start()
    leader.wait_healthy()
    return {"killed": leader.name, "leader_s": new_leader,
            "published_s": max(published, elapsed)}


def probe_write(topology: Topology, patience: float = PATIENCE) -> float:
    """Seconds until a write is acknowledged through one of the API nodes (each tried in
    turn; retried with its idempotency key until an answer)."""
    key = f"probe-{secrets.token_hex(4)}"
    headers = {"Authorization": f"Bearer {topology.admin_token}", "Idempotency-Key": key}
    started = time.monotonic()
    with httpx.Client(timeout=5.0) as http:
        while True:
            for url in topology.api_urls:
                with contextlib.suppress(httpx.HTTPError):
                    answer = http.put(f"{url}/v1/namespaces/{PROBE_NAMESPACE}/entries/{key}",
                                      json={"probe": key}, headers=headers)
                    if answer.status_code < 300:
                        return round(time.monotonic() - started, 3)
            if time.monotonic() - started > patience:
                raise TimeoutError(f"no write acknowledged within {patience:.0f} s")
            time.sleep(0.05)


def failover_postgres(topology: Topology, down: float, mode: str = "immediate"
                      ) -> dict[str, Any]:
    old, new = topology.pg[topology.primary], topology.pg[topology.standby]
    started = time.monotonic()
    old.stop(mode)
    new.promote()
    promoted_s = time.monotonic() - started
    topology.primary, topology.standby = new.name, old.name
    probe_write(topology)
    first_write_s = round(time.monotonic() - started, 3)
    replica = _repoint_replica(topology)
    time.sleep(down)
    rebuilt = time.monotonic()
    old.base_backup(new)
    old.start()
    old.wait_streaming(new, synchronous=False)
    new.set_synchronous(True)
    old.wait_streaming(new, synchronous=True)
    return {"stopped": old.name, "promoted": new.name, "mode": mode,
            "promoted_s": round(promoted_s, 3), "first_write_s": first_write_s,
            "replica": replica, "standby_rebuilt_s": round(time.monotonic() - rebuilt, 3)}


def _repoint_replica(topology: Topology) -> str:
    """The read replica streams from the new primary: a reload when it had not gone
    past the new primary's timeline switch, a fresh copy when it had."""
    replica = topology.pg.get("replica")
    if replica is None:
        return "none"
    primary = topology.pg[topology.primary]
    replica.follow(primary)
    try:
        replica.wait_streaming(primary, synchronous=False, timeout=15.0)
        return "followed"
    except RuntimeError:
        replica.base_backup(primary)
        replica.start()
        replica.wait_streaming(primary, synchronous=False)
        return "rebuilt"


def server_version(url: str) -> str:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def max_position(url: str) -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT coalesce(max(position), 0) FROM entry_history").fetchone()
    return int(row[0]) if row else 0


def async_loss(topology: Topology, lag: float) -> dict[str, Any]:
    """The replica cut off from the primary for ``lag`` seconds while the clients write
    (the primary does not wait for it: asynchronous), then the primary dies: the
    acknowledged events the synchronous standby has and the replica lacks (what a
    failover to an asynchronous replica loses). Leaves the primary stopped and the
    replica cut off: the cluster's last act."""
    replica = topology.pg["replica"]
    primary, standby = topology.pg[topology.primary], topology.pg[topology.standby]
    replica.follow(None)
    time.sleep(lag)
    primary.stop("immediate")
    time.sleep(1.0)  # both replay what they had received
    on_standby, on_replica = max_position(standby.url(DATABASE)), max_position(
        replica.url(DATABASE))
    with psycopg.connect(standby.url(DATABASE), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM entry_history WHERE position > %s",
                           (on_replica,)).fetchone()
    return {"paused_s": lag, "standby_head": on_standby, "replica_head": on_replica,
            "events_lost_by_async": int(row[0]) if row else 0}
