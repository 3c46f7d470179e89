"""The cluster, started on loopback addresses of this machine: PostgreSQL (``pg1``
primary, ``pg2`` synchronous standby, ``replica`` asynchronous read replica), three NATS
nodes, two ``ssot serve`` nodes (each with its own writer process; no broadcaster, views
or digests inside) and the followers as processes of their own, two candidates each
(``ssot broadcast``, ``ssot project``, ``ssot digest``: leader elected by advisory lock).

Every service reaches PostgreSQL through one libpq multi-host URL with
``target_session_attrs=read-write`` (it finds the primary, whichever node that is) and
NATS through the list of the three nodes. Each process runs in a process group of its
own and names itself to PostgreSQL (``PGAPPNAME``), which is how ``leaders`` tells which
candidate of each role holds its lock.

Addresses: PostgreSQL ``127.0.0.11-13``, NATS ``127.0.0.21-23``, the API nodes
``127.0.0.31-32``; ports are free ones picked at start (two runs may share a machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from nexus_ssot.access.tokens import new_token

from ..embedded.folders import own_shared_dir, shared_dir_name
from ..embedded.pg_cluster import postmaster_in
from ..embedded.processes import EmbeddedError, command_line, end_process, read_pid
from ..process_group import Group, alive, child_processes, free_port, free_ports
from .nats import NatsNode, cluster_url, wait_cluster
from .postgres import DATABASE_NODES, REPLICA, PgNode, multi_host_url

log = logging.getLogger("nexus_ssot.cluster")

PG_HOSTS = {"pg1": "127.0.0.11", "pg2": "127.0.0.12", REPLICA: "127.0.0.13"}
NATS_HOSTS = {"n1": "127.0.0.21", "n2": "127.0.0.22", "n3": "127.0.0.23"}
API_HOSTS = {"api1": "127.0.0.31", "api2": "127.0.0.32"}
#: The follower roles and the ``ssot`` command each candidate runs.
ROLES = {"broadcaster": "broadcast", "projector": "project", "digester": "digest"}
CANDIDATES = ("a", "b")
DATABASE = "ssot"


#: The file naming the process that owns a cluster's data (``sweep``).
OWNER = "owner.pid"


def sweep(root: Path) -> list[str]:
    """Stop the servers of clusters whose owner died without stopping them (a harness
    killed with SIGKILL: PostgreSQL and NATS outlive it) and remove their data; returns
    the tokens swept."""
    swept = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        owner = read_pid(folder / OWNER)
        if owner is not None and alive(owner):
            continue
        if owner is None and time.time() - folder.stat().st_mtime < 60:
            continue  # being made: its owner writes its pid next
        for pid_file in folder.glob("*/nats.pid"):
            pid = read_pid(pid_file)
            argv = command_line(pid) if pid is not None else []
            if pid is not None and argv and Path(argv[0]).name == "nats-server":
                with contextlib.suppress(EmbeddedError):
                    end_process(pid, signal.SIGTERM, 10.0)
        for pgdata in folder.glob("*/data"):
            pid = postmaster_in(pgdata)
            if pid is not None:
                with contextlib.suppress(EmbeddedError):
                    end_process(pid, signal.SIGQUIT, 10.0)
        shutil.rmtree(folder, ignore_errors=True)
        swept.append(folder.name)
    if swept:
        log.warning("removed the leftovers of %d cluster run(s) whose harness died: %s",
                    len(swept), ", ".join(swept))
    return swept


class Topology:
    """One cluster: ``start`` it, act on it (the nemesis's verbs, ``faults``), ``close``
    it (everything it started is stopped and its data removed, whatever happened)."""

    def __init__(self, folder: Path, names: dict[str, str], *, replica: bool = True,
                 pg_settings: dict[str, str] | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.names = names
        self.token = secrets.token_hex(6)
        root = own_shared_dir(shared_dir_name("nexus-ssot-cluster"))
        sweep(root)
        self.data = root / self.token
        self.data.mkdir(mode=0o755)
        (self.data / OWNER).write_text(f"{os.getpid()}\n")
        password = secrets.token_urlsafe(24)
        settings = {"fsync": "off", **(pg_settings or {})}  # throwaway data: speed
        self.pg = {name: PgNode(name, host, free_port(host), self.data, password, settings)
                   for name, host in PG_HOSTS.items() if replica or name != REPLICA}
        nats_password = secrets.token_urlsafe(24)
        self.nats = [NatsNode(name, host, free_ports(3, host),
                              self.data, nats_password) for name, host in NATS_HOSTS.items()]
        self.api_ports = {name: free_port(host) for name, host in API_HOSTS.items()}
        self.primary, self.standby = "pg1", "pg2"
        self.database_url = multi_host_url([self.pg[n] for n in DATABASE_NODES], DATABASE)
        self.nats_url = cluster_url(self.nats)
        _, self.admin_token = new_token()
        self.services: dict[str, Group] = {}

    # -- addresses

    @property
    def api_urls(self) -> list[str]:
        return [f"http://{API_HOSTS[n]}:{p}" for n, p in self.api_ports.items()]

    @property
    def api_url(self) -> str:
        return self.api_urls[0]

    @property
    def read_url(self) -> str | None:
        """The read replica's URL (``SSOT_READ_DATABASE_URL``), if it runs."""
        node = self.pg.get(REPLICA)
        return node.url(DATABASE) if node is not None else None

    # -- starting

    def start(self, *, read_from_replica: bool = False) -> None:
        """Everything, in dependency order; returns once the API nodes answer healthy."""
        for node in self.nats:
            node.configure(self.nats)
            node.start()
        pg1 = self.pg["pg1"]
        pg1.initdb()
        pg1.start()
        with psycopg.connect(pg1.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        from nexus_ssot.ledger.migrate import migrate

        migrate(pg1.url(DATABASE))  # once, before two serve nodes start at once
        for name in [n for n in self.pg if n != "pg1"]:
            self.pg[name].base_backup(pg1)
            self.pg[name].start()
        self.pg["pg2"].wait_streaming(pg1, synchronous=False)
        pg1.set_synchronous(True)
        self.pg["pg2"].wait_streaming(pg1, synchronous=True)
        if REPLICA in self.pg:
            self.pg[REPLICA].wait_streaming(pg1, synchronous=False)
        wait_cluster(self.nats)
        self._make_services(read_from_replica)
        for name in API_HOSTS:
            self.services[name].start()
        for name in API_HOSTS:
            self.wait_healthy(name)
        for role in ROLES:
            for c in CANDIDATES:
                self.services[f"{role}-{c}"].start()

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SSOT_", "PG"))}
        env.update({
            "SSOT_BOOTSTRAP_TOKEN_SHA256": hashlib.sha256(self.admin_token.encode()).hexdigest(),
            "SSOT_RATE_LIMIT_PER_SECOND": "0",  # the clients are the load, not attackers
            "SSOT_DATABASE_URL": self.database_url, "SSOT_NATS_URL": self.nats_url,
            "SSOT_NATS_REPLICAS": "3",
            "SSOT_BROADCAST": "false", "SSOT_PROJECTIONS": "false", "SSOT_DIGESTS": "false",
            "SSOT_HTTP_WORKERS": "1",  # two nodes on two cores
            "SSOT_NATS_STREAM": self.names["stream"],
            "SSOT_NATS_SUBJECT_PREFIX": self.names["prefix"],
            "SSOT_KV_BUCKET_PREFIX": self.names["kv_prefix"], "SSOT_DIGEST_EVERY_SECONDS": "5",
        })
        return env

    def _make_services(self, read_from_replica: bool) -> None:
        cli = [sys.executable, "-m", "nexus_ssot.ops.cli"]
        base = self._environment()
        for name, host in API_HOSTS.items():
            env = {**base, "PGAPPNAME": name, "SSOT_HTTP_HOST": host,
                   "SSOT_HTTP_PORT": str(self.api_ports[name]),
                   "SSOT_DATA_DIR": str(self.folder / "data" / name)}
            if read_from_replica and self.read_url is not None:
                env["SSOT_READ_DATABASE_URL"] = self.read_url
            self.services[name] = Group(name, [*cli, "serve"], env,
                                        self.folder / f"{name}.log")
        for role, command in ROLES.items():
            for c in CANDIDATES:
                name = f"{role}-{c}"
                env = {**base, "PGAPPNAME": name,
                       "SSOT_DATA_DIR": str(self.folder / "data" / name)}
                self.services[name] = Group(name, [*cli, command], env,
                                            self.folder / f"{name}.log")

    def wait_healthy(self, name: str, timeout: float = 120.0) -> None:
        url = self.api_urls[list(API_HOSTS).index(name)]
        self.services[name].wait_healthy(url, timeout)

    def restart_api(self, changes: dict[str, str | None],
                    names: tuple[str, ...] = tuple(API_HOSTS)) -> None:
        """Restart the API nodes ``names`` with these settings changed (None: unset)."""
        for name in names:
            group = self.services[name]
            group.stop()
            for key, value in changes.items():
                if value is None:
                    group.env.pop(key, None)
                else:
                    group.env[key] = value
            group.start()
        for name in names:
            self.wait_healthy(name)

    # -- looking

    def leaders(self) -> dict[str, list[str]]:
        """For each follower role, the candidates holding one of its advisory locks
        (a projector candidate may lead some views and the other the rest)."""
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT DISTINCT a.application_name FROM pg_locks l JOIN pg_stat_activity a"
                " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted").fetchall()
        holders = {r[0] for r in rows}
        return {role: [f"{role}-{c}" for c in CANDIDATES if f"{role}-{c}" in holders]
                for role in ROLES}

    def writers_of(self, name: str) -> list[int]:
        group = self.services[name]
        return child_processes(group.proc.pid, "writer") if group.proc is not None else []

    # -- stopping

    def kill_service(self, name: str) -> None:
        """SIGKILL the service's process group and its writer (in a session of its own):
        the machine it ran on is gone."""
        writers = self.writers_of(name)
        self.services[name].kill()
        for pid in writers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in writers) and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self, keep_data: bool = False) -> None:
        """Stop everything started, services first; remove the servers' data."""
        for group in self.services.values():
            group.signal(signal.SIGCONT)  # a paused process cannot stop
        for group in self.services.values():
            with contextlib.suppress(Exception):
                group.stop(timeout=20.0)
        for node in self.nats:
            with contextlib.suppress(Exception):
                node.resume()
                node.stop()
        for pg in self.pg.values():
            with contextlib.suppress(Exception):
                pg.resume()
                pg.stop("fast", timeout=20.0)
        self._keep_logs()
        if not keep_data:
            shutil.rmtree(self.data, ignore_errors=True)

    def _keep_logs(self) -> None:
        """The servers' logs, copied into the run folder."""
        logs = self.folder / "servers"
        logs.mkdir(parents=True, exist_ok=True)
        for path in [*self.data.glob("*/postgres.log"), *self.data.glob("*/nats.log"),
                     *self.data.glob("*.log")]:
            with contextlib.suppress(OSError):
                name = path.name if path.parent == self.data else f"{path.parent.name}.log"
                shutil.copy(path, logs / name)

    def describe(self) -> dict[str, Any]:
        return {"postgres": {n: f"{p.host}:{p.port}" for n, p in self.pg.items()},
                "nats": {n.name: f"{n.host}:{n.port}" for n in self.nats},
                "api": self.api_urls, "primary": self.primary, "standby": self.standby}
