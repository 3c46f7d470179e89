"""``ssot chaos``: the correctness harness. It starts its own PostgreSQL, NATS, ``ssot
serve`` (API, writer, views, digests) and ``ssot broadcast``, runs concurrent clients and
subscribers (ops/chaos_clients.py) while a nemesis injects faults on a seeded schedule
(ops/chaos_nemesis.py), then proves from the recorded history, the log, the views and
what every subscriber received that nothing was lost, duplicated or made up
(ops/chaos_check.py).

A run leaves a folder: ``config.json`` (seed, schedule, names), ``history.jsonl``,
``subscribers/*.jsonl``, ``log.jsonl`` (the log as committed), ``server.json`` (``ssot
check``, ``ssot verify`` and ``ssot reconcile`` at the end), ``report.json`` and the
processes' logs; ``ssot chaos check DIR`` checks it again.

Exit codes: 0 no anomaly, 1 anomalies (listed by kind with examples), 2 the harness
itself failed (a server would not start, …).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
import orjson

if TYPE_CHECKING:  # imported when a run starts: `ssot` starts fast for other commands
    from nexus_ssot.ops.embedded import EmbeddedNats, EmbeddedPostgres

EXIT_ANOMALY, EXIT_HARNESS = 1, 2
log = logging.getLogger("nexus_ssot.chaos")


class Group:
    """A process the harness starts in a process group of its own (so SIGKILL, SIGSTOP
    and SIGCONT reach every process it forks)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        if self.alive:
            return
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self, timeout: float = 40.0) -> None:
        """SIGCONT (a paused group cannot stop), SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop in %.0f s: killing it", self.name, timeout)
        self.signal(signal.SIGKILL)  # whatever of the group is left
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()


class Cluster:
    """PostgreSQL, NATS, ``ssot serve`` and ``ssot broadcast`` of one run; the nemesis's
    targets. Servers given by the environment are used but never stopped or paused."""

    def __init__(self, folder: Path, names: dict[str, str], database_url: str | None,
                 nats_url: str | None) -> None:
        from nexus_ssot.ops.embedded import EmbeddedNats, EmbeddedPostgres

        from .serve import ensure_database

        self.folder = folder
        self.names = names
        self.pg: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self.given_database = database_url
        self.http_port = _free_port()
        try:
            if database_url is None:
                self.pg = EmbeddedPostgres(folder / "data" / "postgres", port=_free_port(),
                                           settings={"fsync": "off"})
                self.database_url = ensure_database(self.pg.start(), "ssot")
            else:
                self.database_url = ensure_database(database_url, names["database"])
            if nats_url is None:
                self.nats = EmbeddedNats(folder / "data" / "nats", port=_free_port())
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
        env.update({
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
        from .chaos_nemesis import KINDS

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
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.api.alive:
                raise RuntimeError(f"ssot serve exited; see {self.api.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/v1/health", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"ssot serve was not healthy in {timeout:.0f} s")

    # -- the nemesis's verbs

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
            writers = _children(self.api.proc.pid, "writer") if self.api.proc else []
            for pid in writers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return {"killed": writers}
        group = {"api": self.api, "broadcaster": self.broadcaster}[target]
        writers = _children(group.proc.pid, "writer") if group.proc and target == "api" \
            else []
        group.kill()
        started = time.monotonic()
        while any(_alive(pid) for pid in writers) and time.monotonic() - started < 30:
            time.sleep(0.02)
        if not writers:
            return {}
        return {"writer_outlived_s": round(time.monotonic() - started, 3),
                "writer_still_alive": any(_alive(pid) for pid in writers)}

    def start(self, target: str) -> None:
        if target == "writer":  # ssot serve restarts it: wait until it serves again
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not (
                    self.api.proc and _children(self.api.proc.pid, "writer")):
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
                while time.monotonic() < deadline and _alive(pid):
                    time.sleep(0.02)
            self.pg.stop()  # forgets the server (it is gone)

    def _group_of(self, target: str) -> int | None:
        if target == "api" and self.api.proc is not None:
            return self.api.proc.pid
        if target == "writer" and self.api.proc is not None:  # a session leader
            return next(iter(_children(self.api.proc.pid, "writer")), None)
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


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _children(parent: int, word: str) -> list[int]:
    """Processes whose parent is ``parent`` and whose command line holds ``word``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and word.encode() in argv:
            found.append(int(entry.name))
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


# --- a run ---------------------------------------------------------------------------


async def _configure_namespaces(api_url: str) -> None:
    import httpx

    from .chaos_clients import STRICT_NS

    async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:
        response = await http.put(f"/v1/namespaces/{STRICT_NS}",
                                  json={"conflict_policy": "strict"},
                                  headers={"Idempotency-Key": "chaos-setup"})
        response.raise_for_status()


async def _exercise(cluster: Cluster, folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Clients, subscribers and the nemesis for the run's duration; then heal, and wait
    until the broadcaster and every subscriber reached the log's head."""
    from .chaos_clients import Client, History, keys_of, subscribers
    from .chaos_nemesis import Fault, inject

    await _configure_namespaces(cluster.api_url)
    started = time.monotonic()
    history = History(folder / "history.jsonl", started)
    until = started + config["duration"]
    outcome: dict[str, Any] = {}
    try:
        async with subscribers(folder / "subscribers", started, cluster.nats_url,
                               cluster.api_url, config["stream"], config["prefix"]) as received:
            keys = keys_of(config["keys"])
            clients = [Client(i, config["seed"], cluster.api_url, history, config["run_id"],
                              keys) for i in range(config["clients"])]
            tasks = [asyncio.create_task(c.run(until)) for c in clients]

            async def nemesis() -> None:
                for spec in config["schedule"]:
                    fault = Fault(**spec)
                    await asyncio.sleep(max(0.0, started + fault.at - time.monotonic()))
                    history.record("fault", phase="start", **fault.as_dict())
                    log.info("fault: %s %s for %.1fs", fault.kind, fault.target, fault.down)
                    try:
                        detail = await inject(fault, cluster)
                        history.record("fault", phase="end", kind=fault.kind,
                                       target=fault.target, detail=detail)
                    except Exception as e:
                        history.record("fault", phase="end", kind=fault.kind,
                                       target=fault.target, error=f"{type(e).__name__}: {e}")
                        log.error("fault %s failed: %s", fault.kind, e)

            nemesis_task = asyncio.create_task(nemesis())
            await asyncio.gather(*tasks)
            await nemesis_task
            history.record("clients_done", acknowledged=sum(c.acknowledged for c in clients))
            await asyncio.to_thread(cluster.heal)
            history.record("healed")
            outcome["broadcaster_caught_up"] = await _caught_up(
                cluster.database_url, cluster.api_url, received, timeout=180.0)
            history.record("caught_up", **outcome["broadcaster_caught_up"])
    finally:
        history.close()
    return outcome


async def _caught_up(database_url: str, api_url: str, received: dict[str, Any],
                     timeout: float) -> dict[str, Any]:
    """Wait (bounded) until the broadcaster's position, every asynchronous view and every
    subscriber reached the log's head (for its namespace); say who did."""
    import httpx
    import psycopg

    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT coalesce(max(position), 0), coalesce((SELECT max(position) FROM"
                " broadcaster_positions), 0) FROM entry_history")
            row = await cur.fetchone()
            assert row is not None
            head, published = int(row[0]), int(row[1])
            cur = await conn.execute("SELECT namespace, max(position) FROM entry_history"
                                     " GROUP BY namespace")
            heads = {f"nats-{ns}": int(p) for ns, p in await cur.fetchall()}
            heads["sse"] = head
            behind = {name: {"received": r.last, "head": heads.get(name, 0)}
                      for name, r in received.items() if r.last < heads.get(name, 0)}
            try:
                async with httpx.AsyncClient(timeout=5.0) as http:
                    views = (await http.get(f"{api_url}/v1/health")).json()["views"]
                views_behind = {name: v["lag_events"] for name, v in views.items()
                                if v["lag_events"]}
            except (httpx.HTTPError, ValueError, KeyError) as e:
                views_behind = {"health": str(e)}
            state = {"head": head, "broadcaster": published, "behind": behind,
                     "views_behind": views_behind,
                     "ok": published >= head and not behind and not views_behind}
            if state["ok"] or time.monotonic() > deadline:
                return state
            await asyncio.sleep(0.25)


def _dump_log(database_url: str, path: Path) -> int:
    """The log as committed (the history copy, which ``ssot verify`` proves equal to the
    events' own rows), one event a line in position order."""
    import psycopg

    count = 0
    with psycopg.connect(database_url) as conn, path.open("w", encoding="utf-8") as out, \
            conn.cursor(name="chaos_log") as cur:
        cur.execute("SELECT position, namespace, key, version, event_type, event_id::text,"
                    " idempotency_key, document::text, resolution::text, recorded_at,"
                    " extract(epoch FROM recorded_at)::float8 FROM entry_history"
                    " ORDER BY position")
        for row in cur:
            out.write(orjson.dumps({
                "p": row[0], "ns": row[1], "key": row[2], "v": row[3], "type": row[4],
                "id": row[5], "idem": row[6],
                "doc": orjson.loads(row[7]) if row[7] is not None else None,
                "resolution": orjson.loads(row[8]) if row[8] is not None else None,
                "at": row[9].isoformat(), "epoch": row[10]}).decode() + "\n")
            count += 1
    return count


def _server_checks(cluster: Cluster, config: dict[str, Any]) -> dict[str, Any]:
    """``ssot check``, ``ssot verify`` and ``ssot reconcile`` of the run's database and
    stream, through their modules."""
    from nexus_ssot.integrity.verify import Options, verify
    from nexus_ssot.ledger.settings import Settings
    from nexus_ssot.projections.consistency import check

    from .reconcile import reconcile

    settings = Settings(database_url=cluster.database_url, nats_url=cluster.nats_url,
                        nats_stream=config["stream"], nats_subject_prefix=config["prefix"],
                        kv_bucket_prefix=config["kv_prefix"])
    # At rest (clients stopped, views caught up): also the KV mirror's buckets.
    views = asyncio.run(check(cluster.database_url, settings=settings, external=True))
    verified = verify(cluster.database_url, Options())
    stream = asyncio.run(reconcile(cluster.database_url, cluster.nats_url,
                                   stream=config["stream"], prefix=config["prefix"]))
    return {
        "views": {"consistent": views.consistent, "report": views.as_dict()},
        "verify": {"ok": verified.ok, "report": verified.as_dict(20)},
        "stream": {"consistent": stream.consistent, "log_count": stream.log_count,
                   "stream_count": stream.stream_count, "missing": stream.missing[:50],
                   "duplicated": stream.duplicated[:50], "foreign": stream.foreign[:50]},
    }


def run(folder: Path, seed: int, duration: float, clients: int, keys: int, faults: bool,
        keep_data: bool) -> int:
    """One run into ``folder``; returns the exit code."""
    from nexus_ssot.ledger.settings import Settings

    from .chaos_check import check_run, summary
    from .chaos_nemesis import schedule

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("nats").setLevel(logging.CRITICAL)  # the subscribers' reconnects
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    names = {"stream": f"CHAOS_{token.upper()}", "prefix": f"chaos_{token}",
             "kv_prefix": f"chaos{token}_", "database": f"ssot_chaos_{token}"}
    given = Settings()
    cluster: Cluster | None = None
    try:
        cluster = Cluster(folder, names, given.database_url, given.nats_url)
        kinds = cluster.faultable if faults else ()
        plan = [f.as_dict() for f in schedule(seed, duration, kinds)]
        for fault in plan:  # a pause of a server the run did not start hits another
            if fault["kind"] == "pause" and fault["target"] not in cluster.pause_targets:
                fault["target"] = "api"
        skipped = sorted({"pg_fast", "pg_immediate", "restart_nats", "kill_nats"} - set(kinds)) \
            if faults else []
        config = {"seed": seed, "duration": duration, "clients": clients, "keys": keys,
                  "run_id": f"chaos-{token}", "schedule": plan, "skipped_faults": skipped,
                  "api_url": cluster.api_url, **names,
                  "embedded": {"postgres": cluster.pg is not None,
                               "nats": cluster.nats is not None}}
        (folder / "config.json").write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
        click.echo(f"chaos: seed {seed}, {duration:g} s, {clients} clients, {len(plan)} faults"
                   f"{' (skipped: ' + ', '.join(skipped) + ')' if skipped else ''}; "
                   f"run folder {folder}", err=True)
        cluster.start_services()
        outcome = asyncio.run(_exercise(cluster, folder, config))
        events = _dump_log(cluster.database_url, folder / "log.jsonl")
        server = {**_server_checks(cluster, config), **outcome, "events": events}
        (folder / "server.json").write_bytes(orjson.dumps(server, option=orjson.OPT_INDENT_2))
    except KeyboardInterrupt:
        click.echo("chaos: interrupted; stopping what was started", err=True)
        return EXIT_HARNESS
    except Exception as e:
        log.exception("the harness failed")
        click.echo(f"chaos: the harness failed: {type(e).__name__}: {e}", err=True)
        return EXIT_HARNESS
    finally:
        if cluster is not None:
            cluster.close(keep_data)
    report = check_run(folder)
    (folder / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    click.echo(summary(report))
    return 0 if report["ok"] else EXIT_ANOMALY


# --- the command ---------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--duration", type=click.FloatRange(5, 7 * 86_400), default=60.0,
              show_default=True, help="Seconds the clients run (faults included).")
@click.option("--clients", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Concurrent HTTP clients.")
@click.option("--seed", type=int, help="Seed of the clients' mix and the fault schedule "
              "(default: random, printed).")
@click.option("--keys", type=click.IntRange(1, 10_000), default=24, show_default=True,
              help="Keys per namespace (fewer: more conflicts).")
@click.option("--no-faults", is_flag=True, help="Run without the nemesis.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (default .ssot/chaos/<time>-<seed>).")
@click.option("--keep-data", is_flag=True, help="Keep the embedded servers' data.")
@click.pass_context
def chaos(ctx: click.Context, duration: float, clients: int, seed: int | None, keys: int,
          no_faults: bool, folder: Path | None, keep_data: bool) -> None:
    """Run the correctness harness: own PostgreSQL, NATS, API and broadcaster; concurrent
    clients and subscribers; a seeded schedule of faults (SIGKILL and restart of the API,
    the writer and the broadcaster, NATS stopped or killed, PostgreSQL fast and immediate
    restarts, pauses, slow clients); then prove that nothing acknowledged was lost or
    duplicated, nothing rejected landed, no update was lost, every read saw a real state
    and every subscriber saw every event once, in order.

    Exit code 0 no anomaly, 1 anomalies, 2 the harness failed. 'ssot chaos check DIR'
    checks a saved run again."""
    if ctx.invoked_subcommand is not None:
        return
    if seed is None:
        seed = secrets.randbelow(1_000_000)
    folder = folder or Path(".ssot") / "chaos" / f"{time.strftime('%Y%m%dT%H%M%S')}-{seed}"
    click.echo(f"chaos: seed {seed} (reproduce with --seed {seed})", err=True)
    signal.signal(signal.SIGTERM, _interrupted)  # stop what was started, as on Ctrl-C
    sys.exit(run(folder, seed, duration, clients, keys, not no_faults, keep_data))


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@chaos.command("check")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_command(folder: Path, as_json: bool) -> None:
    """Check a saved run folder again (history, log, subscribers, server checks)."""
    from .chaos_check import check_run, summary

    try:
        report = check_run(folder)
    except (OSError, ValueError, KeyError) as e:
        click.echo(f"chaos check: {folder} is not a complete run folder: {e}", err=True)
        sys.exit(EXIT_HARNESS)
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(summary(report))
    sys.exit(0 if report["ok"] else EXIT_ANOMALY)
