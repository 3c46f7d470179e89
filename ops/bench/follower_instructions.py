"""Instructions per event of the followers of the log, counted by valgrind (``make
bench-instructions INSTRUCTIONS_ARGS=--followers``): what the supervisor's
``ssot-followers`` thread (the broadcaster, the views, the digester, the purge) spends on
one more event, a figure that does not move with the machine's load.

An ``ssot serve --workers 1`` runs with its own followers off (``SSOT_BROADCAST``,
``SSOT_PROJECTIONS`` and ``SSOT_DIGESTS`` false), and beside it a process running the
followers as serve runs them (a ``FollowersThread`` of the same settings, followers on,
on the server's stream and buckets) under ``valgrind --tool=callgrind
--instr-atstart=no``. One client writes ``WARMUP`` entries and waits for the views to
fold them; collection is switched on for ``count`` more, written one at a time at
``rate`` a second (every commit one event: the followers' costliest case, a wake-up and a
range for each), until every view has folded the last, and one second more; the count
divided by the events is what one event costs. Runs of the same code differ by up to
~10 %: how often the followers wake while idle moves with the timing."""

from __future__ import annotations

import http.client
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg

from nexus_ssot.ledger.settings import Settings
from nexus_ssot.projections.status_checks import run_views

from .http_load import BODY
from .measuring import HOST, NAMESPACE, callgrind_total, end_process, say
from .server import Server

WARMUP = 40
READY_TIMEOUT = 300.0
FOLD_TIMEOUT = 300.0
#: The followers as serve runs them, until SIGTERM; "ready" once they run.
_FOLLOWERS = """
import signal, threading
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ops.followers import FollowersThread
thread = FollowersThread(Settings())
thread.start()
asked = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: asked.set())
print("ready", flush=True)
asked.wait()
thread.stop()
"""
_OFF = {"SSOT_BROADCAST": "false", "SSOT_PROJECTIONS": "false", "SSOT_DIGESTS": "false"}


def _put(conn: http.client.HTTPConnection, i: int) -> int:
    body = BODY % (i % 8, i)
    conn.request("PUT", f"/v1/namespaces/{NAMESPACE}/entries/k{i % 8}", body=body,
                 headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    text = answer.read()
    if answer.status not in (200, 201):
        raise RuntimeError(f"PUT answered {answer.status}: {text[:300]!r}")
    return int(orjson.loads(text)["position"])


def _folded(database_url: str, views: list[str], position: int) -> bool:
    with psycopg.connect(database_url) as conn:
        rows: dict[str, int] = {str(name): int(at) for name, at in conn.execute(
            "SELECT application_name, notification_id FROM projection_tracking")}
    return all(rows.get(view, 0) >= position for view in views)


def _wait_folded(database_url: str, views: list[str], position: int) -> None:
    deadline = time.monotonic() + FOLD_TIMEOUT
    while not _folded(database_url, views, position):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the views {views} did not fold position {position} in "
                               f"{FOLD_TIMEOUT:.0f} s")
        time.sleep(0.2)


def count_followers(database_url: str, nats_url: str, count: int, rate: float,
                    work: Path) -> float:
    """Instructions per event of the followers' process, beside a server of ``database_url``
    (an empty database of the bench's own) whose own followers are off."""
    server = Server(database_url, nats_url, work, 1, name="followers",
                    env={**_OFF, "SSOT_AUTH": "off", "SSOT_RATE_LIMIT_PER_SECOND": "0"})
    out = work / "callgrind-followers.out"
    followers: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_NATS_URL": nats_url,
               "SSOT_NATS_STREAM": server.stream, "SSOT_NATS_SUBJECT_PREFIX": server.prefix,
               "SSOT_KV_BUCKET_PREFIX": server.kv_prefix, "SSOT_DATA_DIR": str(work)}
        for name in _OFF:
            env.pop(name, None)
        views = [name for name, runs in
                 run_views(Settings(database_url=database_url, nats_url=nats_url)).items()
                 if runs]
        followers = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={out}", sys.executable, "-c", _FOLLOWERS],
            env=env, stdout=subprocess.PIPE,
            stderr=(work / "followers.log").open("wb"))
        assert followers.stdout is not None
        readable, _, _ = select.select([followers.stdout], [], [], READY_TIMEOUT)
        if not readable or followers.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the followers under valgrind did not start: {work}/followers.log")
        conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
        last = 0
        for i in range(WARMUP):
            last = _put(conn, i)
        _wait_folded(database_url, views, last)
        say(f"followers: {WARMUP} events folded by {', '.join(views)}; counting {count} "
            f"at {rate:g}/s")
        subprocess.run(["callgrind_control", "-i", "on", str(followers.pid)], check=True,
                       capture_output=True)
        started = time.monotonic()
        for i in range(count):
            pause = started + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            last = _put(conn, WARMUP + i)
        _wait_folded(database_url, views, last)
        time.sleep(1.0)  # the broadcaster's and the digester's last wake-ups
        subprocess.run(["callgrind_control", "-i", "off", str(followers.pid)], check=True,
                       capture_output=True)
        # the count written now (to <out>.1), not at the exit: a process that does not
        # stop within the wait below is killed, and a killed one writes nothing
        subprocess.run(["callgrind_control", "--dump=counted", str(followers.pid)],
                       check=True, capture_output=True)
        conn.close()
    finally:
        if followers is not None:
            end_process(followers)
        server.stop()
    return sum(callgrind_total(path) for path in work.glob(f"{out.name}*")
               if path.stat().st_size) / count
