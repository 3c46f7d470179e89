"""Instructions per write of the writer process, counted by valgrind (``make
bench-instructions INSTRUCTIONS_ARGS=--writer``): what ``ssot writer`` spends on one more
write, read off its socket, decided, committed and answered, at batches of one and at
the batches many connections make; a figure that does not move with the machine's load.

An ``ssot writer`` runs under ``valgrind --tool=callgrind --instr-atstart=no`` on a socket
of the bench's own, and an ``ssot serve --workers 1`` takes it as its writer
(``SSOT_WRITER_SOCKET``: serve then starts none). For each number of connections the load
generator sends PUTs with If-Match, each on an entry of its connection's own: ``WARMUP``
writes, then collection is switched on for ``count`` more, off again, and the count is
dumped (``callgrind_control --dump``); the instructions divided by the events the window
appended are what one write costs. Under valgrind the writer is some 50 times slower, so
the batches of many connections are larger than at full speed: the mean batch of each
window is reported beside its figure, from the transactions that inserted its events.

A window also counts what the writer does whatever it is asked, by the clock (its
timers, its lease, its metrics), and under valgrind a window lasts ~50 times longer than
at full speed. So the writer is then counted idle for ``IDLE_SECONDS`` as well, and each
window's figure is also given without that rate of idle work over its duration."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from .database import Monitor
from .http_load import HttpSpec, run_http
from .measuring import callgrind_total, end_process, say
from .server import Server

WARMUP = 300
READY_TIMEOUT = 300.0
#: How long the writer is counted idle, for the rate of its work by the clock.
IDLE_SECONDS = 10.0
#: The numbers of connections counted: sequential writes (batches of one), and enough at
#: once for batches of the writer's target.
CONNECTIONS = (1, 64)


@dataclass
class Counted:
    """One window: instructions per write, the same without the idle work over its
    duration, and the mean batch."""

    per_write: float
    busy_per_write: float
    mean_batch: float


def count_writer(database_url: str, nats_url: str, count: int, work: Path,
                 connections: tuple[int, ...] = CONNECTIONS
                 ) -> tuple[dict[int, Counted], float]:
    """Per number of connections, the window counted (``Counted``) of a writer process
    under valgrind behind a server of ``database_url`` (a database of the bench's own);
    and the writer's instructions per second while idle."""
    socket_path = f"/tmp/ssot-writer-instructions-{secrets.token_hex(4)}.sock"
    out = work / "callgrind-writer.out"
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_NATS_URL": nats_url,
           "SSOT_AUTH": "off", "SSOT_DATA_DIR": str(work / "writer")}
    writer = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, "-m", "nexus_ssot.ops.cli", "writer", "--socket", socket_path],
        env=env, stdout=(work / "writer.log").open("wb"), stderr=subprocess.STDOUT)
    server = Server(database_url, nats_url, work, 1, name="writer-instructions",
                    env={"SSOT_AUTH": "off", "SSOT_RATE_LIMIT_PER_SECOND": "0",
                         "SSOT_WRITER_SOCKET": socket_path})
    windows: dict[int, tuple[int, int, float, Path]] = {}  # events, transactions, s, dump
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not os.path.exists(socket_path):
            if writer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the writer under valgrind did not start: {work}/writer.log")
            time.sleep(0.2)
        server.start()
        with psycopg.connect(database_url, autocommit=True) as conn:
            monitor = Monitor(conn)
            for n, many in enumerate(connections, start=1):
                prefix = f"writer-{many}"
                run_http(HttpSpec(f"{prefix}-warm", "PUT", server.port, prefix, many, 600,
                                  target_writes=WARMUP))
                before = monitor.head()
                started = time.monotonic()
                _control(writer, "-i", "on")
                run_http(HttpSpec(prefix, "PUT", server.port, prefix, many, 1800,
                                  target_writes=count))
                _control(writer, "-i", "off")
                seconds = time.monotonic() - started
                _control(writer, f"--dump=connections-{many}")
                events, transactions = monitor.batches(before, monitor.head())
                windows[many] = (events, transactions, seconds, Path(f"{out}.{n}"))
            _control(writer, "-i", "on")
            time.sleep(IDLE_SECONDS)
            _control(writer, "-i", "off")
            _control(writer, "--dump=idle")
            idle_rate = callgrind_total(Path(f"{out}.{len(connections) + 1}")) / IDLE_SECONDS
    finally:
        server.stop()
        end_process(writer)
        Path(socket_path).unlink(missing_ok=True)
    found: dict[int, Counted] = {}
    for many, (events, transactions, seconds, dumped) in windows.items():
        total = callgrind_total(dumped)
        found[many] = Counted(total / max(events, 1),
                              max(total - idle_rate * seconds, 0.0) / max(events, 1),
                              events / max(transactions, 1))
        say(f"writer @{many}: {found[many].per_write:,.0f} instructions per write, "
            f"{found[many].busy_per_write:,.0f} without the idle work over its {seconds:.0f} s "
            f"(mean batch {found[many].mean_batch:.1f}, {events} events)")
    say(f"writer idle: {idle_rate:,.0f} instructions per second")
    return found, idle_rate


def _control(writer: subprocess.Popen[bytes], *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(writer.pid)], check=True,
                   capture_output=True)
