"""Step (l) of ``make bench``: the hash chain's cost. The server's writer
(``GroupCommitWriter``) in the load generator's process, If-Match PUTs of 16 entries per
transaction (the @16 step's shape) with the chain on and with it off batch by batch (on,
off, off, on, …), each side on entries of its own, in one-second slots (2 x the step's
duration of them): the writer alone is where the chain's work is, and taking turns every
few milliseconds gives both sides the same machine (a drift or burst of its load falls on
both); two server starts, or even alternating whole seconds, would compare moments of a
machine shared with other work. Each slot gives an on/off ratio; the verdict is their
median.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from .measuring import NAMESPACE, Cpu, CpuMeter, mean_cpu, quantiles_ms, say

CHAIN_BATCH = 16  # commands per transaction, the @16 step's entries
CHAIN_SLOT, CHAIN_SLOT_QUICK = 1.0, 0.5  # seconds per alternation slot
CHAIN_MIN_SLOTS = 4  # slots at least; else 2 x duration / slot


# --- the writer, chain on and off (runs in the worker process) -------------------------------

@dataclass
class ChainSpec:
    database_url: str
    token: str
    seconds: float


# The worker's application and its two writers (chain on, chain off), kept between slots.
_CHAIN: dict[str, Any] = {}
# The order of the sides' batches in a slot, repeated: each side follows each side alike.
_CHAIN_ORDER = (True, False, False, True)


def _chain_document(n: int, revision: int) -> dict[str, Any]:
    """The document of ``BODY``, as the API hands it to the writer."""
    return {"service": "payments-api", "region": "eu-west-1", "host": f"db-{n:03d}.internal",
            "port": 5432, "pool": {"min": 2, "max": 32}, "flags": ["tls", "audit"],
            "revision": revision}


def _chain_items(keys: list[str], versions: list[int] | None, revision: int
                 ) -> list[tuple[Any, Any, None]]:
    """One batch: a PUT of each key with If-Match its version (If-None-Match: * when
    ``versions`` is None), each with its own context, as the API builds them."""
    from nexus_ssot.ledger.commands import Context, Expectation, Put

    now = datetime.now(UTC)
    return [(Put(NAMESPACE, key, Expectation(if_match=versions[n]) if versions is not None
                 else Expectation(if_none_match=True), document=_chain_document(n, revision)),
             Context(event_id=uuid4(), timestamp=now, actor="bench", correlation_id="chain"),
             None) for n, key in enumerate(keys)]


def chain_slot(spec: ChainSpec) -> dict[str, dict[str, Any]]:
    """PUTs with If-Match of ``CHAIN_BATCH`` entries, one batch (one transaction) after the
    other for ``spec.seconds``, by the writer with the hash chain on and by the writer with
    it off in turn (on, off, off, on, …), each side on entries of its own: so both sides
    meet the machine's load of the same moments. Per side (``on``, ``off``): the commands
    written, the wall and CPU seconds of this process spent in its batches, each batch's
    latency."""
    from nexus_ssot.ledger.documents import Limits
    from nexus_ssot.ledger.store import open_application
    from nexus_ssot.ledger.writer import GroupCommitWriter

    if _CHAIN.get("url") != spec.database_url:
        chain_close()
        app = open_application(spec.database_url, pool_size=1)
        _CHAIN.update(url=spec.database_url, app=app, versions={}, writers={
            flag: GroupCommitWriter(app, lambda _ns: Limits(), max_batch=CHAIN_BATCH,
                                    hash_chain=flag) for flag in (True, False)})
    versions: dict[bool, list[int]] = _CHAIN["versions"]
    keys = {flag: [f"{spec.token}-chain-{'on' if flag else 'off'}-{n}"
                   for n in range(CHAIN_BATCH)] for flag in (True, False)}
    for flag in (True, False):
        if flag not in versions:  # create the entries (untimed)
            versions[flag] = [f.result().version for f in _CHAIN["writers"][flag].write_batch(
                _chain_items(keys[flag], None, 0))]
    sides: dict[bool, dict[str, Any]] = {
        flag: {"commands": 0, "batches": 0, "seconds": 0.0, "cpu_s": 0.0, "latencies_ns": [],
               "errors": 0, "first_error": None} for flag in (True, False)}
    clock, cpu_clock = time.perf_counter_ns, time.process_time
    deadline = clock() + int(spec.seconds * 1e9)
    turn = 0
    while clock() < deadline:
        flag = _CHAIN_ORDER[turn % len(_CHAIN_ORDER)]
        turn += 1
        side, mine = sides[flag], versions[flag]
        items = _chain_items(keys[flag], mine, side["batches"] + 1)
        cpu, began = cpu_clock(), clock()
        futures = _CHAIN["writers"][flag].write_batch(items)
        for n, future in enumerate(futures):
            try:
                mine[n] = future.result().version
            except Exception as e:  # counted and reported, never fatal to the bench
                side["errors"] += 1
                side["first_error"] = side["first_error"] or repr(e)
        ended = clock()
        side["cpu_s"] += cpu_clock() - cpu
        side["seconds"] += (ended - began) / 1e9
        side["latencies_ns"].append(ended - began)
        side["batches"] += 1
        side["commands"] += CHAIN_BATCH
        if side["errors"]:
            break  # the versions are no longer known
    return {"on" if flag else "off": side for flag, side in sides.items()}


def chain_decide_cost(repeat: int = 5000) -> dict[str, float]:
    """Microseconds of CPU per ``decide`` of an If-Match PUT (no I/O), chain on and off,
    the best of alternating blocks (CPU time, not wall time: other processes on the machine
    delay a block without making it cost more): what the chain adds per event."""
    from nexus_ssot.ledger.documents import Limits
    from nexus_ssot.ledger.domain import decide
    from nexus_ssot.ledger.events import EntryEvent, evolve

    limits = Limits()
    best: dict[bool, float] = {True: float("inf"), False: float("inf")}
    for block in range(10):
        flag = block % 2 == 0
        [(create, context, _)] = _chain_items(["decide"], None, 0)
        created = decide(None, create, context, limits, chain=flag)
        assert isinstance(created, EntryEvent)  # a creation is never "unchanged"
        state = evolve(None, created)
        items = _chain_items(["decide"], [1], 1)
        started = time.process_time()
        for _ in range(repeat):
            decide(state, items[0][0], items[0][1], limits, chain=flag)
        best[flag] = min(best[flag], (time.process_time() - started) / repeat * 1e6)
    return {"on_us": round(best[True], 1), "off_us": round(best[False], 1),
            "chain_us": round(best[True] - best[False], 1)}


def chain_close() -> None:
    app = _CHAIN.pop("app", None)
    _CHAIN.clear()
    if app is not None:
        app.close()


# --- the step --------------------------------------------------------------------------------


def measure(database_url: str, meter: CpuMeter, pool: ProcessPoolExecutor, *, token: str,
            duration: float, quick: bool) -> dict[str, Any]:
    """(l) PUTs with If-Match in batches of ``CHAIN_BATCH`` by the writer in the worker
    process, the hash chain on and off batch by batch (``chain_slot``), each side on
    entries of its own. Each slot gives a ratio (on/off, writes per second of the time
    spent in each side's batches); their median is the verdict, as a burst of other work
    on the machine spoils a slot, not the result; the totals are reported too."""
    slot = CHAIN_SLOT_QUICK if quick else CHAIN_SLOT
    rounds = max(CHAIN_MIN_SLOTS, round(2 * duration / slot))
    say(f"(l) writer If-Match batches of {CHAIN_BATCH}, hash chain on / off batch by "
        f"batch: {rounds} slots of {slot:g} s")
    sides: dict[str, dict[str, Any]] = {
        name: {"commands": 0, "batches": 0, "seconds": 0.0, "cpu_s": 0.0,
               "latencies_ns": [], "errors": 0, "first_error": None}
        for name in ("on", "off")}
    cpus: list[Cpu] = []
    slot_ratios: list[float] = []
    try:
        # warm-up: connection, statements, entries
        pool.submit(chain_slot, ChainSpec(database_url, token, slot / 2)
                    ).result(timeout=120)
        for _ in range(rounds):
            with meter.measure(cpus.append):
                got = pool.submit(chain_slot, ChainSpec(
                    database_url, token, slot)).result(timeout=slot + 120)
            for name, side in sides.items():
                for key in ("commands", "batches", "seconds", "cpu_s", "errors"):
                    side[key] += got[name][key]
                side["latencies_ns"] += got[name]["latencies_ns"]
                side["first_error"] = side["first_error"] or got[name]["first_error"]
            on_slot, off_slot = got["on"], got["off"]
            if on_slot["seconds"] and off_slot["commands"]:
                slot_ratios.append((on_slot["commands"] / on_slot["seconds"])
                                   / (off_slot["commands"] / off_slot["seconds"]))
        decide_cost = pool.submit(chain_decide_cost).result(timeout=120)
    finally:
        pool.submit(chain_close).result(timeout=60)
    ordered = sorted(slot_ratios)
    middle = len(ordered) // 2
    median = (None if not ordered else ordered[middle] if len(ordered) % 2
              else (ordered[middle - 1] + ordered[middle]) / 2)
    result: dict[str, Any] = {
        "batch": CHAIN_BATCH, "slot_s": slot, "slots": rounds, "decide_us": decide_cost,
        "slot_ratios": [round(x, 3) for x in slot_ratios],
        "median_slot_ratio": round(median, 3) if median is not None else None,
        "slot_ratio_range": [round(ordered[0], 3), round(ordered[-1], 3)] if ordered
        else None,
        "cpu": asdict(mean_cpu(cpus))}
    for name, side in sides.items():
        p50, p99, _, _ = quantiles_ms(side.pop("latencies_ns"))
        seconds = side["seconds"]
        result[name] = {
            **side, "seconds": round(seconds, 3), "cpu_s": round(side["cpu_s"], 3),
            "commands_per_s": round(side["commands"] / seconds, 1) if seconds else 0.0,
            "writer_cpu_us_per_command": round(side["cpu_s"] / side["commands"] * 1e6, 1)
            if side["commands"] else None,
            "batch_p50_ms": p50, "batch_p99_ms": p99}
    on, off = result["on"]["commands_per_s"], result["off"]["commands_per_s"]
    result["ratio"] = round(on / off, 3) if off else None
    result["cost_percent"] = (round((1 - median) * 100, 1) if median is not None
                              else None)
    say(f"(l) done: chain on {on:,.0f}/s, off {off:,.0f}/s (totals on/off "
        f"{result['ratio']}, median of {len(ordered)} slots {result['median_slot_ratio']});"
        f" writer CPU {result['on']['writer_cpu_us_per_command']} vs "
        f"{result['off']['writer_cpu_us_per_command']} µs per write; decide "
        f"{decide_cost['on_us']} vs {decide_cost['off_us']} µs per event")
    return result
