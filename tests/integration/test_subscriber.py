"""The subscriber SDK against real NATS, the broadcaster and the HTTP API, over this file's
own database (a broadcaster on a new stream publishes the whole log)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import nats
from nats.js.api import StreamConfig

from nexus_ssot.client.subscriber import (
    Change,
    FilePositionStore,
    MemoryPositionStore,
    Subscriber,
    watch_key,
)
from nexus_ssot.ledger.broadcaster import Broadcaster
from tests.integration.conftest import ADMIN_TOKEN, own_log
from tests.integration.test_broadcaster import InThread

database_url, api = own_log("ssot_sub")




def history_positions(client: httpx.Client, ns: str, keys: list[str]) -> list[int]:
    positions = []
    for key in keys:
        items = client.get(f"/v1/namespaces/{ns}/entries/{key}/history").json()["items"]
        positions += [e["position"] for e in items]
    return sorted(positions)


async def take(subscriber: Subscriber, count: int, timeout: float = 30) -> list[Change]:
    got: list[Change] = []

    async def collect() -> None:
        async with subscriber as changes:
            async for change in changes:
                got.append(change)
                if len(got) == count:
                    await subscriber.handled(change.position)  # record the last one too
                    return

    await asyncio.wait_for(collect(), timeout)
    return got


def test_changes_arrive_in_order_once_and_resume_from_the_recorded_position(
    api: Any, client: httpx.Client, database_url: str, nats_url: str,
    stream: tuple[str, str], ns: str, tmp_path: Any,
) -> None:
    name, prefix = stream
    for i in range(3):
        client.put(f"/v1/namespaces/{ns}/entries/a", json={"i": i})
        client.put(f"/v1/namespaces/{ns}/entries/b/c.d", json={"i": i})
    store = FilePositionStore(tmp_path / "position")
    durable = f"sub{secrets.token_hex(3)}"

    def subscriber() -> Subscriber:
        return Subscriber(nats_url, api.url, namespace=ns, store=store, durable=durable,
                          stream=name, prefix=prefix, token=ADMIN_TOKEN)

    with InThread(Broadcaster(database_url, nats_url, stream=name, prefix=prefix,
                              name=f"sdk-{name}")):
        first = asyncio.run(take(subscriber(), 6))
        assert [c.position for c in first] == history_positions(client, ns, ["a", "b/c.d"])
        assert {c.key for c in first} == {"a", "b/c.d"}
        assert asyncio.run(store.load()) == first[-1].position
        client.delete(f"/v1/namespaces/{ns}/entries/a")
        client.put(f"/v1/namespaces/{ns}/entries/b/c.d", json={"i": 9})
        later = asyncio.run(take(subscriber(), 2))
    assert [c.type for c in later] == ["io.nexus.ssot.entry.deleted",
                                       "io.nexus.ssot.entry.updated"]
    assert later[0].deleted and later[1].document == {"i": 9}
    assert later[0].position > first[-1].position  # nothing handled twice


def test_events_the_stream_no_longer_holds_come_from_the_catch_up_api(
    api: Any, client: httpx.Client, database_url: str, nats_url: str,
    stream: tuple[str, str], ns: str,
) -> None:
    name, prefix = stream

    async def small_stream() -> None:  # keeps only the last 3 messages
        nc = await nats.connect(nats_url)
        await nc.jetstream().add_stream(StreamConfig(name=name, subjects=[f"{prefix}.>"],
                                                     max_msgs=3))
        await nc.close()

    asyncio.run(small_stream())
    for i in range(8):
        client.put(f"/v1/namespaces/{ns}/entries/k", json={"i": i})
    with InThread(Broadcaster(database_url, nats_url, stream=name, prefix=prefix,
                              name=f"fallback-{name}")):
        got = asyncio.run(take(Subscriber(nats_url, api.url, namespace=ns,
                                          store=MemoryPositionStore(), stream=name,
                                          prefix=prefix, token=ADMIN_TOKEN), 8))
    assert [c.document for c in got] == [{"i": i} for i in range(8)]
    assert [c.position for c in got] == history_positions(client, ns, ["k"])


def test_watch_key_yields_the_current_document_then_every_new_one(
    api: Any, client: httpx.Client, database_url: str, nats_url: str,
    stream: tuple[str, str], ns: str,
) -> None:
    name, prefix = stream
    path = f"/v1/namespaces/{ns}/entries/app/config"
    client.put(path, json={"level": "info"})

    async def watch() -> list[Any]:
        seen: list[Any] = []
        async for document in watch_key(nats_url, api.url, ns, "app/config", stream=name,
                                        prefix=prefix, token=ADMIN_TOKEN):
            seen.append(document)
            if len(seen) == 1:  # the current one; now change it twice
                await asyncio.to_thread(client.put, path, json={"level": "debug"})
                await asyncio.to_thread(client.delete, path)
            if len(seen) == 3:
                return seen
        return seen

    with InThread(Broadcaster(database_url, nats_url, stream=name, prefix=prefix,
                              name=f"watch-{name}")):
        seen = asyncio.run(asyncio.wait_for(watch(), 30))
    assert seen == [{"level": "info"}, {"level": "debug"}, None]
