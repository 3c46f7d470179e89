"""Catch-up and live feeds of the log over HTTP, and `ssot watch`."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.integration.conftest import AUTH

SSOT = str(Path(sys.executable).parent / "ssot")


def write(client: httpx.Client, ns: str, n: int, key: str = "k") -> list[int]:
    return [client.put(f"/v1/namespaces/{ns}/entries/{key}", json={"i": i}).json()["position"]
            for i in range(n)]


def test_catch_up_pages_through_the_log_by_position(client: httpx.Client, ns: str) -> None:
    positions = write(client, ns, 5)
    write(client, f"{ns}x", 2)  # another namespace, filtered out
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"namespace": ns, "limit": 2}
    while True:
        page = client.get("/v1/events", params=params).json()
        seen += page["items"]
        if page["next_cursor"] is None:
            break
        params = {"namespace": ns, "limit": 2, "cursor": page["next_cursor"]}
    assert [e["data"]["position"] for e in seen] == positions
    assert all(e["specversion"] == "1.0" and e["subject"] == "k" for e in seen)
    assert [e["type"] for e in seen] == ["io.nexus.ssot.entry.created"] + [
        "io.nexus.ssot.entry.updated"] * 4
    after = client.get("/v1/events", params={"after": positions[2], "namespace": ns}).json()
    assert [e["data"]["position"] for e in after["items"]] == positions[3:]
    bad = client.get("/v1/events", params={"key": "k"})
    assert bad.status_code == 400 and bad.json()["field"] == "key"


def read_sse(client: httpx.Client, params: dict[str, Any], count: int,
             headers: dict[str, str] | None = None) -> list[tuple[int, dict[str, Any]]]:
    events: list[tuple[int, dict[str, Any]]] = []
    with client.stream("GET", "/v1/events/stream", params=params, headers=headers or {},
                       timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        last_id = None
        for line in response.iter_lines():
            if line.startswith("id: "):
                last_id = int(line[4:])
            elif line.startswith("data: "):
                assert last_id is not None
                events.append((last_id, orjson.loads(line[6:])))
                if len(events) == count:
                    return events
    return events


def test_the_live_feed_streams_new_events_and_resumes_with_last_event_id(
    client: httpx.Client, ns: str
) -> None:
    first = write(client, ns, 3)
    got = read_sse(client, {"namespace": ns, "after": 0}, 3)
    assert [p for p, _ in got] == first
    assert [e["data"]["position"] for _, e in got] == first
    # events written while nobody listens are delivered on resume, and only those
    later = write(client, ns, 2)
    resumed = read_sse(client, {"namespace": ns}, 2, {"Last-Event-ID": str(first[-1])})
    assert [p for p, _ in resumed] == later
    # a stream opened without a position starts at the head: it sees only what follows
    timer = threading.Timer(0.5, lambda: write(
        httpx.Client(headers=AUTH, base_url=str(client.base_url)), ns, 1, key="new"))
    timer.start()
    live = read_sse(client, {"namespace": ns}, 1)
    timer.join()
    assert live[0][1]["subject"] == "new"


def test_ssot_watch_prints_changes_as_they_come(api: Any, client: httpx.Client,
                                                ns: str) -> None:
    env = {**os.environ, "SSOT_URL": api.url}
    # watch from a known position rather than from "now": a watcher that is slow to start
    # would otherwise miss the writes made right after it was launched
    before = client.put(f"/v1/namespaces/{ns}/entries/svc/before", json={}).json()["position"]
    proc = subprocess.Popen([SSOT, "watch", ns, "--after", str(before)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client.put(f"/v1/namespaces/{ns}/entries/svc/a", json={"v": 1},
                   headers={"X-Reason": "rollout"})
        client.delete(f"/v1/namespaces/{ns}/entries/svc/a")
        assert proc.stdout is not None
        printed: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [printed.put(line.strip()) for line in proc.stdout],
                         daemon=True).start()
        lines: list[str] = []
        while len(lines) < 2:  # bounded: a watcher that prints nothing fails, not hangs
            try:
                lines.append(printed.get(timeout=30))
            except queue.Empty:
                raise AssertionError(f"ssot watch printed only {lines}") from None
    finally:
        proc.terminate()
        proc.wait(10)
    assert "created" in lines[0] and f"{ns}/svc/a v1" in lines[0] and "(rollout)" in lines[0]
    assert "deleted" in lines[1] and f"{ns}/svc/a v2" in lines[1]
