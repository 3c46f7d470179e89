"""The writer process can die (SIGKILL) mid-traffic: clients get 503 meanwhile, the
process is restarted, and a careful client (retrying with its Idempotency-Key) ends with
every write in the log exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from nexus_ssot.ledger.commands import Command, Context, JsonPatch, MergePatch, Put, Restore
from nexus_ssot.ledger.errors import InvalidUnicode
from nexus_ssot.ledger.writer_service import RemoteWriter
from nexus_ssot.ops.writer_process import WriterProcess
from tests.integration.conftest import AUTH, RunningServer, event_count, make_settings

WRITES = 150


def test_killing_the_writer_loses_nothing_and_doubles_nothing(database_url: str,
                                                               ns: str) -> None:
    settings = make_settings(database_url)
    writer = WriterProcess(settings)
    writer.start()
    try:
        with RunningServer(settings.model_copy(
                update={"writer_socket": writer.socket_path})) as srv, \
                httpx.Client(headers=AUTH, base_url=srv.url, timeout=30) as c:
            unavailable = 0
            killed_pid = None
            for i in range(WRITES):
                if i == WRITES // 3:
                    assert writer.proc is not None
                    killed_pid = writer.proc.pid
                    os.kill(killed_pid, signal.SIGKILL)
                deadline = time.monotonic() + 30
                while True:  # a careful client: same request, same key, until it is answered
                    r = c.put(f"/v1/namespaces/{ns}/entries/k{i % 7}", json={"i": i},
                              headers={"Idempotency-Key": f"{ns}-{i}"})
                    if r.status_code in (200, 201):
                        break
                    assert r.status_code == 503, r.text
                    assert r.headers["retry-after"]
                    unavailable += 1
                    assert time.monotonic() < deadline, "the writer never came back"
                    time.sleep(0.1)
            assert unavailable > 0, "the kill must have been noticed"
            assert writer.proc is not None and writer.proc.pid != killed_pid
            seen: Counter[int] = Counter()
            for k in range(7):
                items = c.get(f"/v1/namespaces/{ns}/entries/k{k}/history",
                              params={"limit": 1000}).json()["items"]
                assert [e["version"] for e in items] == list(range(1, len(items) + 1))
                seen.update(e["document"]["i"] for e in items)
            assert seen == Counter(range(WRITES))  # every write once, none twice
    finally:
        writer.stop()


def writer_context(ns: str) -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="test",
                   correlation_id=f"c-{ns}")


def test_a_lone_surrogate_sent_to_the_writer_is_refused_naming_its_path(
        api: RunningServer, ns: str, db: Any) -> None:
    """Over the writer's socket a command can carry a lone surrogate (JSON escapes it): the
    writer's decide refuses it as over HTTP, and the connection serves on."""
    assert api.settings.writer_socket is not None
    refusals: list[tuple[Command, str]] = [
        (Put(ns, "k", document={"a": [{"\udc00": 1}]}), 'document.a[0]["\\udc00"]'),
        (MergePatch(ns, "k", patch={"\ud800": None}), 'patch["\\ud800"]'),
        (JsonPatch(ns, "k", operations=[{"op": "add", "path": "/b", "value": "x\udbff"}]),
         "patch[0].value"),
        (Restore(ns, "k", from_version=1, document={"a": "\udfff"}), "document.a"),
    ]

    async def send() -> None:
        remote = RemoteWriter(api.settings.writer_socket or "")
        try:
            assert (await remote.write(Put(ns, "k", document={"a": 1}), writer_context(ns),
                                       None)).version == 1
            before = event_count(db)
            for command, path in refusals:
                with pytest.raises(InvalidUnicode) as refused:
                    await remote.write(command, writer_context(ns), None)
                assert (refused.value.code, refused.value.field) == ("invalid_unicode", path)
            assert event_count(db) == before
            assert (await remote.write(Put(ns, "k", document={"a": 2}), writer_context(ns),
                                       None)).version == 2
        finally:
            await remote.close()

    asyncio.run(send())



def test_the_answers_of_a_batch_reach_their_own_requests(
        api: RunningServer, ns: str, db: Any) -> None:
    """Requests sent at once on one connection are committed together, and a batch's
    answers to one connection leave in one write: each still reaches its own request."""
    assert api.settings.writer_socket is not None
    keys = [f"k{i}" for i in range(64)]

    async def send() -> list[Any]:
        remote = RemoteWriter(api.settings.writer_socket or "")
        try:
            # connected first, so that the 64 requests leave in one turn of the loop
            await remote.write(Put(ns, "warm", document={}), writer_context(ns), None)
            return list(await asyncio.gather(*(
                remote.write(Put(ns, key, document={"key": key}), writer_context(ns), None)
                for key in keys)))
        finally:
            await remote.close()

    outcomes = asyncio.run(send())
    assert [(o.key, o.version, o.document) for o in outcomes] == [
        (key, 1, {"key": key}) for key in keys]
    assert len({o.position for o in outcomes}) == len(keys)
    # committed in fewer transactions than requests: batches of several answers were sent
    row = db.execute("SELECT count(DISTINCT e.xmin::text) FROM ssot_events e "
                     "JOIN entry_history h ON h.position = e.notification_id "
                     "WHERE h.namespace = %s AND h.key <> 'warm'", (ns,)).fetchone()
    assert row is not None and 1 <= row[0] < len(keys), row


def test_a_write_on_a_connection_the_dead_writer_closed_is_sent_again_once(
        api: RunningServer, db: Any, ns: str) -> None:
    """uvloop refuses to write on a socket whose peer (a killed writer) closed before our
    reader noticed, with a RuntimeError; that write was never sent, so it goes out again
    on a new connection, once, instead of answering 500 (found by the chaos run)."""

    def refuse_once(connection: Any) -> None:
        write = connection.out.write

        def closed(data: bytes) -> None:
            connection.out.write = write
            raise RuntimeError("unable to perform operation on <UnixTransport closed=True>; "
                               "the handler is closed")
        connection.out.write = closed

    async def send() -> None:
        remote = RemoteWriter(api.settings.writer_socket or "")
        try:
            assert (await remote.write(Put(ns, "k", document={"a": 1}), writer_context(ns),
                                       None)).version == 1
            before = event_count(db)
            refuse_once(remote._connection)
            assert (await remote.write(Put(ns, "k", document={"a": 2}), writer_context(ns),
                                       None)).version == 2
            assert event_count(db) == before + 1
        finally:
            await remote.close()

    asyncio.run(send())


_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time\\n"
    "from nexus_ssot.ops.writer_process import exit_with_parent\\n"
    "exit_with_parent()\\nprint('armed', flush=True)\\ntime.sleep(60)"],
    stdout=subprocess.PIPE, text=True)
print(child.pid, flush=True)
print(child.stdout.readline().strip(), flush=True)
time.sleep(60)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_a_writer_whose_parent_is_killed_stops_at_once() -> None:
    # A SIGKILLed `ssot serve` must not leave its writer serving beside the next one's.
    with subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE,
                          text=True) as parent:
        assert parent.stdout is not None
        writer = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "armed"
        parent.kill()
    killed = time.monotonic()
    while _running(writer) and time.monotonic() - killed < 10:
        time.sleep(0.005)
    assert not _running(writer)
    assert time.monotonic() - killed < 0.3


_ORPHANED = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import sys\\n"
    "sys.stdin.read()\\n"  # until its parent is gone: as if it had been importing
    "from nexus_ssot.ops.children import exit_with_parent\\n"
    "exit_with_parent()\\nprint('armed', flush=True)\\nimport time\\ntime.sleep(60)"],
    stdin=subprocess.PIPE, stdout=open(sys.argv[1], "w"), stderr=subprocess.STDOUT,
    env={**os.environ, "SSOT_SERVE_PID": str(os.getpid())})
print(child.pid, flush=True)
"""


def test_a_child_whose_serve_died_before_it_could_watch_stops_at_once(tmp_path: Path) -> None:
    # serve SIGKILLed while its new writer still imported (seconds on a slow machine): no
    # parent-death signal comes then, and the parent to watch is already another process
    said = tmp_path / "child.out"
    parent = subprocess.run([sys.executable, "-c", _ORPHANED, str(said)],
                            capture_output=True, text=True, timeout=60, check=True)
    child = int(parent.stdout)
    deadline = time.monotonic() + 30
    while _running(child):
        assert time.monotonic() < deadline, "the orphaned child kept running"
        time.sleep(0.01)
    assert "armed" not in said.read_text()
