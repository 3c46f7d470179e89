"""The servers of an ``ssot chaos`` run, and the nemesis's targets: its own PostgreSQL and
NATS (or the ones the environment gives, which it never stops or pauses), ``ssot serve``
(API, writer, views, digests) and ``ssot broadcast``, each in a process group of its own;
killed, stopped, paused, resumed and started again on the nemesis's word.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus_ssot.access.tokens import new_token

from ..process_group import Group, alive, child_processes, free_ports
from .nemesis import KINDS, Fault, inject

if TYPE_CHECKING:  # imported when a run starts: `ssot` starts fast for other commands
    from nexus_ssot.ops.embedded import EmbeddedNats, EmbeddedPostgres

log = logging.getLogger("nexus_ssot.chaos")


class Cluster:
    """PostgreSQL, NATS, ``ssot serve`` and ``ssot broadcast`` of one run; the nemesis's
    targets. Servers given by the environment are used but never stopped or paused."""

    def __init__(self, folder: Path, names: dict[str, str], database_url: str | None,
                 nats_url: str | None) -> None:
        from nexus_ssot.ops.embedded import EmbeddedNats, EmbeddedPostgres

        from ..serve import ensure_database

        self.folder = folder
        self.names = names
        self.pg: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self.given_database = database_url
        # chosen together, so that no two are the same port
        self.http_port, pg_port, nats_port = free_ports(3)
        try:
            if database_url is None:
                self.pg = EmbeddedPostgres(folder / "data" / "postgres", port=pg_port,
                                           settings={"fsync": "off"})
                self.database_url = ensure_database(self.pg.start(), "ssot")
            else:
                self.database_url = ensure_database(database_url, names["database"])
            if nats_url is None:
                self.nats = EmbeddedNats(folder / "data" / "nats", port=nats_port)
                self.nats_url = self.nats.start()
            else:
                self.nats_url = nats_url
        except BaseException:  # what did start is stopped and removed
            if self.nats is not None:
                self.nats.stop()
            if self.pg is not None:
                self.pg.discard()
            elif database_url is not None:
                with contextlib.suppress(Exception):  # unreachable: nothing was made
                    _drop_database(database_url, names["database"])
            raise
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSOT_")}
        #: The run's administrator (its hash is the servers' bootstrap token).
        _, self.admin_token = new_token()
        env.update({
            "SSOT_BOOTSTRAP_TOKEN_SHA256": hashlib.sha256(self.admin_token.encode()).hexdigest(),
            "SSOT_RATE_LIMIT_PER_SECOND": "0",  # the clients are the load, not attackers
            "SSOT_DATABASE_URL": self.database_url, "SSOT_NATS_URL": self.nats_url,
            "SSOT_DATA_DIR": str(folder / "data"), "SSOT_HTTP_PORT": str(self.http_port),
            "SSOT_BROADCAST": "false", "SSOT_NATS_STREAM": names["stream"],
            "SSOT_NATS_SUBJECT_PREFIX": names["prefix"],
            "SSOT_KV_BUCKET_PREFIX": names["kv_prefix"], "SSOT_DIGEST_EVERY_SECONDS": "5",
        })
        cli = [sys.executable, "-m", "nexus_ssot.ops.cli"]
        self.api = Group("api", [*cli, "serve"], env, folder / "api.log")
        self.broadcaster = Group("broadcaster", [*cli, "broadcast"], env,
                                 folder / "broadcaster.log")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def faultable(self) -> tuple[str, ...]:
        """The fault kinds this cluster can take (none on servers it did not start)."""
        skip = set()
        if self.pg is None:
            skip |= {"pg_fast", "pg_immediate"}
        if self.nats is None:
            skip |= {"restart_nats", "kill_nats"}
        return tuple(k for k in KINDS if k not in skip)

    @property
    def pause_targets(self) -> tuple[str, ...]:
        return tuple(t for t in ("api", "writer", "broadcaster", "nats", "postgres")
                     if not (t == "postgres" and self.pg is None)
                     and not (t == "nats" and self.nats is None))

    def start_services(self) -> None:
        self.api.start()
        self.wait_healthy()
        self.broadcaster.start()

    def wait_healthy(self, timeout: float = 120.0) -> None:
        self.api.wait_healthy(self.api_url, timeout)

    # -- the nemesis's verbs

    def transport_for(self, client: int) -> None:
        """One API node: the clients' own transport."""
        return None

    async def inject(self, fault: Fault) -> dict[str, Any]:
        """Cause ``fault`` and heal it (``nemesis.inject``)."""
        return await inject(fault, self)

    def _postmaster(self) -> int | None:
        assert self.pg is not None
        try:
            return int((self.pg.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill(self, target: str) -> dict[str, Any]:
        """SIGKILL the target's process group; for the API, also say how long the writer
        process it had started (in a session of its own) outlived it."""
        if target == "writer":
            writers = child_processes(self.api.proc.pid, "writer") if self.api.proc else []
            for pid in writers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return {"killed": writers}
        group = {"api": self.api, "broadcaster": self.broadcaster}[target]
        writers = child_processes(group.proc.pid, "writer") if group.proc and target == "api" \
            else []
        group.kill()
        started = time.monotonic()
        while any(alive(pid) for pid in writers) and time.monotonic() - started < 30:
            time.sleep(0.02)
        if not writers:
            return {}
        return {"writer_outlived_s": round(time.monotonic() - started, 3),
                "writer_still_alive": any(alive(pid) for pid in writers)}

    def start(self, target: str) -> None:
        if target == "writer":  # ssot serve restarts it: wait until it serves again
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not (
                    self.api.proc and child_processes(self.api.proc.pid, "writer")):
                time.sleep(0.05)
            self.wait_healthy()
        elif target == "api":
            self.api.start()
            self.wait_healthy()
        elif target == "broadcaster":
            self.broadcaster.start()
        elif target == "nats" and self.nats is not None:
            self.nats.start()
        elif target == "postgres" and self.pg is not None:
            self.pg.start()

    def stop(self, target: str, mode: str) -> None:
        if target == "nats" and self.nats is not None:
            if mode == "kill" and self.nats.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.nats.pid, signal.SIGKILL)
            self.nats.stop()
        elif target == "postgres" and self.pg is not None:
            pid = self._postmaster()
            if pid is not None:  # what pg_ctl stop -m fast / -m immediate send
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and alive(pid):
                    time.sleep(0.02)
            self.pg.stop()  # forgets the server (it is gone)

    def _group_of(self, target: str) -> int | None:
        if target == "api" and self.api.proc is not None:
            return self.api.proc.pid
        if target == "writer" and self.api.proc is not None:  # a session leader
            return next(iter(child_processes(self.api.proc.pid, "writer")), None)
        if target == "broadcaster" and self.broadcaster.proc is not None:
            return self.broadcaster.proc.pid
        if target == "nats" and self.nats is not None:
            return int(self.nats.pid) if self.nats.pid is not None else None
        if target == "postgres" and self.pg is not None:
            return self._postmaster()  # pg_ctl makes it a session (and group) leader
        return None

    def pause(self, target: str) -> None:
        group = self._group_of(target)
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGSTOP)

    def resume(self, target: str) -> None:
        group = self._group_of(target)
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGCONT)

    def heal(self) -> None:
        """Everything running and nothing paused (after the last fault)."""
        for target in self.pause_targets:
            self.resume(target)
        if self.pg is not None and self._postmaster() is None:
            self.pg.start()
        if self.nats is not None and self.nats.pid is None:
            self.nats.start()
        if not self.api.alive:
            self.api.start()
        self.wait_healthy()
        self.broadcaster.start()

    def close(self, keep_data: bool) -> None:
        """Stop everything started, in dependency order; drop what was made on given
        servers."""
        for target in self.pause_targets:
            self.resume(target)
        self.api.stop()
        self.broadcaster.stop()
        if self.nats is not None:
            self.nats.stop()
        else:
            with contextlib.suppress(Exception):
                asyncio.run(_delete_streams(self.nats_url, self.names))
        if self.pg is not None:
            if keep_data:
                self.pg.stop()
            else:
                self.pg.discard()
        elif self.given_database is not None:
            _drop_database(self.given_database, self.names["database"])
        if not keep_data:
            shutil.rmtree(self.folder / "data", ignore_errors=True)


async def _delete_streams(nats_url: str, names: dict[str, str]) -> None:
    """The run's streams and KV buckets on a NATS server it did not start."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for stream in await js.streams_info():
            name = stream.config.name or ""
            if name in (names["stream"], f"{names['stream']}_DIGESTS") or \
                    name.startswith(f"KV_{names['kv_prefix']}"):
                await js.delete_stream(name)
    finally:
        await nc.close()


def _drop_database(server_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
