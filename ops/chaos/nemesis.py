"""The nemesis of ``ssot chaos``: a schedule of faults drawn from the seed up front (so a
seed reproduces the same schedule), and the faults themselves.

Kinds (every one appears at least once in a run long enough to hold them all):

- ``kill_api``: SIGKILL the whole ``ssot serve`` process group (supervisor, HTTP workers,
  view and digest threads), then start it again.
- ``kill_writer``: SIGKILL the writer process alone (``ssot serve`` restarts it).
- ``kill_broadcaster``: SIGKILL ``ssot broadcast``, then start it again.
- ``restart_nats``: stop nats-server (SIGTERM), start it again on the same port and store;
  ``kill_nats``: the same after SIGKILL (JetStream acknowledges before it syncs to disk,
  so the stream may lose its tail: the broadcaster must publish it again).
- ``pg_fast`` / ``pg_immediate``: PostgreSQL fast shutdown (SIGINT, as ``pg_ctl stop -m
  fast``) or immediate shutdown (SIGQUIT, ``-m immediate``: crash recovery at the next
  start), then start it again on the same port.
- ``pause``: SIGSTOP a process group (``api``, ``writer``, ``broadcaster``, ``nats`` or
  ``postgres``), then SIGCONT it.
- ``slow_clients``: many connections to the HTTP server that send a request's headers a
  byte at a time, then hang up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import asdict, dataclass
from typing import Any, Protocol

KINDS = ("kill_api", "kill_writer", "kill_broadcaster", "restart_nats", "kill_nats",
         "pg_fast", "pg_immediate", "pause", "slow_clients")
#: The faults of ``--topology cluster`` (``cluster_targets``).
CLUSTER_KINDS = ("kill_api", "kill_followers", "kill_nats_leader", "pg_failover")
PAUSE_TARGETS = ("api", "writer", "broadcaster", "nats", "postgres")
#: The process group each kind hits (a pause: one drawn from PAUSE_TARGETS).
TARGET = {"kill_api": "api", "kill_writer": "writer", "kill_broadcaster": "broadcaster",
          "restart_nats": "nats", "kill_nats": "nats", "pg_fast": "postgres",
          "pg_immediate": "postgres", "slow_clients": "api"}
#: Seconds kept clear of faults at the start (the clients warm up) and at the end (the
#: last fault heals before the clients stop).
LEAD_IN, LEAD_OUT = 3.0, 6.0
#: Average seconds between two faults.
SPACING = 7.0


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the clients start
    kind: str
    target: str  # the process group it hits
    down: float  # seconds the target stays down, paused or flooded

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def schedule(seed: int, duration: float, kinds: tuple[str, ...] = KINDS) -> list[Fault]:
    """The faults of a run, in time order: every kind once (in a seeded order) and then
    seeded picks, spread over ``duration`` with jitter. Same seed, same schedule."""
    rng = random.Random(f"nemesis:{seed}")
    window = duration - LEAD_IN - LEAD_OUT
    if window <= 0 or not kinds:
        return []
    count = max(len(kinds), int(window / SPACING))
    picks = list(kinds)
    rng.shuffle(picks)
    picks += [rng.choice(kinds) for _ in range(count - len(picks))]
    slot = window / count
    faults = []
    for i, kind in enumerate(picks):
        at = LEAD_IN + slot * i + rng.uniform(0.0, slot * 0.5)
        target = TARGET.get(kind) or rng.choice(PAUSE_TARGETS)
        down = {"pause": rng.uniform(1.0, 4.0), "slow_clients": rng.uniform(4.0, 8.0)}.get(
            kind, rng.uniform(0.2, 2.0))
        faults.append(Fault(round(at, 3), kind, target, round(down, 3)))
    return faults


class Targets(Protocol):
    """What the nemesis acts on: the harness's processes."""

    http_port: int

    def kill(self, target: str) -> dict[str, Any]: ...

    def start(self, target: str) -> None: ...

    def stop(self, target: str, mode: str) -> None: ...

    def pause(self, target: str) -> None: ...

    def resume(self, target: str) -> None: ...


async def inject(fault: Fault, targets: Targets) -> dict[str, Any]:
    """Cause ``fault`` and heal it; return what happened (for the history)."""
    detail: dict[str, Any] = {}
    if fault.kind in ("kill_api", "kill_writer", "kill_broadcaster"):
        detail = await asyncio.to_thread(targets.kill, fault.target)
        await asyncio.sleep(fault.down)
        await asyncio.to_thread(targets.start, fault.target)
    elif fault.kind in ("restart_nats", "kill_nats", "pg_fast", "pg_immediate"):
        mode = {"pg_fast": "fast", "pg_immediate": "immediate",
                "kill_nats": "kill"}.get(fault.kind, "term")
        await asyncio.to_thread(targets.stop, fault.target, mode)
        await asyncio.sleep(fault.down)
        await asyncio.to_thread(targets.start, fault.target)
    elif fault.kind == "pause":
        await asyncio.to_thread(targets.pause, fault.target)
        try:
            await asyncio.sleep(fault.down)
        finally:
            await asyncio.to_thread(targets.resume, fault.target)
    elif fault.kind == "slow_clients":
        detail = await slow_clients(targets.http_port, fault.down)
    else:
        raise ValueError(f"unknown fault kind {fault.kind!r}")
    return detail


async def slow_clients(port: int, seconds: float, connections: int = 64) -> dict[str, Any]:
    """``connections`` clients that each send a PUT's headers one byte every 0.5 s for
    ``seconds``, then hang up; returns how many connected and how many the server closed."""
    request = (b"PUT /v1/namespaces/chaos-slow/entries/k HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
               + b"X-Padding: " + b"x" * 4096)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    opened = closed_by_server = 0

    async def one() -> None:
        nonlocal opened, closed_by_server
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 5.0)
        except (OSError, TimeoutError):
            return
        opened += 1
        try:
            for byte in request:
                if loop.time() >= deadline:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.5)
        except (ConnectionError, OSError):
            closed_by_server += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    await asyncio.gather(*(one() for _ in range(connections)))
    return {"connections": connections, "opened": opened,
            "closed_by_server": closed_by_server}
