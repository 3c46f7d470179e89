"""The whole run of ``make bench`` (``python -m nexus_ssot.ops.bench``): the steps in
order against one PostgreSQL server and a database made for the run, the server under test
started once for the steps that need it, the results written at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import multiprocessing
import os
import platform
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ops.credentials import read_admin_token
from nexus_ssot.ops.embedded import EmbeddedNats, EmbeddedPostgres

from . import (
    auth,
    backup,
    baseline,
    broadcast,
    budget,
    chain,
    cluster,
    etcd,
    history,
    http_load,
    library,
    metrics_scrape,
    pgbench,
    projections,
    schemas,
    slowloris,
    turns,
    web_console,
)
from .database import Monitor, conninfo, describe_server, postmaster_of, with_database
from .http_load import RSS_WRITES, RSS_WRITES_QUICK
from .measuring import HOST, CpuMeter, bearer, host_speed, say, worker_pid
from .report import evaluate, markdown, noisy_steps, write_results
from .server import Server

QUICK_DURATION = 2.0
IDLE_SECONDS, IDLE_SECONDS_QUICK = 10.0, 5.0  # (r): the idle server's CPU over this long
#: The server under test: auth on, as in production (the load generator sends the
#: administrator's token); no default rate limit, as the bench is one user sending
#: thousands of requests a second.
SERVER_ENV = {"SSOT_AUTH": "on", "SSOT_RATE_LIMIT_PER_SECOND": "0"}


def git_commit(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"),
            "dirty": None if status is None else bool(status)}


def machine_facts() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_mb = None
    with contextlib.suppress(OSError, AttributeError):
        memory_mb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)

    def version(package: str) -> str | None:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(package)
        return None

    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_mb": memory_mb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "eventsourcing": version("eventsourcing"),
        "psycopg": version("psycopg"),
        "uvicorn": version("uvicorn"),
        "git": git_commit(Path(__file__).resolve().parents[2]),
    }


class Bench:
    def __init__(self, duration: float, rss_writes: int, quick: bool, workers: int = 1,
                 only: str | None = None) -> None:
        self.workers = workers
        self.duration = duration
        self.rss_writes = rss_writes
        self.quick = quick
        self.only = only
        self.report: dict[str, Any] = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": quick,
            "only": only,
            "duration_s": duration,
            "server_workers": workers,
            "machine": machine_facts(),
        }
        self.report["machine"]["speed"] = host_speed()
        self.monitor: Monitor | None = None
        self.database = f"ssot_bench_{secrets.token_hex(4)}"
        self.token = secrets.token_hex(3)

    def run(self) -> dict[str, Any]:
        settings = Settings()
        with contextlib.ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ssot-bench-")))
            if self.only == "cluster":  # servers of its own: nothing else is needed
                self.report["cluster"] = cluster.measure(work, self.duration)
                self.report["machine"]["postgresql"] = self.report["cluster"]["postgresql"]
                self.report["database"] = {"mode": "the cluster's own"}
                self.report["server_workers"] = 1
                self.report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                return self.report
            embedded_bin: Path | None = None
            if settings.database_url:
                server_url = settings.database_url
                mode = "external (SSOT_DATABASE_URL)"
            else:
                say("starting an embedded PostgreSQL for the run")
                pg = EmbeddedPostgres(work / "postgres")
                server_url = pg.start()
                stack.callback(getattr(pg, "discard", pg.stop))
                embedded_bin = pg.bin_dir()
                mode = "embedded"
            parts = conninfo(server_url)
            self.report["database"] = {"mode": mode, "server": describe_server(parts),
                                       "bench_database": self.database}
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
            stack.callback(self.drop_database, server_url)
            database_url = with_database(server_url, self.database)
            self.monitor = Monitor(stack.enter_context(psycopg.connect(database_url,
                                                                       autocommit=True)))
            version = self.monitor.query("SHOW server_version")
            self.report["machine"]["postgresql"] = version[0] if version else None
            meter = CpuMeter(postmaster_of(self.monitor.conn, parts))
            pool = stack.enter_context(ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")))
            meter.load_pid = pool.submit(worker_pid).result(timeout=60)
            stack.push(stop_load_generator(meter.load_pid))
            if self.only is None:
                self.report["pgbench"] = pgbench.measure(embedded_bin, database_url,
                                                         self.duration, work, meter)
                self.report["library"] = library.measure(self.monitor, database_url,
                                                         self.duration, meter, pool)
            if settings.nats_url:
                nats_url = settings.nats_url
            else:
                say("starting an embedded NATS for the run")
                nats_server = EmbeddedNats(work / "nats")
                nats_url = nats_server.start()
                stack.callback(nats_server.stop)
            if self.only not in ("auth", "baselines"):
                self.with_server(database_url, nats_url, work, meter, pool)
            if self.only in (None, "baselines"):
                self.baselines(work, meter, pool)
            if self.only in (None, "auth"):
                say("(p) identity and access: in process, then auth off beside auth on")
                self.report["auth"] = auth.run_all(
                    server_url, self.database, nats_url, work, self.workers, meter, pool,
                    quick=self.quick)
                for line in self.report["auth"]["summary_md"][1:]:
                    say(line)
            self.monitor.close()
            if self.only is None:
                self.report["cluster"] = cluster.measure(work, self.duration)
        self.report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.report["machine"]["speed_at_end"] = host_speed()
        return self.report

    def with_server(self, database_url: str, nats_url: str, work: Path, meter: CpuMeter,
                    pool: ProcessPoolExecutor) -> None:
        """The steps against the server under test: auth on, every request with the
        administrator's token (``SERVER_ENV``); (p) measures what auth adds."""
        assert self.monitor is not None
        server = Server(database_url, nats_url, work, self.workers, env=SERVER_ENV)
        say(f"starting `ssot serve` on {HOST}:{server.port} (log {server.log_path})")
        try:
            server.start()
            meter.server_pid = server.pid
            token = read_admin_token(server.data_dir)
            if token is None:
                raise RuntimeError(f"no admin token in {server.data_dir}")
            headers = bearer(token)
            self.report.setdefault("server", {})["env"] = SERVER_ENV
            if self.only in (None, "turns"):  # first: see ops/bench/turns.py
                self.report["turns"] = turns.measure(
                    self.monitor, server, meter, pool, token=self.token, headers=headers,
                    quick=self.quick)
            if self.only is None:
                http_load.measure(self.report, self.monitor, server, meter, pool,
                                  token=self.token, duration=self.duration,
                                  quick=self.quick, rss_writes=self.rss_writes,
                                  headers=headers)
            if self.only in (None, "budget"):
                self.report["budget"] = budget.measure(
                    self.monitor, server, meter, pool, token=self.token,
                    duration=self.duration, headers=headers,
                    idle_seconds=IDLE_SECONDS_QUICK if self.quick else IDLE_SECONDS)
            if self.only in (None, "chain"):
                self.report["hash_chain"] = chain.measure(
                    database_url, meter, pool, token=self.token, duration=self.duration,
                    quick=self.quick)
            if self.only in (None, "broadcast"):
                say("(f)-(h) broadcast: raw JetStream, commit → delivery, catch-up")
                self.report["broadcast"] = broadcast.run_all(
                    server.port, database_url, nats_url, server.stream, server.prefix,
                    self.duration, meter, headers=headers)
                for line in self.report["broadcast"]["summary_md"][5:]:
                    say(line)
            if self.only in (None, "history"):
                self.measure_history(server, database_url, meter, headers)
            if self.only in (None, "projections"):
                self.measure_projections(server, database_url, meter, pool, headers)
            if self.only in (None, "console"):
                self.measure_console(server, database_url, meter, token, headers)
            if self.only in (None, "metrics"):
                self.report["metrics_scrape"] = metrics_scrape.measure(
                    server.data_dir / "metrics", server.port, headers, meter)
                for line in self.report["metrics_scrape"]["summary_md"][5:]:
                    say(line)
            if self.only in (None, "backup"):
                self.measure_backup(database_url, meter)
            if self.only in (None, "slowloris"):
                self.report["slowloris"] = slowloris.run_all(
                    server.port, self.duration, Settings().http_header_timeout_seconds,
                    headers)
            if self.only in (None, "schema"):
                self.report["schemas"] = schemas.run_all(
                    self.monitor, server, database_url, meter, pool, token=self.token,
                    duration=self.duration, quick=self.quick, headers=headers)
                for line in self.report["schemas"]["summary_md"][5:]:
                    say(line)
        finally:
            code = server.stop()
            say(f"server stopped (exit code {code})")
            self.report.setdefault("server", {}).update(
                {"exit_code": code, "left_nats_running": server.orphan_nats})

    def drop_database(self, server_url: str) -> None:
        if self.monitor is not None:
            self.monitor.close()
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(self.database)))
        say(f"dropped database {self.database}")

    def baselines(self, work: Path, meter: CpuMeter, pool: ProcessPoolExecutor) -> None:
        """(s) the trivial FastAPI app and (t) etcd, by the same load generator."""
        self.report["baseline"] = baseline.measure(work, self.workers, self.duration, meter,
                                                   pool)
        self.report["etcd"] = etcd.measure(work, self.duration, meter, pool)

    def measure_history(self, server: Server, database_url: str, meter: CpuMeter,
                        headers: str) -> None:
        say("(i)-(k) time travel and audit")
        measured = history.run_all(
            server.port, database_url, entries=10_000 if self.quick else 100_000,
            audit_events=history.AUDIT_EVENTS_QUICK if self.quick else history.AUDIT_EVENTS,
            meter=meter, headers=headers)
        self.report["history"] = {**measured, "summary_md": history.summarize(
            measured, quick=self.quick)}
        for line in self.report["history"]["summary_md"][5:]:
            say(line)

    def measure_console(self, server: Server, database_url: str, meter: CpuMeter,
                        token: str, headers: str) -> None:
        say("(w) the web console: search and first paint over a namespace of "
            f"{web_console.ENTRIES_QUICK if self.quick else web_console.ENTRIES:,} entries")
        measured = web_console.run_all(
            server.port, database_url, token,
            entries=web_console.ENTRIES_QUICK if self.quick else web_console.ENTRIES,
            meter=meter, headers=headers)
        measured["summary_md"] = web_console.summarize(measured, quick=self.quick)
        self.report["console"] = measured
        for line in measured["summary_md"][5:]:
            say(line)

    def measure_projections(self, server: Server, database_url: str, meter: CpuMeter,
                            pool: ProcessPoolExecutor, headers: str) -> None:
        say("(m)-(n) projections: rebuilds beside the library's log read, live view lag")
        measured = projections.run_all(
            server.port, database_url, meter, pool,
            events=projections.EVENTS_QUICK if self.quick else projections.EVENTS,
            keys=projections.KEYS_QUICK if self.quick else projections.KEYS,
            seconds=self.duration, headers=headers)
        measured["summary_md"] = projections.summarize(measured, quick=self.quick)
        self.report["projections"] = measured
        for line in measured["summary_md"][5:]:
            say(line)

    def measure_backup(self, database_url: str, meter: CpuMeter) -> None:
        say("(o) backups: verify, export and import")
        measured = backup.run_all(database_url, meter,
                                  events=backup.EVENTS_QUICK if self.quick else backup.EVENTS,
                                  keys=backup.KEYS_QUICK if self.quick else backup.KEYS)
        measured["summary_md"] = backup.summarize(measured, quick=self.quick)
        self.report["backup"] = measured
        for line in measured["summary_md"][5:]:
            say(line)


def stop_load_generator(pid: int) -> Callable[..., bool]:
    """An exit callback that, when the run ends by an exception (Ctrl-C, SIGTERM, a failed
    step), kills the load generator's process ``pid`` before its pool is shut down: the
    shutdown waits for the step in flight, and a load whose server was stopped under it
    retries until its cap (step (e): 1,200 s). The process holds nothing to undo; the
    pool then finds it gone and ends."""

    def stop(exc_type: type[BaseException] | None, _exc: BaseException | None,
             _tb: Any) -> bool:
        if exc_type is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return False

    return stop


def interrupt_on_sigterm() -> None:
    """Have a SIGTERM (``kill``, a cancelled job) stop the bench as Ctrl-C does: what the
    run started (its servers, databases and streams) is stopped and removed on the way
    out. Without it the process died at once and left its embedded PostgreSQL running."""

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nexus_ssot.ops.bench",
        description="Measure the ledger's HTTP API beside pgbench and the plain eventsourcing "
                    "library, against the same PostgreSQL.")
    parser.add_argument("--duration", type=float, default=10.0, metavar="SECONDS",
                        help="seconds per step (default 10)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_DURATION:g} s per step, "
                             f"{RSS_WRITES_QUICK:,} writes before reading the RSS")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="HTTP worker processes of the server under test (default 2)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="folder for the results (default bench/results)")
    parser.add_argument("--only", choices=["history", "chain", "projections", "backup", "auth",
                                           "slowloris", "budget", "baselines", "schema", "turns",
                                           "broadcast", "cluster", "console", "metrics"],
                        help="run only these steps: history = (i)-(k) time travel and audit, "
                             "chain = (l) the hash chain's cost, projections = (m)-(n) view "
                             "rebuilds and live view lag, backup = (o) verify, export and "
                             "import, auth = (p) identity and access, in process and auth "
                             "off beside on over HTTP, slowloris = (q) ordinary requests "
                             "beside 200 slow clients, budget = (r) CPU per operation of "
                             "each part of the server, baselines = (s) a trivial FastAPI app "
                             "and (t) etcd, schema = (u) validation, PUT @16 with a schema, "
                             "dry run and re-validation, cluster = (v) two API nodes "
                             "beside one, replica reads, failover times, console = (w) the "
                             "web console's search and first paint over 100,000 entries, "
                             "metrics = (x) one /metrics scrape at 10,000 series, broadcast = "
                             "(f)-(h) raw JetStream, commit → NATS delivery, catch-up, turns = "
                             "(c) PUT @16 and @64 beside the library, in turns "
                             "(results go to bench-<stamp>-<steps>.*, not latest.*)")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    duration = QUICK_DURATION if args.quick else args.duration
    bench = Bench(duration, RSS_WRITES_QUICK if args.quick else RSS_WRITES, args.quick,
                  args.workers, args.only)
    interrupt_on_sigterm()
    try:
        report = bench.run()
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    rows = evaluate(report)
    report["summary"] = rows
    report["noisy_steps"] = noisy_steps(report, rows)
    text = markdown(report, rows)
    path, latest = write_results(args.out, report, rows, text)
    if latest:
        say(f"results in {path} and {args.out / 'latest.md'}")
    else:
        say(f"results in {path}" + ("" if args.only else
                                    " (a noisy run: latest.md left as it was)"))
    print(text, end="")
    return 0

