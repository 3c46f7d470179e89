"""Step (c) in turns: PUT @16 and @64 beside the plain library, taking turns in short
rounds, so that each ratio compares the same minutes of the host.

Steps (b) and (c) run minutes apart, and on a host whose speed moves by a fifth within
minutes (docs/performance.md, "Reading the figures") their ratio says as much about the
hour as about the ledger. Here each of ``ROUNDS`` rounds runs the library (step (b)'s
8 threads of one-event ``save()``), PUT @16 and PUT @64 (step (c)'s load generator, If-Match
on each connection's own entry) for ``SLOT_S`` seconds each, one after the other, the
order reversed every other round; every slot starts once the server's followers have
caught up with the slot before it, so that neither side pays for the other's events. A
round gives a ratio per PUT step (its requests per second over the library's saves per
second in the same round); the verdict is the median of the rounds' ratios, beside the
ratio of the totals and the range. The rounds run on the server before the other steps
load it (after a warm-up of PUT @16 that is not counted): after step (e)'s 100,000 writes,
PostgreSQL's vacuum and the followers' catching up slowed the library's first rounds to a
third of its last.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

from psycopg import sql

from .database import Monitor, conninfo
from .http_load import HttpResult, HttpSpec, http_step
from .library import LIBRARY_SCHEMA, LIBRARY_THREADS, LibraryResult, LibrarySpec, run_library
from .measuring import Cpu, CpuMeter, say
from .seeding import wait_for_followers
from .server import Server

ROUNDS, ROUNDS_QUICK = 8, 2
SLOT_S, SLOT_S_QUICK = 2.0, 1.0
WARMUP_S, WARMUP_S_QUICK = 1.0, 0.5  # PUT @16 before the rounds, not counted
#: The PUT steps taken in turns with the library (connections each).
CONNECTIONS = (16, 64)
LIBRARY = "library"


def order(round_index: int) -> list[str]:
    """The slots of round ``round_index``: the library first, then the PUT steps; every
    other round the other way round, so that neither side always follows the other."""
    slots = [LIBRARY, *(f"put_{c}" for c in CONNECTIONS)]
    return slots if round_index % 2 == 0 else slots[::-1]


def ratios(rounds: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per PUT step, from ``rounds`` (each slot's rate, by label): the ratio of each round,
    their median and range, and the ratio of the totals."""
    found: dict[str, dict[str, Any]] = {}
    for label in (f"put_{c}" for c in CONNECTIONS):
        paired = [(r[label], r[LIBRARY]) for r in rounds
                  if r.get(label) and r.get(LIBRARY)]
        if not paired:
            continue
        each = [round(put / library, 3) for put, library in paired]
        found[label] = {
            "round_ratios": each,
            "median": round(statistics.median(each), 3),
            "range": [min(each), max(each)],
            "totals": round(sum(p for p, _ in paired) / sum(b for _, b in paired), 3),
            "rounds": len(each),
        }
    return found


def _library_slot(pool: ProcessPoolExecutor, database_url: str, seconds: float) -> LibraryResult:
    spec = LibrarySpec(conninfo(database_url), LIBRARY_THREADS, seconds)
    return pool.submit(run_library, spec).result(timeout=seconds + 120)


def measure(monitor: Monitor, server: Server, meter: CpuMeter, pool: ProcessPoolExecutor, *,
            token: str, headers: str, quick: bool) -> dict[str, Any]:
    """The rounds against ``server`` (running) and the library on its database: each
    slot's figures, and the ratios (``ratios``)."""
    rounds_n, slot = (ROUNDS_QUICK, SLOT_S_QUICK) if quick else (ROUNDS, SLOT_S)
    say(f"(c) in turns: library, PUT @16 and @64, {rounds_n} rounds of {slot:g} s each")
    rounds: list[dict[str, float]] = []
    slots: list[dict[str, Any]] = []
    holder: list[Cpu] = []
    started = time.monotonic()
    acknowledged = http_step(monitor, server, meter, pool, HttpSpec(
        "turns_warmup", "PUT", server.port, f"{token}-turns-warm", CONNECTIONS[0],
        WARMUP_S_QUICK if quick else WARMUP_S, headers=headers)).acknowledged_writes
    schema = sql.Identifier(LIBRARY_SCHEMA)
    monitor.conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    try:
        with meter.measure(holder.append):
            for index in range(rounds_n):
                rates: dict[str, float] = {}
                for label in order(index):
                    if label == LIBRARY:
                        wait_for_followers(server.database_url, monitor.head())
                        library = _library_slot(pool, server.database_url, slot)
                        if library.errors:
                            raise RuntimeError(f"the library's slot failed: "
                                               f"{library.first_error}")
                        rates[label] = library.saves_per_s
                        slots.append({"round": index, "label": label,
                                      **{k: v for k, v in asdict(library).items()
                                         if k != "cpu"}})
                        continue
                    connections = int(label.removeprefix("put_"))
                    result: HttpResult = http_step(monitor, server, meter, pool, HttpSpec(
                        f"turns_{label}", "PUT", server.port, f"{token}-turns-{label}",
                        connections, slot, headers=headers))
                    if result.non_2xx or result.errors:
                        raise RuntimeError(f"{label} in turns: {result.non_2xx} non-2xx, "
                                           f"{result.errors} errors: {result.first_problem}")
                    rates[label] = result.requests_per_s
                    acknowledged += result.acknowledged_writes
                    slots.append({"round": index, "label": label,
                                  "requests_per_s": result.requests_per_s,
                                  "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                                  "mean_batch": result.mean_batch})
                rounds.append(rates)
                say(f"(c) in turns, round {index + 1}: " + ", ".join(
                    f"{k} {v:,.0f}/s" for k, v in rates.items()))
    finally:
        monitor.conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
    found = ratios(rounds)
    for label, got in found.items():
        say(f"(c) in turns: {label} median {got['median']}x the library over "
            f"{got['rounds']} rounds (range {got['range'][0]} to {got['range'][1]}, totals "
            f"{got['totals']}x)")
    return {"rounds": rounds, "slots": slots, "slot_s": slot, "ratios": found,
            "acknowledged_writes": acknowledged,
            "seconds": round(time.monotonic() - started, 1), "cpu": asdict(holder[0])}
