"""What one Prometheus scrape costs at 10,000 series (``make bench`` step (x)).

The series are the service's own metrics (``ledger/metrics.py``), written by the library's
own multiprocess writer in four processes of their own (as ``ssot serve`` has: two HTTP
workers, the writer, serve's followers), each counting every series, so a scrape adds up
40,000 entries: per-namespace write counts for 100 namespaces
(``SSOT_METRICS_NAMESPACE_LABELS``), and requests and their duration histograms for as
many route labels as it takes to reach 10,000 series.

Side by side on those files: prometheus-client's ``MultiProcessCollector`` with
``generate_latest`` (what ``GET /metrics`` used before), and ``MetricsFolder``
(``ledger/metrics_exposition.py``), its first scrape and the following ones; both in this
process, CPU and wall time. Under ``make bench`` the files go into the running server's
metrics folder and ``GET /metrics`` is timed over HTTP as well (it adds the gauges read
from PostgreSQL); they are removed afterwards.

Alone, without a server: ``python -m nexus_ssot.ops.bench.metrics_scrape``."""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from .measuring import say, verdict

NAMESPACES = 100
SERIES = 10_000
PROCESSES = (910_001, 910_002, 910_003, 910_004)  # pids no process here has (fake files)
SCRAPES = 30
TARGET_MS = 50.0

#: One process's counting: run with PROMETHEUS_MULTIPROC_DIR set and the pid to name its
#: files after (prometheus-client takes it from os.getpid, so the child fakes it).
_CHILD = textwrap.dedent("""
    import os, sys
    pid, routes, namespaces = (int(a) for a in sys.argv[1:4])
    import prometheus_client.values as values
    values.ValueClass = values.MultiProcessValue(lambda: pid)
    from nexus_ssot.ledger.metrics import LATENCY_BUCKETS, metrics
    m = metrics()
    for n in range(namespaces):
        m.namespace_writes.labels(f"ns-{n:03d}").inc(n + pid % 7)
    for r in range(routes):
        route = f"/v1/bench/{r:04d}/{{key}}"
        for method in ("GET", "PUT"):
            for status in ("200", "404", "409"):
                m.http_requests.labels(route, method, status).inc(r + 1)
            for bound in LATENCY_BUCKETS:
                m.http_duration.labels(route, method).observe(bound * 0.9)
    m.writes.labels("entry.created", "appended").inc(pid % 1000)
    m.writer_batch_size.observe(16)
""")


def routes_for(series: int, namespaces: int) -> int:
    """Route labels that bring the exposition to about ``series`` series: each route has
    2 methods x (3 statuses + a histogram of len(LATENCY_BUCKETS) + 1 buckets, sum and
    count) samples."""
    from nexus_ssot.ledger.metrics import LATENCY_BUCKETS

    per_route = 2 * (3 + len(LATENCY_BUCKETS) + 3)
    return max(1, (series - namespaces) // per_route)


def write_files(folder: Path, series: int = SERIES, namespaces: int = NAMESPACES) -> None:
    """The files of ``PROCESSES`` processes counting about ``series`` series."""
    routes = routes_for(series, namespaces)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    for pid in PROCESSES:
        subprocess.run([sys.executable, "-c", _CHILD, str(pid), str(routes), str(namespaces)],
                       env=env, check=True, timeout=120)


def remove_files(folder: Path) -> None:
    for pid in PROCESSES:
        for path in folder.glob(f"*_{pid}.db"):
            path.unlink()


def _timed(run: Any, n: int) -> dict[str, float]:
    """``n`` calls of ``run`` timed, with the garbage collector off as ``timeit`` has it:
    at the end of a full bench this process holds a large heap, and a collection of it
    (~90 ms) would land on whichever scrape triggered it, a cost of the bench's process,
    not of the reader's."""
    wall, cpu = [], []
    gc.collect()
    gc.disable()
    try:
        for _ in range(n):
            w, c = time.perf_counter(), time.process_time()
            run()
            wall.append((time.perf_counter() - w) * 1000)
            cpu.append((time.process_time() - c) * 1000)
    finally:
        gc.enable()
    return {"median_ms": round(statistics.median(wall), 2), "max_ms": round(max(wall), 2),
            "cpu_median_ms": round(statistics.median(cpu), 2)}


def in_process(folder: Path, scrapes: int = SCRAPES) -> dict[str, Any]:
    """The library's collector and ``MetricsFolder`` on ``folder``, side by side."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from nexus_ssot.ledger.metrics_exposition import MetricsFolder

    def library() -> bytes:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    reader = MetricsFolder(folder)
    try:
        started = time.perf_counter()
        body = reader.exposition()
        first_ms = round((time.perf_counter() - started) * 1000, 2)
        ours = _timed(reader.exposition, scrapes)
    finally:
        reader.close()
    theirs = _timed(library, max(3, scrapes // 5))
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    entries = sum(1 for _ in folder.glob("*.db"))
    return {"series": series, "files": entries, "processes": len(PROCESSES),
            "library": theirs, "ours": ours, "ours_first_ms": first_ms,
            "ratio": round(theirs["median_ms"] / ours["median_ms"], 1)
            if ours["median_ms"] else None}


def over_http(port: int, headers: str, meter: Any, scrapes: int = SCRAPES) -> dict[str, Any]:
    """``GET /metrics`` timed; ``log_events``: the head of the server's log, whose
    followers' positions and lags the scrape reads from PostgreSQL."""
    from .history import get_json, measure_gets

    timed = measure_gets(port, "/metrics", scrapes, meter, headers)
    return {**timed, "log_events": get_json(port, "/v1/health", headers)["head_position"]}


def measure(metrics_dir: Path, port: int, headers: str, meter: Any) -> dict[str, Any]:
    """Under ``make bench``: the files in the server's own metrics folder, then both."""
    say(f"(x) one /metrics scrape at {SERIES:,} series ({NAMESPACES} namespaces, "
        f"{len(PROCESSES)} processes' files)")
    write_files(metrics_dir)
    try:
        report = in_process(metrics_dir)
        report["http"] = over_http(port, headers, meter)
    finally:
        remove_files(metrics_dir)
    report["summary_md"] = summarize(report)
    return report


def summarize(report: dict[str, Any]) -> list[str]:
    lib, ours = report["library"], report["ours"]
    lines = ["", f"One Prometheus scrape of {report['series']:,} series ({NAMESPACES} "
             f"namespaces' write counts and request metrics, each counted by "
             f"{report['processes']} processes, {report['files']} files): the library's "
             "multiprocess collector and `MetricsFolder` side by side in one process, and "
             "`GET /metrics` of the running server:", "",
             "| step | median ms | max ms | CPU ms (median) | target | status |",
             "|---|---:|---:|---:|---|---|",
             f"| (x) prometheus-client MultiProcessCollector + generate_latest | "
             f"{lib['median_ms']} | {lib['max_ms']} | {lib['cpu_median_ms']} | (baseline) | — |",
             f"| (x) MetricsFolder, first scrape (decodes every entry) | "
             f"{report['ours_first_ms']} | | | (for reference) | — |",
             f"| (x) MetricsFolder, later scrapes ({report['ratio']}x faster) | "
             f"{ours['median_ms']} | {ours['max_ms']} | {ours['cpu_median_ms']} | "
             f"< {TARGET_MS:g} ms | {verdict(ours['max_ms'] < TARGET_MS, None)} |"]
    http = report.get("http")
    if http:
        shown = verdict(http["p99_ms"] < TARGET_MS, (http.get("cpu") or {}).get("other"))
        lines.append(f"| (x) GET /metrics over HTTP, log of {http['log_events']:,} events"
                     f" (p50 / p99 of {http['reads']}) | "
                     f"{http['p50_ms']} | {http['p99_ms']} | | < {TARGET_MS:g} ms | {shown} |")
    return lines


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ssot-scrape-") as folder:
        say(f"writing {len(PROCESSES)} processes' files of ~{SERIES:,} series")
        write_files(Path(folder))
        report = in_process(Path(folder))
    print("\n".join(summarize(report)))


if __name__ == "__main__":
    main()
