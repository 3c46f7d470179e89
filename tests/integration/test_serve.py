"""`ssot serve` as a process on the embedded default: it starts PostgreSQL and NATS,
serves, and on SIGTERM drains and stops everything it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import AUTH, free_port, start_serve

SSOT = str(Path(sys.executable).parent / "ssot")


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
        deadline = time.monotonic() + 30  # and the broadcaster publishes it on NATS
        while True:
            health = httpx.get(url + "/v1/health").json()
            if (health["broadcaster"] or {}).get("position", 0) >= put.json()["position"]:
                assert health["broadcaster"]["lag_events"] == 0
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
        assert processes_using(data), "embedded servers should run while serving"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
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
    import threading

    import psycopg

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
