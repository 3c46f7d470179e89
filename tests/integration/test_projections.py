"""Asynchronous views: exactly once across crashes, read-your-writes with min_position."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import threading
import time
from typing import Any

import httpx
import psycopg

from nexus_ssot.ops.project import ProjectionsThread
from nexus_ssot.projections.inline import CurrentState, EntryHistory
from nexus_ssot.projections.runtime import Tables, create_tables
from tests.integration.conftest import AUTH, make_settings
from tests.integration.test_cli import SSOT


def expected_stats(db: Any, ns: str) -> dict[str, Any]:
    """The namespace's statistics computed from the inline views (not from the view)."""
    entries, deleted = db.execute(
        "SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE deleted)"
        " FROM entries WHERE namespace = %s", (ns,)).fetchone()
    writes, last = db.execute(
        "SELECT count(*), max(position) FROM entry_history WHERE namespace = %s",
        (ns,)).fetchone()
    actors = dict(db.execute(
        "SELECT actor, count(*) FROM entry_history WHERE namespace = %s GROUP BY actor",
        (ns,)).fetchall())
    return {"entries": entries, "deleted": deleted, "writes": writes, "last_position": last,
            "writes_by_actor": actors}


def view_stats(client: httpx.Client, ns: str, min_position: int) -> dict[str, Any]:
    r = client.get(f"/v1/namespaces/{ns}/stats", params={"min_position": min_position})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["view_position"] >= min_position
    return {k: body[k] for k in ("entries", "deleted", "writes", "last_position",
                                 "writes_by_actor")}


def view_stats_eventually(client: httpx.Client, ns: str, min_position: int,
                          timeout: float = 60) -> dict[str, Any]:
    """``view_stats`` once the view has reached ``min_position``: a view process that was
    just started may need longer than one request's wait (2 s) on a loaded machine."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/namespaces/{ns}/stats", params={"min_position": min_position})
        if r.status_code != 503 or r.json()["code"] != "view_behind" or (
                time.monotonic() > deadline):
            return view_stats(client, ns, min_position)


def test_namespace_stats_follow_every_kind_of_write(views: ProjectionsThread,
                                                    client: httpx.Client, ns: str,
                                                    db: Any) -> None:
    e = f"/v1/namespaces/{ns}/entries"
    client.put(f"{e}/a", json={"v": 1})
    client.put(f"{e}/a", json={"v": 2})
    client.put(f"{e}/b", json={})
    client.delete(f"{e}/b")
    client.put(f"{e}/c", json={})
    client.delete(f"{e}/c")
    client.post(f"{e}/c/revert", json={"to_version": 1})  # undeletes
    client.put(f"/v1/namespaces/{ns}", json={"conflict_policy": "strict"})  # not counted
    last = client.post("/v1/batch", json={"operations": [
        {"op": "put", "namespace": ns, "key": "d", "document": {}},
        {"op": "delete", "namespace": ns, "key": "d"},
        {"op": "put", "namespace": ns, "key": "d", "document": {"again": True}},
    ]}).json()["operations"][-1]["position"]
    got = view_stats(client, ns, last)
    assert got == expected_stats(db, ns)
    assert (got["entries"], got["deleted"], got["writes"]) == (3, 1, 10)


def test_min_position_waits_for_the_view_and_times_out_with_503(
        database_url: str, client: httpx.Client, ns: str) -> None:
    position = client.put(f"/v1/namespaces/{ns}/entries/k", json={}).json()["position"]
    # no runner: the view stays behind, the read waits its 2 s and answers 503
    started = time.monotonic()
    r = client.get(f"/v1/namespaces/{ns}/stats", params={"min_position": position})
    waited = time.monotonic() - started
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    problem = r.json()
    assert (problem["code"], problem["field"], problem["min_position"]) == (
        "view_behind", "min_position", position)
    assert problem["view_position"] < position
    assert 1.9 <= waited < 5
    # a runner starting while a read waits: the read answers as soon as the view is there
    answer: dict[str, Any] = {}

    def read() -> None:
        with httpx.Client(headers=AUTH, base_url=str(client.base_url), timeout=30) as c:
            answer["r"] = c.get(f"/v1/namespaces/{ns}/stats",
                                params={"min_position": position})

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    thread = ProjectionsThread(make_settings(database_url))
    thread.start()
    try:
        reader.join(10)
        assert answer["r"].status_code == 200, answer["r"].text
        assert answer["r"].json()["entries"] == 1
    finally:
        thread.stop()


def test_a_sigkilled_view_process_resumes_without_applying_anything_twice(
        database_url: str, api: Any, client: httpx.Client, ns: str, db: Any) -> None:
    """`ssot project` is killed at random points while four clients write; once it runs
    to the end the view equals what the inline views say."""
    env = {**os.environ, "SSOT_DATABASE_URL": database_url}
    stop = threading.Event()
    failures: list[str] = []

    def writer(n: int) -> None:
        with httpx.Client(headers=AUTH, base_url=api.url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                i += 1
                key = f"w{n}/k{i % 7}"
                r = (c.delete(f"/v1/namespaces/{ns}/entries/{key}") if i % 5 == 0 else
                     c.put(f"/v1/namespaces/{ns}/entries/{key}", json={"i": i}))
                if r.status_code not in (200, 201, 404):
                    failures.append(f"{r.status_code} {r.text}")

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in writers:
        t.start()
    rng = random.Random(7)
    try:
        for _ in range(5):
            process = subprocess.Popen([SSOT, "project", "--view", "namespace_stats"],
                                       env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 1.2))
            process.send_signal(signal.SIGKILL)
            process.wait(10)
    finally:
        stop.set()
        for t in writers:
            t.join(30)
    assert failures == []
    head = db.execute("SELECT max(position) FROM entry_history").fetchone()[0]
    process = subprocess.Popen([SSOT, "project", "--view", "namespace_stats"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert view_stats_eventually(client, ns, head) == expected_stats(db, ns)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def test_the_view_position_is_in_health(views: ProjectionsThread, client: httpx.Client,
                                        ns: str) -> None:
    position = client.put(f"/v1/namespaces/{ns}/entries/k", json={}).json()["position"]
    view_stats(client, ns, position)
    health = client.get("/v1/health").json()
    assert health["views"]["namespace_stats"]["position"] >= position
    assert set(health["views"]["namespace_stats"]) == {"position", "lag_events",
                                                       "lag_seconds"}



def test_the_inline_folds_reproduce_the_inline_views_exactly(
        database_url: str, client: httpx.Client, ns: str, db: Any) -> None:
    """Folding the whole log (every test's writes so far, of every kind) into a schema of
    its own gives the very rows the writer wrote in its transactions."""
    e = f"/v1/namespaces/{ns}/entries"
    client.put(f"{e}/a", json={"v": 1})
    client.patch(f"{e}/a", content=b'{"w": 2}',
                 headers={"Content-Type": "application/merge-patch+json"})
    client.delete(f"{e}/a")
    client.post(f"{e}/a/revert", json={"to_version": 1})
    client.put(f"/v1/namespaces/{ns}", json={"conflict_policy": "merge"})
    schema = f"fold_{ns}"
    head = db.execute("SELECT max(notification_id) FROM ssot_events").fetchone()[0]

    async def fold() -> None:
        async with await psycopg.AsyncConnection.connect(database_url,
                                                         autocommit=True) as conn:
            for view in (CurrentState(), EntryHistory()):
                t = Tables(view.tables, schema=schema)
                await create_tables(conn, view, t)
                async with conn.transaction():
                    await view.apply(conn, 0, head, t)

    try:
        asyncio.run(fold())
        for table, columns in (
                ("entries", "namespace, key, version, position, recorded_at,"
                            " document::text, deleted, hash"),
                ("entry_history", "namespace, key, version, position, recorded_at,"
                                  " event_type, event_id, actor, reason, correlation_id,"
                                  " causation_id, idempotency_key, patch::text,"
                                  " document::text, resolution::text, prev_hash, hash")):
            live = f"SELECT {columns} FROM {table} WHERE position <= {head}"
            folded = f"SELECT {columns} FROM {schema}.{table}"
            assert db.execute(f"({live}) EXCEPT ALL ({folded})").fetchall() == []
            assert db.execute(f"({folded}) EXCEPT ALL ({live})").fetchall() == []
            count = db.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()[0]
            assert count > 0
    finally:
        db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
