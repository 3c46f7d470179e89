"""Step (t) of ``make bench``, the moonshot: a one-node etcd (when its ``etcd`` binary is
installed: Debian's package etcd-server) on loopback, with its own data directory in the
bench's work directory, fsync on (etcd's default), on free ports, measured by the same
load generator in the same run through its v3 JSON gateway (``/v3/kv/put`` and
``/v3/kv/range``; ``/v3beta/`` on versions that only have that): PUT @16, PUT @64 and
GET @16 over 20,000 keys in random order with ~200-byte values. Our PUT and GET rates are
shown as a fraction of etcd's (target ≥ 0.5x). Without the binary the report says so in one
line and nothing fails.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import shutil
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..embedded.processes import free_ports
from .http_load import RawSpec, raw_step
from .measuring import HOST, CpuMeter, fmt, say

KEYS = 20_000
VALUE_BYTES = 200
REQUESTS = 20_000  # random requests made in advance per step (the load cycles through them)
RATIO = 0.5  # our rate at least half of etcd's
START_TIMEOUT = 60.0
STEPS = (("put_16", "PUT", 16), ("put_64", "PUT", 64), ("get_16", "GET", 16))
NOT_INSTALLED = ("etcd is not installed (the `etcd` binary, Debian package etcd-server): "
                 "the comparison with etcd was skipped")


def binary() -> str | None:
    return shutil.which("etcd")


def version(path: str) -> str | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.splitlines()[0] if out else ""
    return first.split(":", 1)[1].strip() if ":" in first else None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _key(i: int) -> str:
    return _b64(f"bench/key-{i:05d}".encode())


def _post(port: int, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5.0)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def requests(port: int, prefix: str, op: str, keys: list[int], seed: int) -> list[bytes]:
    """POSTs of ``op`` (``put`` or ``range``) on ``keys``, ready to send; puts carry
    random ``VALUE_BYTES``-byte values (base64 text, as a JSON document of that size would
    be about as incompressible)."""
    rng = random.Random(seed)
    made = []
    for i in keys:
        body: dict[str, str] = {"key": _key(i)}
        if op == "put":
            body["value"] = _b64(base64.b64encode(rng.randbytes(VALUE_BYTES * 3 // 4)))
        data = json.dumps(body).encode()
        made.append(f"POST {prefix}/kv/{op} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                    .encode() + data)
    return made


class Etcd:
    """One etcd member on loopback, its data in ``work``."""

    def __init__(self, path: str, work: Path) -> None:
        self.path = path
        self.data_dir = work / "etcd"
        self.log_path = work / "etcd.log"
        self.port, self.peer_port = free_ports(2)
        self.proc: subprocess.Popen[bytes] | None = None
        self.prefix = "/v3"

    def command(self) -> list[str]:
        client, peer = f"http://{HOST}:{self.port}", f"http://{HOST}:{self.peer_port}"
        return [self.path, "--name", "bench", "--data-dir", str(self.data_dir),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"bench={peer}", "--initial-cluster-state", "new",
                "--log-level", "warn", "--logger", "zap"]

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with code {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            for prefix in ("/v3", "/v3beta"):  # 3.4 answers both, 3.3 only /v3beta
                try:
                    status, _ = _post(self.port, f"{prefix}/kv/range", {"key": _key(0)})
                except OSError:
                    break
                if status == 200:
                    self.prefix = prefix
                    return
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not answer within {START_TIMEOUT:g} s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def measure(work: Path, duration: float, meter: CpuMeter, pool: ProcessPoolExecutor
            ) -> dict[str, Any]:
    """etcd's figures (``installed`` False when there is no binary)."""
    path = binary()
    if path is None:
        say(f"(t) {NOT_INSTALLED}")
        return {"installed": False}
    found: dict[str, Any] = {"installed": True, "version": version(path), "keys": KEYS,
                             "value_bytes": VALUE_BYTES}
    etcd = Etcd(path, work)
    saved = meter.server_pid
    try:
        etcd.start()
        found["gateway"] = etcd.prefix
        meter.server_pid = etcd.pid
        say(f"(t) etcd {found['version']} on {HOST}:{etcd.port} (gateway {etcd.prefix}/): "
            f"writing its {KEYS:,} keys")
        fill = raw_step(meter, pool, RawSpec(
            "etcd_fill", "PUT", etcd.port, 64, 300.0,
            requests(etcd.port, etcd.prefix, "put", list(range(KEYS)), 0), total=KEYS))
        found["fill"] = asdict(fill)
        rng = random.Random(15)
        for label, method, connections in STEPS:
            keys = [rng.randrange(KEYS) for _ in range(REQUESTS)]
            op = "put" if method == "PUT" else "range"
            say(f"(t) etcd {method} @{connections}, {duration:g} s")
            result = raw_step(meter, pool, RawSpec(
                f"etcd_{label}", method, etcd.port, connections, duration,
                requests(etcd.port, etcd.prefix, op, keys, connections)))
            found[label] = asdict(result)
            say(f"(t) etcd {label}: {result.requests_per_s:,.0f} req/s, p50 "
                f"{fmt(result.p50_ms, 2)} ms, non-2xx {result.non_2xx}, errors "
                f"{result.errors}")
    finally:
        meter.server_pid = saved
        etcd.stop()
    return found


def evaluate(etcd: dict[str, Any] | None, http: dict[str, Any]) -> list[dict[str, Any]]:
    """The main table's rows: one line when etcd was not there, else etcd's rate for each
    step beside ours, our ratio to it against the target."""
    if etcd is None:
        return []
    if not etcd.get("installed"):
        return [{"step": "(t) etcd", "value": None, "unit": "", "target": f"≥ {RATIO}x etcd",
                 "passed": None, "note": NOT_INSTALLED}]
    rows: list[dict[str, Any]] = []
    for label, method, connections in STEPS:
        theirs = etcd.get(label)
        if theirs is None:
            continue
        ours = (http.get(label) or {}).get("requests_per_s")
        rate = theirs["requests_per_s"]
        ratio = round(ours / rate, 2) if ours and rate else None
        clean = theirs["non_2xx"] == 0 and theirs["errors"] == 0
        rows.append({
            "step": f"(t) etcd {etcd.get('version') or ''} {method} @{connections} "
                    f"({etcd.get('gateway', '/v3')}/kv/{'put' if method == 'PUT' else 'range'},"
                    f" fsync on)",
            "value": rate, "unit": "req/s", "p50_ms": theirs["p50_ms"],
            "p99_ms": theirs["p99_ms"], "non_2xx": theirs["non_2xx"],
            "other": (theirs.get("cpu") or {}).get("other"),
            "target": f"ours ≥ {RATIO}x etcd", "passed": None if ratio is None else (
                ratio >= RATIO and clean),
            "note": f"ours {ratio}x" if ratio is not None else "ours not measured"})
    return rows
