"""The broadcaster on real NATS JetStream and PostgreSQL: every committed event, as a
CloudEvent, in log order, exactly once — across SIGKILLs and NATS outages."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonpatch
import nats
import orjson
import psycopg
import pytest
from prometheus_client import REGISTRY

from nexus_ssot.client.subscriber import Change
from nexus_ssot.ledger.broadcaster import Broadcaster
from nexus_ssot.ledger.commands import Context, Delete, Expectation, MergePatch, Put, Restore
from nexus_ssot.ledger.jetstream import Chain, ensure_stream, nats_servers
from nexus_ssot.ledger.jetstream_acks import Acks
from nexus_ssot.ledger.log_tail import read_range
from nexus_ssot.ledger.namespace_settings import configure
from nexus_ssot.ledger.subjects import entry_subject
from nexus_ssot.ledger.writer import GroupCommitWriter
from nexus_ssot.ops.cluster.nats import NatsNode, cluster_url, wait_cluster
from nexus_ssot.ops.embedded import EmbeddedNats
from tests.integration.conftest import free_port, own_log

SSOT = str(Path(sys.executable).parent / "ssot")


database_url, api = own_log("ssot_bcast")


def context(**kw: Any) -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="tester",
                   correlation_id=kw.pop("correlation_id", "corr-1"), **kw)


def head(database_url: str) -> tuple[int, list[int]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT position FROM entry_history ORDER BY position").fetchall()
    positions = [r[0] for r in rows]
    return (positions[-1] if positions else 0), positions


async def read_stream(nats_url: str, stream: str, prefix: str) -> list[Any]:
    """Every message the stream holds, in stream order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        sub = await js.subscribe(f"{prefix}.>", ordered_consumer=True)
        messages = [await sub.next_msg(timeout=10) for _ in range(total)]
        await sub.unsubscribe()
        return messages
    finally:
        await nc.close()


async def stream_tail_position(nats_url: str, stream: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        if not info.state.last_seq:
            return 0
        msg = await js.get_msg(stream, seq=info.state.last_seq)
        return int((msg.headers or {})["Ssot-Position"])
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await nc.close()


def wait_until_published(nats_url: str, stream: str, position: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while asyncio.run(stream_tail_position(nats_url, stream)) < position:
        assert time.monotonic() < deadline, f"the stream never reached position {position}"
        time.sleep(0.2)


def assert_exactly_the_log(messages: list[Any], positions: list[int]) -> None:
    published = [int(m.headers["Ssot-Position"]) for m in messages]
    assert published == positions  # every event, once, in log order, no gap
    ids = [m.headers["Nats-Msg-Id"] for m in messages]
    assert len(set(ids)) == len(ids)


class InThread:
    """A broadcaster running in a thread of the test process."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.broadcaster.run(self.stop))

    def __enter__(self) -> InThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


def test_every_event_type_arrives_as_a_cloudevent_with_its_fields(
    database_url: str, nats_url: str, stream: tuple[str, str], writer: GroupCommitWriter,
    ns: str,
) -> None:
    name, prefix = stream
    key = "services/payments/db.url"
    writes = [
        (Put(ns, key, document={"url": "pg://a", "pool": 5}), context(reason="first")),
        (Put(ns, key, Expectation(if_match=1), document={"url": "pg://b", "pool": 5}),
         context(causation_id="deploy-7", auth={"method": "token", "token_id": "3f2a"})),
        (MergePatch(ns, key, patch={"pool": 9}), context()),
        (Delete(ns, key), context(reason="retired", auth={
            "method": "oidc", "issuer": "https://idp.example", "on_behalf_of": "alice"})),
        (Restore(ns, key, from_version=1, document={"url": "pg://a", "pool": 5}), context()),
    ]
    outcomes = [writer.submit(c, x).result(10) for c, x in writes]
    end, _ = head(database_url)
    with InThread(Broadcaster(database_url, nats_url, stream=name, prefix=prefix,
                              name=f"types-{name}")):
        wait_until_published(nats_url, name, end, timeout=30)
    messages = [m for m in asyncio.run(read_stream(nats_url, name, prefix))
                if m.subject == entry_subject(prefix, ns, key)]
    assert [orjson.loads(m.data)["type"] for m in messages] == [
        "io.nexus.ssot.entry.created", "io.nexus.ssot.entry.updated",
        "io.nexus.ssot.entry.patched", "io.nexus.ssot.entry.deleted",
        "io.nexus.ssot.entry.restored"]
    previous: Any = None
    for message, (_, ctx), outcome in zip(messages, writes, outcomes, strict=True):
        event = orjson.loads(message.data)
        assert set(event) == {"specversion", "id", "source", "type", "subject", "time",
                              "datacontenttype", "data"}
        assert event["specversion"] == "1.0"
        assert event["id"] == str(ctx.event_id) == message.headers["Nats-Msg-Id"]
        assert event["source"] == f"urn:nexus-ssot:namespace:{ns}"
        assert event["subject"] == key
        assert event["time"].endswith("Z")
        assert event["datacontenttype"] == "application/json"
        data = event["data"]
        assert data["namespace"] == ns and data["key"] == key
        assert data["version"] == outcome.version
        assert data["position"] == outcome.position
        assert message.headers["Ssot-Position"] == str(outcome.position)
        assert message.headers["Ssot-Version"] == str(outcome.version)
        assert data["document"] == outcome.document
        assert data["actor"] == "tester"
        assert data["reason"] == ctx.reason
        assert data["correlation_id"] == "corr-1"
        assert data["causation_id"] == ctx.causation_id
        # how the actor authenticated, when it was recorded; no member otherwise
        assert data.get("auth", "absent") == (ctx.auth if ctx.auth else "absent")
        assert Change.from_cloudevent(event).auth == ctx.auth

        assert jsonpatch.apply_patch(previous, data["patch"]) == data["document"]
        previous = data["document"]


def test_settings_changes_and_merged_writes_are_broadcast_too(
    database_url: str, nats_url: str, stream: tuple[str, str], writer: GroupCommitWriter,
    ns: str,
) -> None:
    name, prefix = stream
    configured = writer.submit(configure(ns, {"conflict_policy": "merge"}),
                               context(reason="explicit")).result(10)
    writer.submit(Put(ns, "k", document={"a": 1, "b": 1}), context()).result(10)
    writer.submit(MergePatch(ns, "k", patch={"a": 2}), context()).result(10)
    merged = writer.submit(MergePatch(ns, "k", Expectation(if_match=1), patch={"b": 2}),
                           context()).result(10)
    end, _ = head(database_url)
    with InThread(Broadcaster(database_url, nats_url, stream=name, prefix=prefix,
                              name=f"settings-{name}")):
        wait_until_published(nats_url, name, end, timeout=30)
    messages = asyncio.run(read_stream(nats_url, name, prefix))
    settings = [orjson.loads(m.data) for m in messages
                if m.subject == entry_subject(prefix, "_namespaces", ns)]
    assert len(settings) == 1
    assert settings[0]["type"] == "io.nexus.ssot.namespace.configured"
    assert settings[0]["source"] == "urn:nexus-ssot:namespace:_namespaces"
    assert settings[0]["data"]["document"] == configured.document == {
        "conflict_policy": "merge", "description": None}
    assert settings[0]["data"]["reason"] == "explicit"
    events = [orjson.loads(m.data) for m in messages if m.subject == entry_subject(
        prefix, ns, "k")]
    assert [e["data"].get("resolution") for e in events] == [
        None, None, {"policy": "merge", "base_version": 1, "rebased_over": [2]}]
    assert events[-1]["data"]["position"] == merged.position
    assert events[-1]["data"]["document"] == {"a": 2, "b": 2}


def broadcast_process(database_url: str, nats_url: str, name: str, prefix: str,
                      group: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_NATS_URL": nats_url,
           "SSOT_NATS_STREAM": name, "SSOT_NATS_SUBJECT_PREFIX": prefix,
           "SSOT_BROADCASTER_NAME": group}
    return subprocess.Popen([SSOT, "broadcast"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


class Traffic:
    """Several threads writing continuously until stopped; counts failures."""

    def __init__(self, writer: GroupCommitWriter, ns: str, threads: int = 4) -> None:
        self.writer, self.ns = writer, ns
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                self.writer.submit(Put(self.ns, f"t{n}/k{i % 20}", document={"i": i}),
                                   context()).result(30)
            except Exception as e:
                self.failures.append(repr(e))
            time.sleep(0.002)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_sigkilled_broadcasters_lose_nothing_and_double_nothing(
    database_url: str, nats_url: str, stream: tuple[str, str], writer: GroupCommitWriter,
    ns: str,
) -> None:
    name, prefix = stream
    group = f"crash-{name}"
    rng = random.Random(7)
    proc = broadcast_process(database_url, nats_url, name, prefix, group)
    try:
        with Traffic(writer, ns) as traffic:
            for _ in range(4):  # kill it at random moments while writes go on
                time.sleep(rng.uniform(0.4, 1.2))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                proc = broadcast_process(database_url, nats_url, name, prefix, group)
            time.sleep(0.5)
        assert traffic.failures == []
        end, positions = head(database_url)
        wait_until_published(nats_url, name, end, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert_exactly_the_log(asyncio.run(read_stream(nats_url, name, prefix)), positions)


def test_a_nats_outage_delays_but_loses_nothing_and_never_fails_a_write(
    database_url: str, tmp_path: Path, writer: GroupCommitWriter, ns: str,
) -> None:
    port = free_port()
    own_nats = EmbeddedNats(tmp_path / "nats", port=port)
    url = own_nats.start()
    try:
        with InThread(Broadcaster(database_url, url, stream="SSOT", prefix="ssot",
                                  name=f"outage-{ns}", ack_timeout=2.0)) as running, \
                Traffic(writer, ns) as traffic:
            time.sleep(1.0)
            own_nats.stop()  # NATS goes away while writes go on
            # it says so once a publish in flight has timed out (ack_timeout) or the
            # connection is seen closed: allow for a busy machine
            deadline = time.monotonic() + 15
            while (not running.broadcaster.progress.last_error
                   and time.monotonic() < deadline):
                time.sleep(0.1)
            assert running.broadcaster.progress.last_error
            time.sleep(1.0)  # writes go on during the outage
            own_nats = EmbeddedNats(tmp_path / "nats", port=port)
            own_nats.start()  # and comes back with its data
            time.sleep(1.0)
        assert traffic.failures == []
        end, positions = head(database_url)
        with InThread(Broadcaster(database_url, url, stream="SSOT", prefix="ssot",
                                  name=f"outage-{ns}")):
            wait_until_published(url, "SSOT", end, timeout=60)
        assert_exactly_the_log(asyncio.run(read_stream(url, "SSOT", "ssot")), positions)
    finally:
        own_nats.stop()


def test_a_standby_takes_over_when_the_leader_dies(
    database_url: str, nats_url: str, stream: tuple[str, str], writer: GroupCommitWriter,
    ns: str,
) -> None:
    name, prefix = stream
    group = f"failover-{name}"
    first = broadcast_process(database_url, nats_url, name, prefix, group)
    writer.submit(Put(ns, "lead", document={}), context()).result(10)
    wait_until_published(nats_url, name, head(database_url)[0], timeout=60)  # first leads
    second = broadcast_process(database_url, nats_url, name, prefix, group)
    try:
        with Traffic(writer, ns):
            time.sleep(1.0)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            time.sleep(1.0)
        end, positions = head(database_url)
        wait_until_published(nats_url, name, end, timeout=30)  # the standby did it
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
    assert_exactly_the_log(asyncio.run(read_stream(nats_url, name, prefix)), positions)


def publish_failures() -> float:
    """The broadcasters' failures in this process so far
    (``ssot_broadcaster_publish_errors_total``)."""
    return REGISTRY.get_sample_value("ssot_broadcaster_publish_errors_total") or 0.0


def tracked_position(database_url: str, group: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT position FROM broadcaster_positions WHERE name = %s",
                           (group,)).fetchone()
    return int(row[0]) if row else 0


def wait_for_position(broadcaster: Broadcaster, end: int, timeout: float = 30) -> None:
    """Until ``broadcaster`` (running) has published up to ``end``."""
    deadline = time.monotonic() + timeout
    while broadcaster.progress.position < end:
        assert time.monotonic() < deadline, (
            f"published up to {broadcaster.progress.position} of {end}: "
            f"{broadcaster.progress.last_error}")
        time.sleep(0.01)


def published_and_set_back(database_url: str, nats_url: str, stream: tuple[str, str],
                           group: str, writer: GroupCommitWriter,
                           ns: str) -> tuple[int, list[int]]:
    """Five events written and published by a broadcaster of ``group`` on ``stream``; the
    log's end and positions (``set_back`` then moves its saved position back)."""
    name, prefix = stream
    for i in range(5):
        writer.submit(Put(ns, f"k{i}", document={"i": i}), context()).result(10)
    end, positions = head(database_url)
    with InThread(Broadcaster(database_url, nats_url, stream=name, prefix=prefix,
                              name=group)):
        wait_until_published(nats_url, name, end, timeout=30)
    return end, positions


def set_back(database_url: str, group: str, position: int) -> None:
    """As if the broadcaster had died before saving its position past ``position``."""
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE broadcaster_positions SET position = %s WHERE name = %s",
                     (position, group))


def test_a_leader_resuming_behind_the_stream_saves_the_streams_position_with_nothing_new(
    database_url: str, nats_url: str, stream: tuple[str, str], writer: GroupCommitWriter,
    ns: str,
) -> None:
    """A leader killed after its events were stored and before it saved their position
    leaves the saved position behind the stream. The next leader resumes after the
    stream's last event, and must save that position even if nothing more is written
    (health, lag and the chaos checker's catch-up read it)."""
    name, prefix = stream
    group = f"behind-{name}"
    end, positions = published_and_set_back(database_url, nats_url, stream, group, writer, ns)
    assert tracked_position(database_url, group) == end
    set_back(database_url, group, positions[1])
    with InThread(Broadcaster(database_url, nats_url, stream=name, prefix=prefix,
                              name=group)) as running:
        deadline = time.monotonic() + 30
        while tracked_position(database_url, group) != end:
            assert time.monotonic() < deadline, (
                f"the saved position stayed at {tracked_position(database_url, group)}, "
                f"the stream ends at {end}")
            time.sleep(0.05)
        assert running.broadcaster.progress.position == end
    assert_exactly_the_log(asyncio.run(read_stream(nats_url, name, prefix)), positions)


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NatsNode, str]]:
    """Three JetStream nodes on 127.0.0.1 for this module's tests of replicated streams
    (each on a stream of its own): the first node, and the cluster's URL."""
    password = secrets.token_urlsafe(12)
    folder = tmp_path_factory.mktemp("nats-cluster")
    nodes = [NatsNode(f"n{i}", "127.0.0.1", [free_port(), free_port(), free_port()],
                      folder, password) for i in range(3)]
    for node in nodes:
        node.configure(nodes)
    try:
        for node in nodes:
            node.start()
        wait_cluster(nodes)
        yield nodes[0], cluster_url(nodes)
    finally:
        for node in nodes:
            node.discard()


def test_on_a_replicated_stream_of_a_nats_cluster_every_event_is_published_without_a_failure(
    database_url: str, nats_cluster: tuple[NatsNode, str], writer: GroupCommitWriter,
    ns: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """A stream replicated on three JetStream nodes answers differently from one server:
    a message whose id is still in its Raft group's pipeline is refused as "in process"
    (409), and one refused there keeps its id taken for the duplicate window. The
    broadcaster publishing under a steady load must never see either: each event is
    published once, in order, and its acknowledgement awaited. (A node starved of CPU
    long enough to miss its heartbeats makes the group elect a leader again, and a
    publish meanwhile finds no stream to answer it: a failure the broadcaster retries,
    and the only one allowed here; a clean clone saw one on a slow hour.)"""
    node, url = nats_cluster
    broadcaster = Broadcaster(database_url, url, stream="LOADED", prefix="loaded",
                              name=f"replicated-{ns}", replicas=3)
    failures_before = publish_failures()
    with InThread(broadcaster):
        with Traffic(writer, ns, threads=2) as traffic:
            time.sleep(4.0)  # the load
        end, positions = head(database_url)
        wait_for_position(broadcaster, end)
    assert traffic.failures == []
    retried = [r.getMessage() for r in caplog.records
               if r.name == "nexus_ssot.ledger.broadcaster" and "retrying" in r.getMessage()]
    assert [m for m in retried if "NoStreamResponseError" not in m] == []
    # every failure of the broadcaster is counted (a 409 "in process" among them), and
    # every one counted was such a retry
    assert publish_failures() - failures_before == len(retried)
    assert_exactly_the_log(asyncio.run(read_stream(node.url, "LOADED", "loaded")), positions)


def test_a_publish_refused_for_its_place_in_the_stream_leaves_a_replicated_stream_working(
    database_url: str, nats_cluster: tuple[NatsNode, str], writer: GroupCommitWriter,
    ns: str,
) -> None:
    """The broadcaster's guard against a gap is the stream's sequence of the message
    before each event (``Nats-Expected-Last-Sequence``). On a stream replicated on three
    JetStream nodes, nats-server 2.14 and 2.15 apply a message refused for the other
    guard, its expected last message id, on the followers all the same: they stop
    applying the stream ("critical write error"), and no later publish is answered. A
    refusal for the expected last sequence must leave the stream working: the
    broadcaster's publish at the right place is acknowledged, and so is all that follows."""
    node, url = nats_cluster
    for i in range(6):
        writer.submit(Put(ns, f"k{i}", document={"i": i}), context()).result(10)

    async def refused_then_right() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            rows = [e.history for e in await read_range(conn, 0, None, 100_000,
                                                        history=True)
                    if e.history is not None]
        broadcaster = Broadcaster(database_url, url, stream="REFUSED", prefix="refused",
                                  replicas=3)
        nc = await nats.connect(nats_servers(url))
        acks = Acks(nc)
        try:
            js = nc.jetstream()
            await ensure_stream(js, "REFUSED", ["refused.>"], duplicate_window=600,
                                replicas=3)
            chain = Chain("REFUSED", 0, ack_timeout=10)
            assert await broadcaster._publish(acks, chain, rows[:2]) == 2
            assert chain.last_seq == 2
            with pytest.raises(nats.js.errors.APIError, match="wrong last sequence"):
                # not where the stream ends
                await broadcaster._publish(acks, Chain("REFUSED", 3, ack_timeout=10),
                                           rows[2:3])
            assert await broadcaster._publish(acks, chain, rows[2:]) == len(rows) - 2
            assert chain.last_seq == len(rows)
        finally:
            await acks.close()
            await nc.close()

    asyncio.run(refused_then_right())
    for i in range(6, 9):  # and the broadcaster goes on after them
        writer.submit(Put(ns, f"k{i}", document={"i": i}), context()).result(10)
    end, positions = head(database_url)
    with InThread(Broadcaster(database_url, url, stream="REFUSED", prefix="refused",
                              name=f"refused-{ns}", replicas=3)) as running:
        wait_for_position(running.broadcaster, end)
    assert_exactly_the_log(asyncio.run(read_stream(node.url, "REFUSED", "refused")),
                           positions)


def test_events_the_stream_held_before_a_purge_are_passed_over_not_refused_forever(
    database_url: str, nats_url: str, stream: tuple[str, str], writer: GroupCommitWriter,
    ns: str,
) -> None:
    """A stream purged while the broadcaster's saved position was behind it: the next
    leader resumes from that position (the stream's messages are gone), and JetStream,
    which remembers the purged events' ids for its duplicate window, answers them as
    duplicates at their old sequences. They are held; the broadcaster goes on with the
    events after them at once, with no failure and nothing stored twice."""
    name, prefix = stream
    group = f"purged-{name}"
    before, positions = published_and_set_back(database_url, nats_url, stream, group, writer,
                                               ns)

    async def purge() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().purge_stream(name)
        finally:
            await nc.close()

    asyncio.run(purge())
    set_back(database_url, group, positions[-4])  # three of its events behind
    for i in range(5, 8):
        writer.submit(Put(ns, f"k{i}", document={"i": i}), context()).result(10)
    end, positions = head(database_url)
    failures_before = publish_failures()
    with InThread(Broadcaster(database_url, nats_url, stream=name, prefix=prefix,
                              name=group)) as running:
        wait_for_position(running.broadcaster, end)
    assert publish_failures() == failures_before
    assert_exactly_the_log(asyncio.run(read_stream(nats_url, name, prefix)),
                           [p for p in positions if p > before])
