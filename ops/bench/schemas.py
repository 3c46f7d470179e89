"""(u) schemas in ``make bench`` (``--only schema``): validating a document on the write
path with ``jsonschema-rs`` beside the reference ``jsonschema`` on the ledger's own
documents (~0.2, ~2 and ~10 KB against a realistic schema: nested objects, patterns,
enums, a local and a shared ``$ref``), PUT @16 into a namespace without and with that
schema, a dry run of a schema change over a seeded namespace, and the quality view's
re-validation rate (its ``apply`` over the namespace, in a transaction rolled back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

import httpx
import psycopg

from nexus_ssot.ledger.schemas.compiler import compile_schema
from nexus_ssot.projections.runtime import Tables
from nexus_ssot.projections.schema_quality import SchemaQuality

from .database import Monitor
from .http_load import HttpSpec, describe, http_step
from .measuring import HOST, NAMESPACE, CpuMeter, header_dict, quantiles_ms, say
from .seeding import SeedShape, seed_log
from .server import Server

#: Targets from the issue.
P99_MS, PUT_RATIO, DRY_RUN_S, REVALIDATE_PER_S = 1.0, 0.9, 10.0, 20_000
ENTRIES, ENTRIES_QUICK = 100_000, 10_000
SAMPLES, SAMPLES_QUICK = 5_000, 1_000
SEEDED = "schemabench"
SHARED = "bench-port"
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["service", "region", "host", "port"],
    "properties": {
        "i": {"type": "integer", "minimum": 0},
        "service": {"type": "string", "pattern": "^[a-z][a-z0-9-]{1,62}$"},
        "region": {"enum": ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2"]},
        "host": {"type": "string", "pattern": "^[a-z0-9.-]+\\.internal$", "maxLength": 253},
        "port": {"$ref": f"urn:ssot:schemas:{SHARED}"},
        "pool": {"$ref": "#/$defs/pool"},
        "flags": {"type": "array", "uniqueItems": True,
                  "items": {"enum": ["tls", "audit", "canary", "debug"]}},
        "revision": {"type": "integer", "minimum": 0},
        "endpoints": {"type": "array", "maxItems": 500, "items": {"$ref": "#/$defs/endpoint"}},
        "labels": {"type": "object", "propertyNames": {"pattern": "^[a-z][a-z0-9_.-]*$"},
                   "additionalProperties": {"type": "string", "maxLength": 63}},
    },
    "additionalProperties": False,
    "$defs": {
        "pool": {"type": "object", "required": ["min", "max"], "additionalProperties": False,
                 "properties": {"min": {"type": "integer", "minimum": 0},
                                "max": {"type": "integer", "minimum": 1, "maximum": 1024}}},
        "endpoint": {
            "type": "object", "required": ["name", "url", "method"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string", "pattern": "^[a-z][a-z0-9_-]*$"},
                           "url": {"type": "string",
                                   "pattern": "^https://[a-z0-9.-]+(:[0-9]+)?/[a-z0-9/_-]*$"},
                           "method": {"enum": ["GET", "PUT", "POST", "DELETE", "PATCH"]},
                           "timeout_ms": {"type": "integer", "minimum": 1,
                                          "maximum": 60_000}}},
    },
}


def document(endpoints: int, seq: int = 1) -> dict[str, Any]:
    """A service's configuration with ``endpoints`` endpoints (0: ~0.2 KB, 10: ~1.2 KB,
    100: ~10 KB)."""
    return {
        "service": "payments-api", "region": "eu-west-1", "host": "db-007.internal",
        "port": 5432, "pool": {"min": 2, "max": 32}, "flags": ["tls", "audit"],
        "revision": seq,
        "endpoints": [{"name": f"route_{n}", "url": f"https://api-{n}.internal:8443/v1/pay/{n}",
                       "method": ("GET", "PUT", "POST")[n % 3], "timeout_ms": 250 + n}
                      for n in range(endpoints)],
        "labels": {f"team.{n}": f"payments-{n}" for n in range(endpoints // 4)},
    }


#: Rounds of each validation measurement: the round with the lowest p99 is reported, so
#: another process preempting this one (the machine has two cores) is not counted as the
#: validator's time; every round's p99 is kept in the results.
ROUNDS = 3


def _quantiles(check: Callable[[Any], bool], documents: list[Any]) -> dict[str, Any]:
    rounds = []
    for _ in range(ROUNDS):
        samples: list[int] = []
        for doc in documents:
            started = time.perf_counter_ns()
            ok = check(doc)
            samples.append(time.perf_counter_ns() - started)
            assert ok, "a bench document does not conform"
        p50, p99, mean, top = (None if q is None else round(q, 4)
                               for q in quantiles_ms(samples))
        rounds.append({"p50_ms": p50, "p99_ms": p99, "mean_ms": mean, "max_ms": top,
                       "per_s": round(len(samples) / (sum(samples) / 1e9))})
    best = min(rounds, key=lambda r: r["p99_ms"] or 0.0)
    return {**best, "p99_ms_rounds": [r["p99_ms"] for r in rounds]}


def validators(quick: bool) -> dict[str, Any]:
    """Validation of one document, jsonschema-rs (compiled as the writer does) beside the
    reference jsonschema, for each document size."""
    import jsonschema  # a dev dependency: the bench's only use of it
    import referencing
    import referencing.jsonschema

    started = time.perf_counter()
    ours = compile_schema(SCHEMA, {SHARED: PORT}, assert_formats=False)
    compile_ms = round((time.perf_counter() - started) * 1000, 3)
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(
        f"urn:ssot:schemas:{SHARED}",
        referencing.Resource.from_contents(PORT, referencing.jsonschema.DRAFT202012))
    reference = jsonschema.Draft202012Validator(SCHEMA, registry=registry)
    samples = SAMPLES_QUICK if quick else SAMPLES
    sizes: dict[str, Any] = {}
    for endpoints in (0, 10, 100):
        documents = [document(endpoints, n) for n in range(samples)]
        size = len(httpx.Request("PUT", "http://x", json=documents[0]).content)
        for check in (ours.conforms, reference.is_valid):  # warm both
            check(documents[0])
        sizes[str(endpoints)] = {
            "bytes": size,
            "jsonschema_rs": _quantiles(ours.conforms, documents),
            "jsonschema": _quantiles(reference.is_valid, documents[:max(200, samples // 5)]),
        }
    return {"compile_ms": compile_ms, "sizes": sizes}


def writer_cost(quick: bool) -> dict[str, Any]:
    """The group-commit writer's time per PUT (deciding, validating, the in-memory store's
    append), into namespaces without and with the schema, batches of 16 as at PUT @16:
    the CPU the schema adds where every write is decided, apart from the machine's other
    work. Best of three rounds each, alternating."""
    import uuid
    from datetime import UTC, datetime

    from nexus_ssot.ledger.addressing import SCHEMAS_NAMESPACE
    from nexus_ssot.ledger.commands import Context, Put, SetSchema
    from nexus_ssot.ledger.documents import Limits
    from nexus_ssot.ledger.memory_store import MemoryEventStore
    from nexus_ssot.ledger.schemas.records import SchemaRecord, definition_key, namespace_key
    from nexus_ssot.ledger.writer import GroupCommitWriter

    def ctx() -> Context:
        return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="bench",
                       correlation_id="bench")

    writer = GroupCommitWriter(MemoryEventStore(), lambda _ns: Limits())
    for command in (SetSchema(SCHEMAS_NAMESPACE, definition_key(SHARED),
                              record=SchemaRecord(PORT).document()),
                    SetSchema(SCHEMAS_NAMESPACE, namespace_key("with"),
                              record=SchemaRecord(SCHEMA, {SHARED: 1}).document())):
        writer.write_batch([(command, ctx(), None)])[0].result()
    commands = 2_000 if quick else 10_000
    best: dict[str, float] = {}
    for _ in range(3):
        for ns in ("without", "with"):
            started = time.perf_counter()
            for start in range(0, commands, 16):
                futures = writer.write_batch([
                    (Put(ns, f"k{n % 16}", document=document(0, n)), ctx(), None)
                    for n in range(start, start + 16)])
                for future in futures:
                    future.result()
            per = (time.perf_counter() - started) / commands * 1e6
            best[ns] = min(per, best.get(ns, per))
    return {"commands": commands, "without_us": round(best["without"], 1),
            "with_us": round(best["with"], 1),
            "ratio": round(best["without"] / best["with"], 3)}


def put16(monitor: Monitor, server: Server, meter: CpuMeter, pool: ProcessPoolExecutor,
          client: httpx.Client, token: str, duration: float, headers: str
          ) -> dict[str, Any]:
    """PUT @16 into the bench namespace without and with the schema, in the order
    without, with, with, without (a machine whose speed drifts during the step favours
    neither); the schema is removed at the end."""
    client.put(f"/v1/schemas/{SHARED}", json=PORT).raise_for_status()
    steps: dict[str, Any] = {}
    for n, label in enumerate(("without", "with", "with", "without")):
        path = f"/v1/namespaces/{NAMESPACE}/schema"
        if n == 1:
            client.put(path, json=SCHEMA,
                       params={"allow_existing_violations": "true"}).raise_for_status()
        if n == 3:
            client.delete(path).raise_for_status()
        say(f"(u) PUT If-Match @16 {label} a schema, {duration:g} s")
        result = http_step(monitor, server, meter, pool, HttpSpec(
            f"schema_{label}_{n}", "PUT", server.port, f"{token}-schema-{n}", 16, duration,
            headers=headers))
        steps.setdefault(label, []).append(asdict(result))
        say(f"(u) done: {describe(result)}")
    return steps


async def _revalidate(database_url: str, position: int) -> float:
    """Seconds the quality view's ``apply`` takes over the range holding the schema's
    event (the whole namespace re-validated), in a transaction rolled back."""
    view = SchemaQuality()
    tables = Tables(SchemaQuality.tables, suffix="_bench")
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(view.ddl(tables).encode())
        started = time.perf_counter()
        await view.apply(conn, position - 1, position, tables)
        elapsed = time.perf_counter() - started
        await conn.rollback()
    return elapsed


def seeded(client: httpx.Client, database_url: str, entries: int) -> dict[str, Any]:
    """The dry run over ``entries`` seeded entries, then the re-validation rate."""
    say(f"(u) seeding {entries:,} entries into {SEEDED}")
    seed_log(database_url, SeedShape((SEEDED,), wide=True), entries, ["bench-seed"],
             "bench-rare")
    started = time.perf_counter()
    dry = client.put(f"/v1/namespaces/{SEEDED}/schema", json=SCHEMA,
                     params={"dry_run": "true", "limit": 10}, timeout=600)
    dry_s = time.perf_counter() - started
    dry.raise_for_status()
    report = dry.json()
    say(f"(u) dry run over {report['entries']:,} entries: {dry_s:.2f} s "
        f"({report['conforming']:,} conform)")
    done = client.put(f"/v1/namespaces/{SEEDED}/schema", json=SCHEMA, timeout=600)
    done.raise_for_status()
    seconds = asyncio.run(_revalidate(database_url, done.json()["position"]))
    say(f"(u) re-validation of {entries:,} entries: {seconds:.2f} s "
        f"({entries / seconds:,.0f}/s)")
    return {"entries": report["entries"], "conforming": report["conforming"],
            "dry_run_s": round(dry_s, 3), "revalidate_s": round(seconds, 3),
            "revalidate_per_s": round(entries / seconds) if seconds else None}


def run_all(monitor: Monitor, server: Server, database_url: str, meter: CpuMeter,
            pool: ProcessPoolExecutor, *, token: str, duration: float, quick: bool,
            headers: str) -> dict[str, Any]:
    say("(u) schemas: validation in process, PUT @16 without and with a schema, dry run, "
        "re-validation")
    measured: dict[str, Any] = {"validation": validators(quick),
                                "writer": writer_cost(quick)}
    with httpx.Client(base_url=f"http://{HOST}:{server.port}", headers=header_dict(headers),
                      timeout=60) as client:
        measured["put_16"] = put16(monitor, server, meter, pool, client, token, duration,
                                   headers)
        measured["seeded"] = seeded(client, database_url,
                                    ENTRIES_QUICK if quick else ENTRIES)
    measured["summary_md"] = summarize(measured, quick=quick)
    return measured


def summarize(m: dict[str, Any], *, quick: bool = False) -> list[str]:
    def ok(flag: bool) -> str:
        return "PASS" if flag else "FAIL"

    lines = ["", "Schemas: one document validated in process (jsonschema-rs as the writer "
             "uses it, compiled once; the reference jsonschema beside it), PUT @16 into a "
             "namespace without and with the schema, a dry run and the quality view's "
             "re-validation over a seeded namespace:", "",
             "| step | result | jsonschema (reference) | target | status |",
             "|---|---:|---:|---|---|"]
    for endpoints, size in m["validation"]["sizes"].items():
        rs, ref = size["jsonschema_rs"], size["jsonschema"]
        lines.append(f"| (u) validate a {size['bytes']:,}-byte document ({endpoints} "
                     f"endpoints), p50 / p99 ms (best of {ROUNDS} rounds) "
                     f"| {rs['p50_ms']} / {rs['p99_ms']} "
                     f"| {ref['p50_ms']} / {ref['p99_ms']} | p99 < {P99_MS:g} ms "
                     f"| {ok(rs['p99_ms'] is not None and rs['p99_ms'] < P99_MS)} |")
    put = m["put_16"]
    without = sum(r["requests_per_s"] for r in put["without"]) / len(put["without"])
    with_ = sum(r["requests_per_s"] for r in put["with"]) / len(put["with"])
    ratio = round(with_ / without, 2) if without else None
    clean = all(r["non_2xx"] == 0 for r in [*put["with"], *put["without"]])
    lines.append(f"| (u) PUT @16 with / without the schema (means of two steps each), "
                 f"req/s | {with_:,.0f} / {without:,.0f} ({ratio}x) | | ≥ {PUT_RATIO}x, 0 "
                 "non-2xx "
                 f"| {ok(ratio is not None and ratio >= PUT_RATIO and clean)} |")
    w = m["writer"]
    lines.append(f"| (u) the writer per PUT in batches of 16 (in process, in-memory store), "
                 f"µs with / without the schema | {w['with_us']} / {w['without_us']} "
                 f"({w['ratio']}x the rate) | | ≥ {PUT_RATIO}x | {ok(w['ratio'] >= PUT_RATIO)} |")
    s = m["seeded"]
    note = " (quick run)" if quick else ""
    lines.append(f"| (u) dry run over {s['entries']:,} entries{note}, s | {s['dry_run_s']} "
                 f"| | < {DRY_RUN_S:g} s over 100,000 | "
                 f"{ok(s['dry_run_s'] < DRY_RUN_S * s['entries'] / ENTRIES)} |")
    lines.append(f"| (u) quality view re-validation, entries/s | {s['revalidate_per_s']:,} "
                 f"| | ≥ {REVALIDATE_PER_S:,} | {ok(s['revalidate_per_s'] >= REVALIDATE_PER_S)} |")
    lines.append(f"| (u) compiling the schema, ms | {m['validation']['compile_ms']} | | | |")
    return lines
