"""The time-travel and audit part of ``make bench``.

- an entry read at an old version and as of an old time, for keys with 10 and with
  10,000 versions (it must stay flat as history grows), beside the plain library's
  ``repository.get`` folding the same stream without snapshots;
- a namespace cut as of a past position over N entries: the first page of 1,000 and the
  whole cut paged through;
- the audit trail of one actor: the first page.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from nexus_ssot.ledger.domain import Context, Limits, Put, stream_id
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.writer import GroupCommitWriter

HOST = "127.0.0.1"


def _context(actor: str) -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor=actor,
                   correlation_id="bench")


def _quantiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50_ms": round(ordered[len(ordered) // 2], 3),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)}


def _write(writer: GroupCommitWriter, commands: list[Put], actor: str) -> list[Any]:
    outcomes = []
    for start in range(0, len(commands), 500):
        futures = writer.write_batch([(c, _context(actor), None)
                                      for c in commands[start:start + 500]])
        outcomes += [f.result() for f in futures]
    return outcomes


async def _timed_gets(port: int, path: str, params: dict[str, Any], n: int) -> list[float]:
    samples = []
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}") as client:
        for _ in range(n):
            started = time.perf_counter()
            response = await client.get(path, params=params)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    return samples


def run_all(port: int, database_url: str, entries: int, reads: int = 500) -> dict[str, Any]:
    token = secrets.token_hex(3)
    ns, actor = f"hist{token}", f"auditor-{token}"
    app = open_application(database_url, pool_size=2)
    writer = GroupCommitWriter(app, lambda _ns: Limits())
    report: dict[str, Any] = {}
    try:
        # (i) one key with 10 versions, one with 10,000
        depth: dict[int, Any] = {}
        for versions in (10, 10_000):
            key = f"deep{versions}"
            outcomes = _write(writer, [Put(ns, key, document={"n": i, "pad": "x" * 100})
                                       for i in range(versions)], actor="bench")
            depth[versions] = outcomes
        for versions, outcomes in depth.items():
            old = outcomes[4]  # version 5
            path = f"/v1/namespaces/{ns}/entries/deep{versions}"
            by_version = asyncio.run(_timed_gets(port, path, {"version": 5}, reads))
            by_time = asyncio.run(_timed_gets(
                port, path, {"as_of": old.recorded_at.isoformat()}, reads))
            started = time.perf_counter()
            for _ in range(3):
                aggregate = app.entry(stream_id(ns, f"deep{versions}"), version=versions)
            library_ms = (time.perf_counter() - started) / 3 * 1000
            assert aggregate.state is not None and aggregate.state.version == versions
            report[f"entry_{versions}_versions"] = {
                "by_version": _quantiles(by_version), "by_as_of": _quantiles(by_time),
                "library_repository_get_ms": round(library_ms, 2)}
        # (j) a namespace of `entries` keys, cut at a past position
        outcomes = _write(writer, [Put(ns, f"many/{i:07d}", document={"i": i})
                                   for i in range(entries)], actor=actor)
        cut = outcomes[-1].position
        _write(writer, [Put(ns, f"many/{i:07d}", document={"i": -i})
                        for i in range(0, entries, 10)], actor="bench")  # later changes

        async def walk() -> tuple[float, float, int]:
            async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}",
                                         timeout=60) as client:
                started = time.perf_counter()
                params: dict[str, Any] = {"position": cut, "prefix": "many/", "limit": 1000}
                first_ms, total = 0.0, 0
                while True:
                    page = (await client.get(f"/v1/namespaces/{ns}/entries",
                                             params=params)).json()
                    total += len(page["items"])
                    if not first_ms:
                        first_ms = (time.perf_counter() - started) * 1000
                    if page["next_cursor"] is None:
                        return first_ms, (time.perf_counter() - started) * 1000, total
                    params = {"cursor": page["next_cursor"], "prefix": "many/",
                              "limit": 1000}

        first_ms, full_ms, total = asyncio.run(walk())
        assert total == entries, (total, entries)
        report["namespace_cut"] = {"entries": entries, "first_page_ms": round(first_ms, 1),
                                   "full_cut_ms": round(full_ms, 1)}
        # (k) the audit trail of one actor, first page
        audit = asyncio.run(_timed_gets(port, "/v1/audit", {"actor": actor, "limit": 100}, 50))
        with app.recorder.datastore.get_connection() as conn:
            row = conn.execute("SELECT count(*) AS n FROM entry_history").fetchone()
        report["audit_one_actor"] = {"events_in_log": int(row["n"]) if row else 0,
                                     "first_page": _quantiles(audit)}
    finally:
        app.close()
    return report


def summarize(report: dict[str, Any]) -> list[str]:
    def ok(flag: bool) -> str:
        return "PASS" if flag else "FAIL"

    lines = ["", "Time travel and audit:", "",
             "| step | p50 ms | p99 ms | plain library | target | status |",
             "|---|---:|---:|---:|---|---|"]
    for versions in (10, 10_000):
        r = report[f"entry_{versions}_versions"]
        for label, q in (("?version=5", r["by_version"]), ("?as_of=<v5 time>", r["by_as_of"])):
            lines.append(f"| (i) entry with {versions:,} versions, {label} | {q['p50_ms']} "
                         f"| {q['p99_ms']} | repository.get at depth {versions:,}: "
                         f"{r['library_repository_get_ms']} ms | p99 < 5 ms "
                         f"| {ok(q['p99_ms'] < 5)} |")
    cut = report["namespace_cut"]
    lines.append(f"| (j) namespace cut over {cut['entries']:,} entries, first page of 1,000 "
                 f"| {cut['first_page_ms']} | | | < 200 ms | {ok(cut['first_page_ms'] < 200)} |")
    lines.append(f"| (j) the whole cut, paged | {cut['full_cut_ms']} | | | < 3,000 ms "
                 f"| {ok(cut['full_cut_ms'] < 3000)} |")
    audit = report["audit_one_actor"]
    lines.append(f"| (k) audit, one actor, first page, over {audit['events_in_log']:,} events "
                 f"| {audit['first_page']['p50_ms']} | {audit['first_page']['p99_ms']} | "
                 f"| < 100 ms over 1M events | {ok(audit['first_page']['p99_ms'] < 100)} |")
    return lines
