"""`ssot serve` as a process on the embedded default: it starts PostgreSQL and NATS,
serves, and on SIGTERM drains and stops everything it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

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
    proc = subprocess.Popen([SSOT, "serve", "--workers", str(workers)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "ssot serve did not become healthy"
            time.sleep(0.2)
        put = httpx.put(url + "/v1/namespaces/smoke/entries/k", json={"ok": True})
        assert put.status_code == 201
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
