"""`ssot serve` as a process: on the embedded default it starts PostgreSQL and NATS; on
SIGTERM or Ctrl-C it drains and stops everything it started, at once even with live feeds
open, loses nothing it acknowledged, and its feeds' clients resume after the restart
exactly where they were."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import httpx
import orjson
import psycopg
import pytest

from nexus_ssot.ops.bench.measuring import descendants, process_table
from nexus_ssot.ops.bench.server import gone
from tests.integration.conftest import AUTH, LiveFeed, free_port, start_serve, wait_until

SSOT = str(Path(sys.executable).parent / "ssot")
#: Seconds from SIGTERM or Ctrl-C until every process of serve is gone, however many live
#: feeds are open (issue #14).
STOP_WITHIN = 5.0


def processes_using(path: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(path) in cmdline or cwd.startswith(str(path)):
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_the_embedded_default_stops_what_it_started(tmp_path: Path,
                                                             workers: int) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("SSOT_DATABASE_URL", "SSOT_NATS_URL")}
    env.update(SSOT_DATA_DIR=str(data), SSOT_HTTP_PORT=str(port))
    proc, url = start_serve(["--workers", str(workers)], env, port)
    try:
        put = httpx.put(url + "/v1/namespaces/smoke/entries/k", json={"ok": True}, headers=AUTH)
        assert put.status_code == 201
        # the answer is dated and does not name the server's software
        assert "date" in put.headers and "server" not in put.headers, put.headers
        deadline = time.monotonic() + 30  # and the broadcaster publishes it on NATS
        while True:
            health = httpx.get(url + "/v1/health").json()
            if (health["broadcaster"] or {}).get("position", 0) >= put.json()["position"]:
                assert health["broadcaster"]["lag_events"] == 0
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
        assert processes_using(data), "embedded servers should run while serving"
        feeds = [LiveFeed(url, {"after": 0}) for _ in range(3)]  # open while it stops
        for feed in feeds:
            feed.start()
        wait_until(lambda: all(f.positions for f in feeds), "the feeds to have the write")
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    # How soon is held to STOP_WITHIN on an external PostgreSQL (the test with feeds and a
    # restart, below): the embedded one's shutdown checkpoint adds what the disk takes.
    assert "Traceback" not in output and "timeout graceful shutdown exceeded" not in output
    for feed in feeds:
        feed.join(60)
    assert [f.ending for f in feeds] == ["clean"] * len(feeds), output
    deadline = time.monotonic() + 10
    while processes_using(data) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_using(data) == [], output
    pg_port = re.search(r"embedded PostgreSQL at .*port=(\d+)", output)
    assert pg_port, output
    with socket.socket() as s:  # nothing listens where the embedded PostgreSQL was
        assert s.connect_ex(("127.0.0.1", int(pg_port.group(1)))) != 0
    # the servers asked for passwords, and serve printed their URLs without them
    secrets = [(data / "postgres" / "ssot-superuser.password").read_text().strip(),
               (data / "nats" / "ssot-service.password").read_text().strip()]
    assert all(len(secret) >= 40 for secret in secrets)
    assert not [secret for secret in secrets if secret in output], "a password was printed"
    assert re.search(r"embedded PostgreSQL at .*password=\*\*\*", output), output
    assert re.search(r"embedded NATS at nats://ssot:\*\*\*@127\.0\.0\.1:\d+", output), output


def test_a_graceful_stop_finishes_the_writes_in_flight(database_url: str, ns: str,
                                                       tmp_path: Path) -> None:
    """SIGTERM while clients write: every acknowledged write is in the log, every write
    in the log was sent by a client, and serve exits 0."""
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_HTTP_PORT": str(port),
           "SSOT_DATA_DIR": str(tmp_path),
           "SSOT_BROADCAST": "false"}  # never publish on a NATS server we did not start
    proc, url = start_serve([], env, port)
    acknowledged: list[tuple[str, int]] = []
    sent: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(headers=AUTH, base_url=url, timeout=30) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                key = f"c{n}-{i}"
                with lock:
                    sent.add(key)
                try:
                    r = c.put(f"/v1/namespaces/{ns}/entries/{key}", json={"i": i})
                except httpx.HTTPError:
                    return  # the server is going away: this write's fate is unknown
                if r.status_code == 201:
                    with lock:
                        acknowledged.append((key, r.json()["position"]))
                elif r.status_code != 503:
                    raise AssertionError(r.text)

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        # stop once writes are flowing (not after a fixed time: a loaded machine may not
        # have answered one yet)
        deadline = time.monotonic() + 120
        while len(acknowledged) <= 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    for t in threads:
        t.join(30)
    assert proc.returncode == 0, output
    assert len(acknowledged) > 50
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT key, position FROM entry_history WHERE namespace = %s",
                            (ns,)).fetchall()
    logged = {key: position for key, position in rows}
    for key, position in acknowledged:  # nothing acknowledged is missing
        assert logged.get(key) == position
    assert set(logged) <= sent  # nothing appears that nobody sent


def collect(stream: IO[bytes] | None, into: list[str]) -> None:
    assert stream is not None
    threading.Thread(target=lambda: into.extend(line.decode() for line in stream),
                     daemon=True).start()


def write(url: str, ns: str, keys: list[str]) -> list[int]:
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        return [client.put(f"/v1/namespaces/{ns}/entries/{key}", json={"k": key}
                           ).json()["position"] for key in keys]


def stop_with_feeds_open(proc: subprocess.Popen[bytes], output: list[str], how: str,
                         feeds: list[LiveFeed]) -> None:
    """Signal serve as an operator would; every process of it must be gone within
    ``STOP_WITHIN`` seconds, its log clean, and each feed's stream closed properly."""
    processes = descendants(proc.pid, process_table())  # serve, HTTP workers, the writer
    if how == "Ctrl-C":  # a terminal sends SIGINT to its whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    wait_until(lambda: proc.poll() is not None and all(gone(pid) for pid in processes),
               f"every process of serve to exit after {how}", timeout=STOP_WITHIN)
    for feed in feeds:
        feed.join(STOP_WITHIN)
    log = "".join(output)
    assert proc.returncode == 0, log
    assert "Traceback" not in log and "timeout graceful shutdown exceeded" not in log, log
    assert [feed.ending for feed in feeds] == ["clean"] * len(feeds), log


def logged_positions(database_url: str, ns: str) -> list[int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT position FROM entry_history WHERE namespace = %s "
                            "ORDER BY position", (ns,)).fetchall()
    return [int(position) for (position,) in rows]


def test_serve_stops_at_once_with_feeds_open_and_the_feeds_resume_after_the_restart(
        database_url: str, nats_url: str, ns: str, tmp_path: Path) -> None:
    """One HTTP worker stopped by SIGTERM, then two (uvicorn's worker processes) by Ctrl-C;
    each time with live feeds (SSE, and ``ssot watch`` as a process) open on it."""
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_NATS_URL": nats_url,
           "SSOT_HTTP_PORT": str(port), "SSOT_DATA_DIR": str(tmp_path),
           "SSOT_BROADCAST": "false"}  # never publish on a NATS server we did not start
    proc, url = start_serve(["--workers", "1"], env, port, new_session=True)
    servers = [proc]
    watch = subprocess.Popen([SSOT, "--json", "watch", ns, "--after", "0"],
                             env={**env, "SSOT_URL": url}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    watched: list[str] = []
    watch_errors: list[str] = []
    collect(watch.stdout, watched)
    collect(watch.stderr, watch_errors)
    try:
        output: list[str] = []
        collect(proc.stdout, output)
        first = write(url, ns, [f"a{i}" for i in range(5)])
        feeds = [LiveFeed(url, {"namespace": ns, "after": 0}) for _ in range(3)]
        feeds.append(LiveFeed(url, {"namespace": ns}, last_event_id=first[1]))
        for feed in feeds:
            feed.start()
        wait_until(lambda: all(feed.positions[-1:] == first[-1:] for feed in feeds)
                   and len(watched) == len(first), "every feed to have what was written")
        stop_with_feeds_open(proc, output, "SIGTERM", feeds)
        assert [feed.positions for feed in feeds] == [first] * 3 + [first[2:]]

        proc, _ = start_serve(["--workers", "2"], env, port, new_session=True)
        servers.append(proc)
        output = []
        collect(proc.stdout, output)
        assert logged_positions(database_url, ns) == first  # every acknowledged write
        then = write(url, ns, [f"b{i}" for i in range(3)])
        resumed = LiveFeed(url, {"namespace": ns}, last_event_id=feeds[0].positions[-1])
        resumed.start()
        wait_until(lambda: len(resumed.positions) >= len(then),
                   "the resumed feed to have the events written since")
        assert resumed.positions == then  # exactly those
        wait_until(lambda: len(watched) >= len(first + then),
                   "ssot watch to reconnect and print them too", timeout=30)
        assert [orjson.loads(line)["data"]["position"] for line in watched] == first + then
        more = [LiveFeed(url, {"namespace": ns, "after": 0}) for _ in range(4)]
        for feed in more:
            feed.start()
        wait_until(lambda: all(len(feed.positions) == len(first + then) for feed in more),
                   "the new feeds to catch up")
        stop_with_feeds_open(proc, output, "Ctrl-C", [resumed, *more])
        assert watch.poll() is None, "ssot watch should wait for the server, not end"
    finally:
        watch.terminate()
        for server in servers:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(60)
    warnings = "".join(watch_errors)
    assert "warning: the server ended the stream; reconnecting to resume after position " \
        f"{first[-1]}" in warnings, warnings
    assert "Traceback" not in warnings, warnings


#: Put on the path of an HTTP worker of the test below: the first worker to start writes
#: ``starting`` once it notes Ctrl-C, then goes on starting only once it has noted
#: the test's Ctrl-C (where it does not note it: once the test has pressed it); the
#: others start at once.
_SLOW_FIRST_WORKER = '''
import os, sys, time
from pathlib import Path
if "http-worker" in sys.argv:
    from nexus_ssot.ops import http_workers
    folder = Path(os.environ["SLOW_WORKER_DIR"])
    original = http_workers.run_http_worker
    def run_http_worker(*args, **kwargs):
        try:
            (folder / "starting").open("x").close()
        except FileExistsError:
            return original(*args, **kwargs)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                kwargs["early"] if "early" in kwargs else (folder / "pressed").exists()):
            time.sleep(0.01)
        return original(*args, **kwargs)
    http_workers.run_http_worker = run_http_worker
'''


def test_ctrl_c_while_a_worker_still_starts_stops_serve_cleanly(
        database_url: str, nats_url: str, tmp_path: Path) -> None:
    """Serve answers as soon as one worker serves; Ctrl-C reaches the whole process group,
    so a worker may get it in the middle of its start. It exits cleanly and serve stops
    with 0, as if every worker had been serving (it exited 130, the worker's
    KeyboardInterrupt taken for a failed start)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_SLOW_FIRST_WORKER)
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_NATS_URL": nats_url,
           "SSOT_HTTP_PORT": str(port), "SSOT_DATA_DIR": str(tmp_path / "data"),
           "SSOT_BROADCAST": "false", "SLOW_WORKER_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])}
    proc, _ = start_serve(["--workers", "2"], env, port, new_session=True)
    try:
        output: list[str] = []
        collect(proc.stdout, output)
        assert (tmp_path / "starting").exists()  # one worker serves, the other starts
        processes = descendants(proc.pid, process_table())
        os.killpg(proc.pid, signal.SIGINT)
        (tmp_path / "pressed").touch()
        wait_until(lambda: proc.poll() is not None and all(gone(pid) for pid in processes),
                   "every process of serve to exit after Ctrl-C", timeout=30)
        log = "".join(output)
        assert proc.returncode == 0, log
        assert "Traceback" not in log and "interrupted" not in log, log
        assert "stopping on SIGINT before serving" in log, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
