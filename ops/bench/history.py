"""The time-travel and audit part of ``make bench``.

- (i) an entry read at an old version and as of an old time, for keys with 10 and with
  10,000 versions (it must stay flat as history grows), beside the plain library's
  ``repository.get`` folding the same stream without snapshots;
- (j) a namespace cut as of a past position over N entries: the first page of 1,000 and
  the whole cut paged through;
- (k) the audit trail over a log of 1M events: the first page for one actor (a selective
  filter, and a busier actor), and for one namespace (not selective).

Everything is written first, through the ledger's own write path (``GroupCommitWriter``
in this process for (i) and (j), in two processes of the bench's own for the bulk of (k):
``seeding``), then measured on a quiet system: the reads wait until the server's
broadcaster has published every seeded event to NATS and its asynchronous views have
folded them, and the bench runs VACUUM ANALYZE on the bulk load.

Each latency is one HTTP round trip against the running server, sequential on one
keep-alive connection, sent by the bench's hand-written HTTP/1.1 client (the one the load
generator of (c)-(e) uses): after a warm-up on that connection (connection set-up and the
server's first use of its prepared statements are not the steady state), with the
client's garbage collector paused during the timed loop (its pauses are the client's, not
the server's).
"""

from __future__ import annotations

import gc
import http.client
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import psycopg

from nexus_ssot.ledger.addressing import stream_id
from nexus_ssot.ledger.commands import Context, Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.event_store import Outcome
from nexus_ssot.ledger.store import LedgerApplication, open_application
from nexus_ssot.ledger.writer import GroupCommitWriter

from .measuring import HOST, Cpu, CpuMeter, HttpConnection, header_dict, say
from .seeding import SEED_BATCH, SEED_WRITERS, SeedShape, quiesce, seed_log

READS = 1000  # timed reads per (i) series
AUDIT_READS = 200  # timed reads per (k) query
WARMUP = 50  # untimed requests on the connection first
BUSY_ACTORS = 50  # the seeded events' actors, round robin (2 % of the events each)
AUDIT_EVENTS, AUDIT_EVENTS_QUICK = 1_000_000, 200_000


def _context(actor: str, correlation_id: str = "bench") -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor=actor,
                   correlation_id=correlation_id)


def _quantiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50_ms": round(ordered[len(ordered) // 2], 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
            "max_ms": round(ordered[-1], 3), "reads": len(ordered)}


def write_commands(writer: GroupCommitWriter, commands: list[Put], actor: str) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for start in range(0, len(commands), SEED_BATCH):
        futures = writer.write_batch([(c, _context(actor), None)
                                      for c in commands[start:start + SEED_BATCH]])
        outcomes += [f.result() for f in futures]
    return outcomes


def _count_events(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM entry_history").fetchone()
    return int(row[0]) if row else 0


async def _timed_gets(port: int, target: str, n: int, headers: str) -> list[float]:
    """``n`` sequential GETs of ``target`` on one keep-alive connection, after ``WARMUP``
    untimed ones; milliseconds each."""
    conn = HttpConnection(port)
    request = f"GET {target} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{headers}\r\n".encode()
    samples: list[float] = []
    try:
        for _ in range(WARMUP):
            status, _ = await conn.exchange(request)
            assert status == 200, (target, status)
        gc.collect()
        gc.disable()
        try:
            clock = time.perf_counter_ns
            for _ in range(n):
                started = clock()
                status, _ = await conn.exchange(request)
                samples.append((clock() - started) / 1e6)
                assert status == 200, (target, status)
        finally:
            gc.enable()
    finally:
        conn.close()
    return samples


def measure_gets(port: int, target: str, n: int, meter: CpuMeter | None, headers: str
             ) -> dict[str, Any]:
    """Quantiles of ``n`` timed reads of ``target``, with where the machine's CPU went
    meanwhile (when ``meter`` is given): the server, PostgreSQL (all of it, other
    databases too) and everything else, which should be next to nothing."""
    import uvloop

    if meter is None:
        return _quantiles(uvloop.run(_timed_gets(port, target, n, headers)))
    cpu: list[Cpu] = []
    with meter.measure(cpu.append):
        samples = uvloop.run(_timed_gets(port, target, n, headers))
    return {**_quantiles(samples), "cpu": asdict(cpu[0])}


def get_json(port: int, target: str, headers: str) -> Any:
    """One untimed GET, to check what the timed ones return."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        conn.request("GET", target, headers=header_dict(headers))
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (target, response.status, body[:300])
        return orjson.loads(body)
    finally:
        conn.close()


def query(path: str, params: dict[str, Any]) -> str:
    return f"{path}?{urlencode(params, quote_via=quote)}"


def run_all(port: int, database_url: str, entries: int, *,
            audit_events: int = AUDIT_EVENTS, reads: int = READS,
            meter: CpuMeter | None = None, headers: str = "") -> dict[str, Any]:
    token = secrets.token_hex(3)
    ns, actor = f"hist{token}", f"auditor-{token}"
    audit_ns, rare = f"audit{token}", f"rare-{token}"
    busy = [f"busy{n:02d}-{token}" for n in range(BUSY_ACTORS)]
    app: LedgerApplication = open_application(database_url, pool_size=2)
    writer = GroupCommitWriter(app, lambda _ns: Limits(), max_batch=SEED_BATCH)
    report: dict[str, Any] = {}
    try:
        # -- write everything first
        started = time.perf_counter()
        depth: dict[int, Sequence[Outcome]] = {}
        for versions in (10, 10_000):  # (i) one key with 10 versions, one with 10,000
            depth[versions] = write_commands(writer, [
                Put(ns, f"deep{versions}", document={"n": i, "pad": "x" * 100})
                for i in range(versions)], actor="bench")[:5]
        # (j) a namespace of `entries` keys, cut at a past position, changed after it
        cut = write_commands(writer, [Put(ns, f"many/{i:07d}", document={"i": i})
                              for i in range(entries)], actor=actor)[-1].position
        write_commands(writer, [Put(ns, f"many/{i:07d}", document={"i": i, "after_cut": True})
                        for i in range(0, entries, 10)], actor="bench")
        say(f"(i)-(j) written in {time.perf_counter() - started:.1f} s")
        # (k) the log up to `audit_events` events, by many actors
        before = _count_events(database_url)
        extra = max(0, audit_events - before)
        say(f"(k) seeding {extra:,} events through the writer ({SEED_WRITERS} processes, "
            f"batches of {SEED_BATCH:,}) on top of {before:,}")
        seed_s = (seed_log(database_url, SeedShape((audit_ns,)), extra, busy, rare)
                  if extra else 0.0)
        say(f"(k) seeded {extra:,} events in {seed_s:.1f} s ({extra / seed_s:,.0f}/s)"
            if seed_s > 0 else "(k) nothing to seed")
        quiet = quiesce(database_url)
        say(f"quiet after {quiet['followers_wait_s']} s (caught up after: "
            f"{_seconds(quiet['followers_caught_up_s'])}), VACUUM ANALYZE "
            f"{quiet['vacuum_analyze_s']} s")
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE actor = %s),"
                " count(*) FILTER (WHERE actor = %s), count(*) FILTER (WHERE namespace = %s)"
                " FROM entry_history", (rare, busy[1], audit_ns)).fetchone()
        assert row is not None
        events, rare_n, busy_n, ns_n = (int(v) for v in row)
        report["seeding"] = {"events_seeded": extra, "seconds": round(seed_s, 1),
                             "events_per_s": round(extra / seed_s) if seed_s > 0 else None,
                             "writers": SEED_WRITERS, "batch": SEED_BATCH, **quiet}

        # -- (i) entry at version 5 / as of version 5's time, 10 and 10,000 versions deep
        for versions, outcomes in depth.items():
            old = outcomes[4]  # version 5
            path = f"/v1/namespaces/{ns}/entries/deep{versions}"
            by_version = query(path, {"version": 5})
            by_time = query(path, {"as_of": old.recorded_at.isoformat()})
            for target in (by_version, by_time):
                body = get_json(port, target, headers)
                assert body["version"] == 5 and body["document"]["n"] == 4, body
            version_q = measure_gets(port, by_version, reads, meter, headers)
            time_q = measure_gets(port, by_time, reads, meter, headers)
            started = time.perf_counter()
            for _ in range(3):
                aggregate = app.entry(stream_id(ns, f"deep{versions}"), version=versions)
            library_ms = (time.perf_counter() - started) / 3 * 1000
            assert aggregate.state is not None and aggregate.state.version == versions
            report[f"entry_{versions}_versions"] = {
                "by_version": version_q, "by_as_of": time_q,
                "library_repository_get_ms": round(library_ms, 2)}
            say(f"(i) {versions:,} versions: ?version=5 {brief(version_q)}, ?as_of "
                f"{brief(time_q)}, repository.get {library_ms:.1f} ms")

        # -- (j) the cut: first page, then the whole of it, on one warm connection
        reader = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            reader.request("GET", "/v1/health")
            reader.getresponse().read()
            started = time.perf_counter()
            params: dict[str, Any] = {"position": cut, "prefix": "many/", "limit": 1000}
            first_ms, total = 0.0, 0
            while True:
                reader.request("GET", query(f"/v1/namespaces/{ns}/entries", params),
                               headers=header_dict(headers))
                response = reader.getresponse()
                page = orjson.loads(response.read())
                assert response.status == 200, page
                total += len(page["items"])
                if not first_ms:
                    first_ms = (time.perf_counter() - started) * 1000
                if page["next_cursor"] is None:
                    break
                params = {"cursor": page["next_cursor"], "prefix": "many/", "limit": 1000}
            full_ms = (time.perf_counter() - started) * 1000
        finally:
            reader.close()
        assert total == entries, (total, entries)
        report["namespace_cut"] = {"entries": entries, "first_page_ms": round(first_ms, 1),
                                   "full_cut_ms": round(full_ms, 1)}
        say(f"(j) cut over {entries:,} entries: first page {first_ms:.1f} ms, "
            f"all {full_ms:.1f} ms")

        # -- (k) the audit trail, first page of 100
        audit: dict[str, Any] = {"events_in_log": events}
        for label, params, matching in (
                ("one_actor", {"actor": rare, "limit": 100}, rare_n),
                ("busy_actor", {"actor": busy[1], "limit": 100}, busy_n),
                ("one_namespace", {"namespace": audit_ns, "limit": 100}, ns_n)):
            target = query("/v1/audit", params)
            assert len(get_json(port, target, headers)["items"]) == min(100, matching)
            audit[label] = {"matching_events": matching,
                            "first_page": measure_gets(port, target, AUDIT_READS, meter,
                                                     headers)}
            say(f"(k) audit {label} ({matching:,} of {events:,} events): "
                f"{brief(audit[label]['first_page'])}")
        report["audit"] = audit
    finally:
        app.close()
    return report


def cpu_shares(q: dict[str, Any]) -> str:
    """"server / PostgreSQL / other" CPU during a series, in % of one core."""
    cpu = q.get("cpu")
    if not cpu:
        return ""
    return " / ".join("—" if cpu.get(k) is None else f"{cpu[k]:.0f}"
                      for k in ("server", "postgres", "other"))


def brief(q: dict[str, Any]) -> str:
    cpu = f", CPU % server/PostgreSQL/other {cpu_shares(q)}" if q.get("cpu") else ""
    return f"p50 {q['p50_ms']} ms, p99 {q['p99_ms']} ms, max {q['max_ms']} ms{cpu}"


def _seconds(caught_up: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds} s" for name, seconds in sorted(caught_up.items())
                     ) or "none"


def summarize(report: dict[str, Any], *, quick: bool = False) -> list[str]:
    def ok(flag: bool) -> str:
        return "PASS" if flag else "FAIL"

    lines = ["", "Time travel and audit: sequential reads on one keep-alive connection, after "
             "a warm-up, once the server's followers of the log have caught up; CPU in % of "
             "one core while they ran (`other`: every other process on the machine, which "
             "should be near 0):", "",
             "| step | p50 ms | p99 ms | plain library | CPU % server / PostgreSQL / other "
             "| target | status |",
             "|---|---:|---:|---:|---:|---|---|"]
    for versions in (10, 10_000):
        r = report[f"entry_{versions}_versions"]
        for label, q in (("?version=5", r["by_version"]), ("?as_of=<v5 time>", r["by_as_of"])):
            lines.append(f"| (i) entry with {versions:,} versions, {label} | {q['p50_ms']} "
                         f"| {q['p99_ms']} | repository.get at depth {versions:,}: "
                         f"{r['library_repository_get_ms']} ms | {cpu_shares(q)} | p99 < 5 ms "
                         f"| {ok(q['p99_ms'] < 5)} |")
    cut = report["namespace_cut"]
    lines.append(f"| (j) namespace cut over {cut['entries']:,} entries, first page of 1,000 "
                 f"| {cut['first_page_ms']} | | | | < 200 ms | {ok(cut['first_page_ms'] < 200)} |")
    lines.append(f"| (j) the whole cut, paged | {cut['full_cut_ms']} | | | | < 3,000 ms "
                 f"| {ok(cut['full_cut_ms'] < 3000)} |")
    audit = report["audit"]
    events = audit["events_in_log"]
    enough = events >= AUDIT_EVENTS
    note = "" if enough else (" (quick run)" if quick else f" (only {events:,} events)")
    for label, what, target in (
            ("one_actor", "one actor", "< 100 ms over 1M events"),
            ("busy_actor", "one busier actor", "< 100 ms over 1M events"),
            ("one_namespace", "one namespace (not selective)", "(for reference)")):
        q = audit[label]["first_page"]
        status = "—" if target.startswith("(") else ok(q["p99_ms"] < 100 and enough) + note
        lines.append(f"| (k) audit, {what} ({audit[label]['matching_events']:,} events), "
                     f"first page of 100, over {events:,} events | {q['p50_ms']} "
                     f"| {q['p99_ms']} | | {cpu_shares(q)} | {target} | {status} |")
    seeding = report.get("seeding", {})
    if seeding.get("events_seeded"):
        lines += ["", f"(k) seeded {seeding['events_seeded']:,} events through the ledger's "
                  f"writer ({seeding['writers']} processes, batches of {seeding['batch']:,}) in "
                  f"{seeding['seconds']} s ({seeding['events_per_s']:,}/s); then waited "
                  f"{seeding['followers_wait_s']} s more for the server's followers of the "
                  f"log to catch up ({_seconds(seeding['followers_caught_up_s'])}) and ran "
                  f"VACUUM ANALYZE ({seeding['vacuum_analyze_s']} s) before the timed reads."]
    return lines
