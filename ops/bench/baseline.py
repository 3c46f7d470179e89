"""Step (s) of ``make bench``: the floor of our HTTP stack — a trivial FastAPI endpoint
(async, a small JSON object, no I/O) served by uvicorn with the options ``ssot serve``
uses (uvloop, httptools, the same number of worker processes; not the request-head
deadlines ``ssot serve`` adds to httptools, api/http_protocol.py, which need its app), under
the same load generator as our GET @16, in the same run. Our GET of one entry (auth on,
a lookup behind it) is then shown as a fraction of what the framework alone can do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from ..embedded.processes import free_port
from .http_load import GET_CONNECTIONS, RawSpec, raw_step
from .measuring import HOST, CpuMeter, fmt, say
from .server import gone

app = FastAPI()
PATH = "/v1/trivial"
START_TIMEOUT = 60.0


@app.get(PATH)
async def trivial() -> dict[str, Any]:
    return {"namespace": "bench", "key": "trivial", "version": 1, "ok": True}


def command(port: int, workers: int) -> list[str]:
    """uvicorn with the options of ``ssot serve`` (ops/serve.py): uvloop, httptools, no
    access log, its worker count."""
    return [sys.executable, "-m", "uvicorn", f"{__name__}:app", "--host", HOST,
            "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--timeout-graceful-shutdown", "30"]


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    import http.client

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with code {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        conn = http.client.HTTPConnection(HOST, port, timeout=2.0)
        try:
            conn.request("GET", PATH)
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
    raise RuntimeError(f"the trivial FastAPI app did not answer within {START_TIMEOUT:g} s")


def measure(work: Path, workers: int, duration: float, meter: CpuMeter,
            pool: ProcessPoolExecutor) -> dict[str, Any]:
    """GET @16 of the trivial endpoint: its HTTP figures and where the CPU went (the
    ``server`` share is uvicorn's)."""
    port = free_port()
    log = work / "trivial-fastapi.log"
    say(f"(s) trivial FastAPI GET @{GET_CONNECTIONS} ({workers} uvicorn workers), "
        f"{duration:g} s")
    with log.open("ab") as out:
        proc = subprocess.Popen(command(port, workers), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    saved = meter.server_pid
    try:
        _wait_listening(proc, port, log)
        meter.server_pid = proc.pid
        request = f"GET {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
        result = raw_step(meter, pool, RawSpec("trivial_get_16", "GET", port, GET_CONNECTIONS,
                                               duration, [request]))
    finally:
        meter.server_pid = saved
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    deadline = time.monotonic() + 10
    while not gone(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    say(f"(s) trivial FastAPI: {result.requests_per_s:,.0f} req/s, p50 "
        f"{fmt(result.p50_ms, 2)} ms")
    return {"get_16": asdict(result), "workers": workers, "command": " ".join(
        ["uvicorn", *command(port, workers)[4:]])}
