"""The backups part of ``make bench``: ``ssot verify``, ``ssot export`` and ``ssot import``
over a log of a stated size.

- (o) a log of 200,000 events (quick run: 50,000) in a database of the step's own: 20,000
  entries of four namespaces, each written ~10 times, its versions spread over the log,
  ~150-byte configuration documents, 20 actors, written through the ledger's writer
  (``seeding``: two processes, batches of 2,000); then its Merkle leaves
  and a signed digest every 1,000 events, recorded by the digester (in the bench's
  process, Ed25519 key of its own, nothing published), and VACUUM ANALYZE. Then, each
  run as the operator runs it (its own process, ``--json``), timed by what it reports:
  - ``ssot verify`` of the whole log (every hash, chain, copy, leaf, digest and signature);
  - ``ssot export --out FILE``: the whole log from one snapshot;
  - ``ssot import FILE`` into a new, empty database: every line checked, the events, leaves,
    nodes, digests and the inline views stored in one transaction (the CLI's rate), and
    the same end to end with the asynchronous views rebuilt after it (the process's wall
    time); ``SSOT_NATS_URL`` is not given to it, so it touches no NATS KV bucket;
  - then ``ssot verify`` of the imported database, and its tables compared with the
    source's (row counts and the last event's hash).

Every step records where the CPU went (server — idle here —, PostgreSQL, the CLI process
and everything else), in % of one core.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from .database import with_database
from .measuring import CpuMeter, cpu_shares, measured, say
from .seeding import SeedShape, seed_log

EVENTS, EVENTS_QUICK = 200_000, 50_000
KEYS, KEYS_QUICK = 20_000, 4_000  # ~10 versions per entry
NAMESPACES = 4
ACTORS = 20
DIGEST_EVERY = 1_000  # events per digest, the digester's default

# Targets from the issue.
VERIFY_RATE, EXPORT_RATE, IMPORT_RATE = 50_000, 50_000, 20_000

#: The tables an import must reproduce, each with the query whose answer is compared.
COMPARED = {
    "ssot_events": "SELECT count(*), max(notification_id), sum(originator_version)"
                   " FROM ssot_events",
    "entries": "SELECT count(*), sum(version), sum(position) FROM entries",
    "entry_history": "SELECT count(*), sum(version), sum(position) FROM entry_history",
    "merkle_leaves": "SELECT count(*), max(idx) FROM merkle_leaves",
    "merkle_nodes": "SELECT count(*), max(level) FROM merkle_nodes",
    "digests": "SELECT count(*), max(seq), (SELECT encode(hash, 'hex') FROM digests"
               " ORDER BY seq DESC LIMIT 1) FROM digests",
    "last event": "SELECT encode(sha256(state), 'hex') FROM ssot_events"
                  " ORDER BY notification_id DESC LIMIT 1",
}


def _ssot(*args: str, database_url: str, timeout: float) -> tuple[Any, float]:
    """``ssot <args>`` in its own process against ``database_url`` (no NATS): its JSON
    answer and the process's wall time."""
    ssot = Path(sys.executable).parent / "ssot"
    base = [str(ssot)] if ssot.is_file() else [sys.executable, "-m", "nexus_ssot.ops.cli"]
    env = {k: v for k, v in os.environ.items() if k != "SSOT_NATS_URL"}
    env["SSOT_DATABASE_URL"] = database_url
    started = time.perf_counter()
    done = subprocess.run([*base, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"ssot {' '.join(args)} exited with {done.returncode}:\n"
                           f"{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout), wall


async def _digest(database_url: str, events: int) -> None:
    """Record the leaves of the whole log and a signed digest every ``DIGEST_EVERY``
    events, as ``ssot serve``'s digester does, then stop."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from nexus_ssot.integrity.digests import Digester, Signer

    digester = Digester(database_url, None, publish=False, every_events=DIGEST_EVERY,
                        every_seconds=0.5, signer=Signer(Ed25519PrivateKey.generate()),
                        poll_interval=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(digester.run(stop))
    try:
        async with await psycopg.AsyncConnection.connect(database_url,
                                                         autocommit=True) as conn:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not task.done():
                cur = await conn.execute("SELECT coalesce(max(size), 0) FROM digests")
                row = await cur.fetchone()
                if row and row[0] >= events:
                    break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError(f"the digester did not cover {events:,} events: "
                                   f"{digester.progress.last_error}")
    finally:
        stop.set()
        await task


def _seed(database_url: str, events: int, keys: int) -> dict[str, Any]:
    from nexus_ssot.ledger.migrate import migrate

    migrate(database_url)
    token = secrets.token_hex(3)
    shape = SeedShape(tuple(f"backup{token}-{n}" for n in range(NAMESPACES)), keys=keys,
                      wide=True)
    seed_s = seed_log(database_url, shape, events,
                      [f"actor{n:02d}-{token}" for n in range(ACTORS)], f"rare-{token}")
    started = time.perf_counter()
    asyncio.run(_digest(database_url, events))
    digest_s = time.perf_counter() - started
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in ("ssot_events", "entry_history", "entries", "merkle_leaves"):
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        row = conn.execute("SELECT pg_total_relation_size('ssot_events'),"
                           " (SELECT count(*) FROM digests)").fetchone()
    assert row is not None
    return {"events": events, "keys": keys, "namespaces": NAMESPACES,
            "seed_s": round(seed_s, 1), "seed_events_per_s": round(events / seed_s),
            "digest_s": round(digest_s, 1), "digests": int(row[1]),
            "events_table_mb": round(row[0] / 2**20)}


def _facts(database_url: str) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        return {name: [str(v) for v in conn.execute(query.encode()).fetchone() or ()]
                for name, query in COMPARED.items()}


def run_all(database_url: str, meter: CpuMeter, *, events: int = EVENTS,
            keys: int = KEYS) -> dict[str, Any]:
    """(o): the log in a database of its own, then verify, export and import it."""
    token = secrets.token_hex(4)
    source_db, target_db = f"ssot_bench_backup_{token}", f"ssot_bench_restore_{token}"
    source, target = with_database(database_url, source_db), with_database(database_url,
                                                                           target_db)
    timeout = events / 1000 + 300
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"ssot-bench-backup-{token}"
    work.mkdir()
    path = work / "full.ndjson.gz"
    report: dict[str, Any] = {}
    try:
        with psycopg.connect(database_url, autocommit=True) as admin:
            for name in (source_db, target_db):
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        say(f"(o) seeding {events:,} events ({keys:,} entries of {NAMESPACES} namespaces, "
            f"~{events // keys} versions each) into {source_db}, then its digests")
        report["log"] = _seed(source, events, keys)
        say(f"(o) seeded in {report['log']['seed_s']} s, digested in "
            f"{report['log']['digest_s']} s ({report['log']['digests']} digests)")

        def step(name: str, *args: str, url: str) -> dict[str, Any]:
            (answer, wall), cpu = measured(meter, functools.partial(
                _ssot, *args, database_url=url, timeout=timeout), children_are_load=True)
            return {"answer": answer, "wall_s": round(wall, 2), "cpu": cpu}

        verify = step("verify", "verify", "--json", url=source)
        answer = verify["answer"]
        assert answer["ok"], answer["first_problem"]
        report["verify"] = {"events": answer["events"], "seconds": answer["seconds"],
                            "events_per_s": answer["events_per_second"],
                            "signatures_checked": answer["signatures_checked"],
                            "digests_checked": answer["digests_checked"],
                            "wall_s": verify["wall_s"], "cpu": verify["cpu"]}
        say(f"(o) ssot verify: {answer['events']:,} events in {answer['seconds']} s "
            f"({answer['events_per_second']:,}/s)")

        export = step("export", "--json", "export", "--out", str(path), url=source)
        answer = export["answer"]
        report["export"] = {"events": answer["events"], "seconds": round(answer["seconds"], 2),
                            "events_per_s": answer["rate"], "bytes": answer["bytes"],
                            "digests": answer["digests"], "wall_s": export["wall_s"],
                            "cpu": export["cpu"]}
        say(f"(o) ssot export: {answer['events']:,} events in {answer['seconds']:.2f} s "
            f"({answer['rate']:,}/s), {answer['bytes'] / 2**20:,.1f} MB")

        imported = step("import", "--json", "import", str(path), url=target)
        [answer] = imported["answer"]
        end_to_end = imported["wall_s"]
        report["import"] = {"events": answer["events"], "seconds": round(answer["seconds"], 2),
                            "events_per_s": answer["rate"],
                            "views_s": round(answer["views_seconds"], 2),
                            "wall_s": end_to_end,
                            "end_to_end_events_per_s": round(answer["events"] / end_to_end),
                            "cpu": imported["cpu"]}
        say(f"(o) ssot import: {answer['events']:,} events in {answer['seconds']:.2f} s "
            f"({answer['rate']:,}/s); with the asynchronous views rebuilt, the process took "
            f"{end_to_end} s ({report['import']['end_to_end_events_per_s']:,}/s)")

        check, _ = _ssot("verify", "--json", database_url=target, timeout=timeout)
        source_facts, target_facts = _facts(source), _facts(target)
        report["restored"] = {"verify_ok": check["ok"],
                              "first_problem": check["first_problem"],
                              "tables_equal": source_facts == target_facts,
                              "differences": {k: [source_facts[k], target_facts[k]]
                                              for k in COMPARED
                                              if source_facts[k] != target_facts[k]}}
        say(f"(o) the restored database verifies: {check['ok']}; its tables equal the "
            f"source's: {source_facts == target_facts}")
    finally:
        path.unlink(missing_ok=True)
        work.rmdir()
        with psycopg.connect(database_url, autocommit=True) as admin:
            for name in (source_db, target_db):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                              .format(sql.Identifier(name)))
    return report


# --- reporting -----------------------------------------------------------------------------


def evaluate(report: dict[str, Any], *, quick: bool = False) -> list[dict[str, Any]]:
    """One row per line of the table: what was measured, the target and whether it was met."""
    log = report["log"]
    enough = log["events"] >= EVENTS
    note = "" if enough else (" (quick run)" if quick else f" (only {log['events']:,} events)")
    restored = report["restored"]
    intact = restored["verify_ok"] and restored["tables_equal"]

    def judged(step: str, rate: float, target: int, seconds: float, cpu: dict[str, Any],
               extra: str = "") -> dict[str, Any]:
        passed = bool(rate >= target and enough)
        return {"step": step, "value": rate, "unit": "events/s", "seconds": seconds,
                "cpu": cpu, "target": f"≥ {target:,} events/s", "passed": passed,
                "status": ("PASS" if passed else "FAIL") + note + extra}

    verify, export, imported = report["verify"], report["export"], report["import"]
    return [
        judged("(o) `ssot verify`, the whole log", verify["events_per_s"], VERIFY_RATE,
               verify["seconds"], verify["cpu"]),
        judged("(o) `ssot export --out FILE`", export["events_per_s"], EXPORT_RATE,
               export["seconds"], export["cpu"]),
        judged("(o) `ssot import FILE` into an empty database (checks, events, tree, "
               "inline views; one transaction)", imported["events_per_s"], IMPORT_RATE,
               imported["seconds"], imported["cpu"],
               "" if intact else " (the restored database differs or does not verify)"),
        {"step": "(o) the same, end to end: the process, with the asynchronous views "
                 "rebuilt", "value": imported["end_to_end_events_per_s"],
         "unit": "events/s", "seconds": imported["wall_s"], "cpu": {},
         "target": "(for reference)", "status": "—"},
    ]


def summarize(report: dict[str, Any], *, quick: bool = False) -> list[str]:
    rows = evaluate(report, quick=quick)
    report["summary"] = rows
    log, export, restored = report["log"], report["export"], report["restored"]
    lines = ["", f"Backups: verify, export and import of a log of {log['events']:,} events "
             f"({log['keys']:,} entries, {log['namespaces']} namespaces, {log['digests']} "
             f"signed digests; events table {log['events_table_mb']:,} MB), each the CLI in "
             "its own process; CPU in % of one core (client: the CLI; `other`: every other "
             "process on the machine):", "",
             "| step | result | seconds | CPU % server / PostgreSQL / client / other "
             "| target | status |",
             "|---|---:|---:|---:|---|---|"]
    for row in rows:
        lines.append(f"| {row['step']} | {row['value']:,.0f} {row['unit']} "
                     f"| {row['seconds']:,} | {cpu_shares(row['cpu']) if row['cpu'] else ''} "
                     f"| {row['target']} | {row['status']} |")
    lines += ["", f"(o) seeded {log['events']:,} events through the writer in {log['seed_s']} "
              f"s ({log['seed_events_per_s']:,}/s) and digested them in {log['digest_s']} s; "
              f"the export file is {export['bytes'] / 2**20:,.1f} MB; the import rebuilt the "
              f"asynchronous views in {report['import']['views_s']} s; the restored "
              f"database {'verifies' if restored['verify_ok'] else 'does NOT verify'} and "
              f"its tables {'equal' if restored['tables_equal'] else 'DIFFER from'} the "
              "source's (counts, positions, digests, the last event)."]
    return lines
