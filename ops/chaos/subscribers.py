"""The subscribers of ``ssot chaos``: the SDK's subscriber on NATS for each of the run's
namespaces and the SSE feed of every namespace, each restarted or resumed after a failure
as a careful consumer would. Every subscriber writes what it received to
``subscribers/<name>.jsonl``, one line per event (position, id, entry, version, the
runner's monotonic time ``t``) or error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from nexus_ssot.client.subscriber import MemoryPositionStore, Subscriber

from .clients import NAMESPACES


class Received:
    """What one subscriber received, written to its file as it arrives."""

    def __init__(self, path: Path, started: float) -> None:
        self.file = path.open("a", encoding="utf-8")
        self.started = started
        self.last = 0
        self.count = 0
        self.errors = 0

    def event(self, position: int, event_id: str, ns: str, key: str, version: int) -> None:
        self.last, self.count = max(self.last, position), self.count + 1
        self.file.write(orjson.dumps({"p": position, "id": event_id, "ns": ns, "key": key,
                                      "v": version,
                                      "t": round(time.monotonic() - self.started, 6)}
                                     ).decode() + "\n")

    def error(self, what: str) -> None:
        self.errors += 1
        self.file.write(orjson.dumps({"error": what[:300],
                                      "t": round(time.monotonic() - self.started, 6)}
                                     ).decode() + "\n")

    def close(self) -> None:
        self.file.close()


async def nats_subscriber(received: Received, nats_url: str, api_url: str, namespace: str,
                          stream: str, prefix: str, token: str) -> None:
    """The SDK's subscriber on one namespace, from the log's start; restarted from its
    recorded position when it fails (NATS restarted, API down for its catch-up)."""
    store = MemoryPositionStore(0)
    while True:
        try:
            subscriber = Subscriber(nats_url, api_url, namespace=namespace, store=store,
                                    stream=stream, prefix=prefix, token=token)
            async with subscriber as changes:
                async for change in changes:
                    received.event(change.position, change.id, change.namespace, change.key,
                                   change.version)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            received.error(f"{type(e).__name__}: {e}")
        await asyncio.sleep(0.5)


async def sse_subscriber(received: Received, api_url: str, token: str) -> None:
    """The SSE feed of every namespace from the log's start, resumed with Last-Event-ID
    after a dropped connection."""
    last: int | None = None
    timeout = httpx.Timeout(5.0, read=40.0)
    async with httpx.AsyncClient(base_url=api_url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                async with http.stream("GET", "/v1/events/stream", params={"after": 0},
                                       headers=headers) as response:
                    if response.status_code != 200:
                        received.error(f"status {response.status_code}")
                        await asyncio.sleep(0.5)
                        continue
                    event_id: int | None = None
                    async for line in response.aiter_lines():
                        if line.startswith("id: "):
                            event_id = int(line[4:])
                        elif line.startswith("data: ") and event_id is not None:
                            event = orjson.loads(line[6:])
                            data = event["data"]
                            received.event(event_id, event["id"], data["namespace"],
                                           data["key"], data["version"])
                            last, event_id = event_id, None
            except asyncio.CancelledError:
                raise
            except (httpx.HTTPError, ValueError, KeyError) as e:
                received.error(f"{type(e).__name__}: {e}")
            await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def subscribers(folder: Path, started: float, nats_url: str, api_url: str, stream: str,
                      prefix: str, token: str) -> Any:
    """The run's subscribers, running until the block ends: {name: Received}."""
    folder.mkdir(parents=True, exist_ok=True)
    received = {f"nats-{ns}": Received(folder / f"nats-{ns}.jsonl", started)
                for ns in NAMESPACES}
    received["sse"] = Received(folder / "sse.jsonl", started)
    tasks = [asyncio.create_task(nats_subscriber(received[f"nats-{ns}"], nats_url, api_url,
                                                 ns, stream, prefix, token))
             for ns in NAMESPACES]
    tasks.append(asyncio.create_task(sse_subscriber(received["sse"], api_url, token)))
    try:
        yield received
    finally:
        await stop_tasks(tasks)
        for r in received.values():
            r.close()


async def stop_tasks(tasks: list[asyncio.Task[None]], timeout: float = 60.0) -> None:
    """Cancel ``tasks`` and wait until they end, cancelling again those that swallowed it:
    Python 3.11's ``asyncio.wait_for`` (inside nats-py's fetch) returns the result of a
    future that completed as the cancellation came, and drops the cancellation — seen as
    a run that never got past its subscribers."""
    pending = set(tasks)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=2.0)
    for task in tasks:  # retrieved, as gather(return_exceptions=True) would
        if task.done() and not task.cancelled():
            task.exception()
    if pending:
        raise RuntimeError(f"{len(pending)} subscriber(s) did not stop in {timeout:.0f} s")
