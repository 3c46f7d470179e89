"""Steps (f)-(h) of ``make bench``: raw JetStream beside the ledger's broadcaster.

- raw JetStream: publish → push-delivery latency at a steady rate, and publish
  throughput with 64 acknowledgements in flight (the practical limits here);
- the ledger: commit → delivery latency to a NATS subscriber at a steady 1,000 writes/s
  (commit time is the event's ``time``, the database clock, on the same host), and the
  catch-up rate of a cold broadcaster over the whole backlog the run has written.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime
from typing import Any

import nats
import orjson
import psycopg
from nats.js.api import DeliverPolicy, StreamConfig

from nexus_ssot.ledger.broadcaster import Broadcaster

from .measuring import (
    HOST,
    CpuMeter,
    HttpConnection,
    fmt,
    latency_quantiles,
    measured,
    verdict,
)


async def jetstream_baseline(nats_url: str, seconds: float, rate: int = 1000,
                             burst: int = 20_000, in_flight: int = 64) -> dict[str, Any]:
    """Raw JetStream on the same server: latency at ``rate``/s, throughput at 64 in flight."""
    token = secrets.token_hex(4)
    stream, subject = f"SSOT_BENCH_RAW_{token}", f"rawbench{token}.x"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"rawbench{token}.>"]))
    try:
        latencies: list[float] = []
        done = asyncio.Event()
        expected = int(seconds * rate)

        async def on_message(msg: Any) -> None:
            latencies.append((time.perf_counter_ns() - int(msg.data)) / 1e6)
            await msg.ack()
            if len(latencies) >= expected:
                done.set()

        sub = await js.subscribe(subject, cb=on_message, deliver_policy=DeliverPolicy.NEW)
        start = time.perf_counter()
        for i in range(expected):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            await js.publish(subject, str(time.perf_counter_ns()).encode())
        await asyncio.wait_for(done.wait(), 30)
        await sub.unsubscribe()
        semaphore = asyncio.Semaphore(in_flight)
        started = time.perf_counter()

        async def one() -> None:
            async with semaphore:
                await js.publish(subject, b"x")

        await asyncio.gather(*(one() for _ in range(burst)))
        throughput = burst / (time.perf_counter() - started)
        return {"delivery": latency_quantiles(latencies), "delivered": len(latencies),
                "publish_per_s_64_in_flight": round(throughput)}
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def commit_to_delivery(api_port: int, nats_url: str, stream: str, prefix: str,
                             seconds: float, rate: int = 1000,
                             connections: int = 16, headers: str = "") -> dict[str, Any]:
    """Steady ``rate`` PUTs/s over HTTP; latency from each event's commit (database
    clock) to its delivery to a JetStream subscriber of the ledger's stream."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    latencies: list[float] = []
    after_ack: list[float] = []
    acked: dict[int, float] = {}
    delivered: dict[int, float] = {}
    token = secrets.token_hex(3)

    async def on_message(msg: Any) -> None:
        received = time.time()
        event = orjson.loads(msg.data)
        if event["data"]["namespace"] == f"bcast{token}":
            committed = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
            latencies.append((received - committed.timestamp()) * 1000)
            delivered[event["data"]["document"]["i"]] = received

    sub = await js.subscribe(f"{prefix}.bcast{token}.>", cb=on_message, stream=stream,
                             deliver_policy=DeliverPolicy.NEW, ordered_consumer=True)
    conns = [HttpConnection(api_port) for _ in range(connections)]
    total = int(seconds * rate)
    statuses: dict[int, int] = {}
    started = time.perf_counter()

    async def writer(n: int) -> None:
        conn = conns[n]
        for i in range(n, total, connections):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            body = orjson.dumps({"i": i, "at": time.time()})
            request = (f"PUT /v1/namespaces/bcast{token}/entries/k{i % 500} HTTP/1.1\r\n"
                       f"Host: {HOST}\r\n{headers}Content-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            status, _ = await conn.exchange(request)
            acked[i] = time.time()
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(writer(n) for n in range(connections)))
    elapsed = time.perf_counter() - started
    deadline = time.monotonic() + 30
    while len(latencies) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await sub.unsubscribe()
    await nc.close()
    for conn in conns:
        conn.close()
    # The commit happens between recorded_at (the INSERT, which the event's time is) and
    # the HTTP answer: measured from both ends, the truth lies in between.
    after_ack = [(delivered[i] - acked[i]) * 1000 for i in delivered if i in acked]
    return {"writes": total, "writes_per_s": round(total / elapsed), "rate": rate,
            "statuses": statuses,
            "delivered": len(latencies), "delivery": latency_quantiles(latencies),
            "delivery_after_http_ack": latency_quantiles(after_ack)}


async def catch_up(database_url: str, nats_url: str) -> dict[str, Any]:
    """A cold broadcaster (new stream, no position) publishing the whole backlog."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*), coalesce(max(position), 0) FROM entry_history"
                           ).fetchone()
    backlog, head = (int(row[0]), int(row[1])) if row else (0, 0)
    token = secrets.token_hex(4)
    stream, prefix = f"SSOT_BENCH_CATCHUP_{token}", f"catchup{token}"
    broadcaster = Broadcaster(database_url, nats_url, stream=stream, prefix=prefix,
                              name=f"bench-catch-up-{token}")
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(broadcaster.run(stop))
    try:
        while broadcaster.progress.position < head:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        await task
        nc = await nats.connect(nats_url)
        await nc.jetstream().delete_stream(stream)
        await nc.close()
    return {"backlog_events": backlog, "seconds": round(elapsed, 2),
            "events_per_s": round(backlog / elapsed) if elapsed else None,
            "mean_per_publish_us": round(elapsed / backlog * 1e6, 1) if backlog else None}


_CPU_NAMES = (("server", "server"), ("postgres", "PostgreSQL"), ("nats", "NATS"),
              ("other", "other processes"))


def summarize(raw: dict[str, Any], ledger: dict[str, Any],
              catch: dict[str, Any]) -> list[str]:
    """Markdown lines: the ledger's figures beside the raw JetStream ones."""
    d, r = ledger["delivery"], raw["delivery"]
    a = ledger["delivery_after_http_ack"]

    def ok(flag: bool) -> str:
        return "PASS" if flag else "FAIL"

    p50_ok = d["p50_ms"] is not None and d["p50_ms"] < 5
    p99_ok = d["p99_ms"] is not None and d["p99_ms"] < 25
    complete = ledger["delivered"] == ledger["writes"]
    # The load must reach (nearly) its rate: a slow server would otherwise pass at less.
    target_rate = ledger.get("rate", 1000)
    reached = ledger["writes_per_s"] >= 0.9 * target_rate
    cpu: dict[str, Any] = ledger.get("cpu") or {}
    other = cpu.get("other")
    rate_ok = (catch["events_per_s"] or 0) >= 10_000
    return [
        "",
        "Broadcast (NATS JetStream), side by side:",
        "",
        "| step | result | p50 ms | p99 ms | target | status |",
        "|---|---:|---:|---:|---|---|",
        f"| (f) raw JetStream publish → delivery @1,000/s | {raw['delivered']:,} msgs "
        f"| {r['p50_ms']} | {r['p99_ms']} | baseline | — |",
        f"| (f) raw JetStream publish, 64 in flight | {raw['publish_per_s_64_in_flight']:,} "
        "msgs/s | | | baseline | — |",
        f"| (g) commit (event time) → NATS delivery @{ledger['writes_per_s']:,} writes/s "
        f"| {ledger['delivered']:,}/{ledger['writes']:,} delivered | {d['p50_ms']} "
        f"| {d['p99_ms']} | p50 < 5 ms, p99 < 25 ms, all delivered, ≥ 90 % of "
        f"{target_rate:,} writes/s reached | "
        f"{verdict(p50_ok and p99_ok and complete and reached, other)} |",
        f"| (g) the same, from the HTTP answer (after the commit) to delivery | "
        f"| {a['p50_ms']} | {a['p99_ms']} | (for reference) | — |",
        f"| (h) cold broadcaster catch-up over {catch['backlog_events']:,} events "
        f"| {catch['events_per_s']:,} events/s | | | ≥ 10,000 events/s | {ok(rate_ok)} |",
        "",
        "(g) CPU, % of one core (the load generator and the subscriber, in the bench's own "
        "process, aside): " + ", ".join(
            f"{name} {fmt(cpu.get(key), 0)}" for key, name in _CPU_NAMES) if cpu else "",
    ]


def run_all(api_port: int, database_url: str, nats_url: str, stream: str, prefix: str,
            seconds: float, meter: CpuMeter, headers: str = "") -> dict[str, Any]:
    raw = asyncio.run(jetstream_baseline(nats_url, seconds))
    ledger, cpu = measured(meter, lambda: asyncio.run(commit_to_delivery(
        api_port, nats_url, stream, prefix, seconds, headers=headers)))
    ledger["cpu"] = cpu
    catch = asyncio.run(catch_up(database_url, nats_url))
    return {"jetstream": raw, "commit_to_delivery": ledger, "catch_up": catch,
            "summary_md": summarize(raw, ledger, catch)}

