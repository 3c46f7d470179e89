"""The consistency check: views recomputed from the log and compared with the stored ones
(`ssot check`, GET /v1/health/consistency). Corruptions are made by SQL on rows of the
test's own namespace and put back afterwards, in this file's own database: each check
refolds the whole log, and the worker's shared one holds every event of the tests before."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from nexus_ssot.ops.project import ProjectionsThread
from nexus_ssot.projections.consistency import ConsistencyReport, check, describe
from nexus_ssot.projections.inline import CurrentState
from tests.integration.conftest import AUTH, free_port, own_log
from tests.integration.test_cli import SSOT
from tests.integration.test_projections import view_stats

database_url, api = own_log("ssot_check")


def ssot_check(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SSOT_DATABASE_URL": database_url}
    return subprocess.run([SSOT, "check", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@contextlib.contextmanager
def corrupted(db: Any, table: str, where: str, params: tuple[Any, ...],
              *corruptions: str) -> Iterator[None]:
    """Run ``corruptions`` (SQL, with ``params``) on the rows of ``table`` matching
    ``where``; afterwards put back exactly the rows that matched before (byte for byte:
    they are kept in a temporary table, JSON text included)."""
    saved = f"saved_{secrets.token_hex(4)}"
    db.execute(f"CREATE TEMP TABLE {saved} AS SELECT * FROM {table} WHERE {where}", params)
    try:
        with db.transaction():
            for sql in corruptions:
                db.execute(sql, params)
        yield
    finally:
        with db.transaction():
            db.execute(f"DELETE FROM {table} WHERE {where}", params)
            db.execute(f"INSERT INTO {table} SELECT * FROM {saved}")
        db.execute(f"DROP TABLE {saved}")


def describe_all(report: ConsistencyReport) -> list[str]:
    return sorted(describe(report))


def write_some(client: httpx.Client, ns: str) -> int:
    """Writes of every kind in ``ns``; the last position."""
    e = f"/v1/namespaces/{ns}/entries"
    assert client.put(f"{e}/services/db", json={"url": "pg://a"}).status_code == 201
    assert client.put(f"{e}/services/db", json={"url": "pg://b"}).status_code == 200
    client.put(f"{e}/a", json={"v": 1})
    client.patch(f"{e}/a", content=b'{"w": 2}',
                 headers={"Content-Type": "application/merge-patch+json"})
    client.put(f"{e}/gone", json={})
    client.delete(f"{e}/gone")
    position: int = client.post(f"{e}/a/revert", json={"to_version": 1}).json()["position"]
    return position


def test_a_clean_database_checks_consistent(views: ProjectionsThread, client: httpx.Client,
                                            ns: str, database_url: str) -> None:
    position = write_some(client, ns)
    view_stats(client, ns, position)  # namespace_stats has folded them
    result = ssot_check(database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("consistent: the views equal the log")
    for view in ("current_state", "entry_history", "namespace_stats"):
        assert any(line.startswith(f"{view}: ") and line.endswith("s)")
                   and ": consistent (" in line for line in lines), (view, lines)

    r = client.get("/v1/health/consistency")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["consistent"] is True
    assert report["head"] >= position
    by_view = {v["view"]: v for v in report["views"]}
    assert set(by_view) >= {"current_state", "entry_history", "namespace_stats"}
    assert by_view["current_state"]["position"] == report["head"]
    assert by_view["namespace_stats"]["position"] >= position
    mine = [n for n in by_view["entry_history"]["namespaces"] if n["namespace"] == ns]
    assert len(mine) == 1
    assert mine[0]["stored_rows"] == mine[0]["log_rows"] == 7
    assert mine[0]["stored_hash"] == mine[0]["log_hash"]
    assert by_view["entry_history"]["drifts"] == []


def test_drift_in_current_state_names_the_key_and_exits_1(
        client: httpx.Client, ns: str, db: Any, database_url: str) -> None:
    write_some(client, ns)
    write_some(client, f"{ns}-beside")  # a namespace without drift, reported too
    with corrupted(
            db, "entries", "namespace = %s AND key IN ('services/db', 'ghost')", (ns,),
            "UPDATE entries SET document = '{\"tampered\": true}', version = version - 1"
            " WHERE namespace = %s AND key = 'services/db'",
            "INSERT INTO entries (namespace, key, version, position, recorded_at, document,"
            " deleted) SELECT namespace, 'ghost', 1, position, recorded_at, document, false"
            " FROM entries WHERE namespace = %s AND key = 'a'"):
        result = ssot_check(database_url, "--view", "current_state")
        assert result.returncode == 1, result.stdout + result.stderr
        assert (f"current_state: namespace {ns}: key services/db differs (stored version 1,"
                f' log version 2; stored document {{"tampered": true}}, log document'
                f' {{"url":"pg://b"}})') in result.stdout
        assert (f"current_state: namespace {ns}: key ghost extra (in the view, not in the"
                " log)") in result.stdout
        assert result.stdout.splitlines()[-1] == "NOT consistent: current_state drift"

        as_json = ssot_check(database_url, "--view", "current_state", "--json")
        assert as_json.returncode == 1
        report = orjson.loads(as_json.stdout)
        assert report["consistent"] is False
        [view] = report["views"]
        drifts = {d["key"]["key"]: d for d in view["drifts"] if d["namespace"] == ns}
        assert drifts["services/db"]["kind"] == "differs"
        assert drifts["services/db"]["stored"]["version"] == "1"
        assert drifts["services/db"]["log"]["version"] == "2"
        assert drifts["ghost"]["kind"] == "extra"
        [summary] = [n for n in view["namespaces"] if n["namespace"] == ns]
        assert (summary["stored_rows"], summary["log_rows"], summary["drifting_rows"]) == (
            4, 3, 2)
        assert summary["consistent"] is False
        [beside] = [n for n in view["namespaces"] if n["namespace"] == f"{ns}-beside"]
        assert beside["consistent"] is True  # every namespace is reported

        r = client.get("/v1/health/consistency", params={"view": "current_state"})
        assert r.status_code == 200
        assert r.json()["consistent"] is False
        assert [(d["namespace"], d["key"], d["kind"]) for d in r.json()["views"][0]["drifts"]
                if d["namespace"] == ns] == [(ns, {"key": "ghost"}, "extra"),
                                              (ns, {"key": "services/db"}, "differs")]
    after = ssot_check(database_url, "--view", "current_state")
    assert f"namespace {ns}:" not in after.stdout, after.stdout


def test_a_deleted_history_row_is_named_missing(client: httpx.Client, ns: str, db: Any,
                                                database_url: str) -> None:
    write_some(client, ns)
    with corrupted(db, "entry_history", "namespace = %s AND key = 'a' AND version = 1",
                   (ns,), "DELETE FROM entry_history"
                   " WHERE namespace = %s AND key = 'a' AND version = 1"):
        result = ssot_check(database_url, "--view", "entry_history", "--namespace", ns)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.splitlines() == [
            result.stdout.splitlines()[0],
            f"entry_history: namespace {ns}: key a version 1 missing (in the log, not in the"
            " view)",
            "NOT consistent: entry_history drift"]
        assert result.stdout.startswith("entry_history: inline, position ")
        assert ", 1 namespaces, 6 rows: DRIFT (" in result.stdout
        r = client.get("/v1/health/consistency", params=[
            ("view", "entry_history"), ("view", "current_state"), ("namespace", ns)])
        body = r.json()
        assert [(v["view"], v["consistent"], {n["namespace"] for n in v["namespaces"]})
                for v in body["views"]] == [("current_state", True, {ns}),
                                            ("entry_history", False, {ns})]
    after = ssot_check(database_url, "--view", "entry_history")
    assert f"namespace {ns}:" not in after.stdout, after.stdout


def test_drift_in_namespace_stats_is_named(views: ProjectionsThread, client: httpx.Client,
                                           ns: str, db: Any, database_url: str) -> None:
    position = write_some(client, ns)
    view_stats(client, ns, position)  # folded: the runner has nothing more to do here
    with corrupted(db, "view_namespace_stats", "namespace = %s", (ns,),
                   "UPDATE view_namespace_stats SET entries = entries + 1"
                   " WHERE namespace = %s"):
        result = ssot_check(database_url)
        assert result.returncode == 1, result.stdout + result.stderr
        assert (f"namespace_stats: namespace {ns}: view_namespace_stats row differs"
                " (stored entries 3, log entries 2)") in result.stdout
        assert "current_state: inline, position" in result.stdout
        last = result.stdout.splitlines()[-1]
        assert last.startswith("NOT consistent: ") and "namespace_stats" in last
    after = ssot_check(database_url, "--view", "namespace_stats")
    assert f"namespace {ns}:" not in after.stdout, after.stdout


def test_bad_input_and_an_unreachable_database(client: httpx.Client, tmp_path: Path) -> None:
    for option, field, value, code, message in (
            ("--view", "view", "nope", "unknown_view",
             "unknown view 'nope'; the views are current_state, entry_history"),
            ("--namespace", "namespace", "Not A Namespace", "invalid_namespace",
             "'Not A Namespace' is invalid")):
        cli = ssot_check("host=127.0.0.1 dbname=unused", option, value)
        assert cli.returncode == 2
        assert option in cli.stderr and message in cli.stderr, cli.stderr
        r = client.get("/v1/health/consistency", params={field: value})
        assert r.status_code == 400
        problem = r.json()
        assert (problem["code"], problem["field"]) == (code, field)
        assert message in problem["detail"]

    down = ssot_check(f"host=127.0.0.1 port={free_port()} user=root dbname=x"
                      " connect_timeout=2")
    assert down.returncode == 5
    assert down.stderr.startswith("error: unreachable: the database")
    env = {k: v for k, v in os.environ.items()
           if k not in ("SSOT_DATABASE_URL", "SSOT_NATS_URL")}
    env["SSOT_DATA_DIR"] = str(tmp_path)  # where no ssot serve runs
    unset = subprocess.run([SSOT, "check"], capture_output=True, text=True, env=env,
                           timeout=60)
    assert (unset.returncode, unset.stderr.strip()) == (
        5, "error: not_configured: set SSOT_DATABASE_URL, or start ssot serve with embedded "
        f"servers on the data dir {tmp_path} (it records them in {tmp_path}/serve.json)")


def test_checks_run_while_writes_continue_and_neither_blocks_the_other(
        views: ProjectionsThread, api: Any, ns: str, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer keeps writing (and namespace_stats keeps folding) while checks run: every
    check sees one consistent snapshot, and no write waits on a check, even one that holds
    its snapshot (and whatever it locks) for 1.5 s."""
    first = asyncio.run(check(database_url))
    baseline = first.seconds
    assert not [d for v in first.views for d in v.drifts if d.namespace == ns]
    stop = threading.Event()
    writes: list[tuple[float, float]] = []
    failures: list[str] = []

    def writer() -> None:
        with httpx.Client(headers=AUTH, base_url=api.url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                i += 1
                started = time.monotonic()
                key = f"k{i % 50}"
                r = (c.delete(f"/v1/namespaces/{ns}/entries/{key}") if i % 7 == 0 else
                     c.put(f"/v1/namespaces/{ns}/entries/{key}", json={"i": i}))
                writes.append((started, time.monotonic()))
                if r.status_code not in (200, 201, 404):
                    failures.append(f"{r.status_code} {r.text}")
                time.sleep(0.005)

    def timed_check() -> tuple[float, float]:
        """A check finding just what the first one found (nothing, in a clean database:
        writes landing meanwhile are not drift)."""
        started = time.monotonic()
        report = asyncio.run(check(database_url))
        assert describe_all(report) == describe_all(first)
        return started, time.monotonic()

    fold = CurrentState.apply

    holds: list[tuple[float, float]] = []

    async def held(self: CurrentState, conn: Any, after: int, upto: int, t: Any) -> None:
        await fold(self, conn, after, upto, t)
        began = time.monotonic()
        await conn.execute("SELECT pg_sleep(1.5)")
        holds.append((began, time.monotonic()))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        # The times only guard against a check stuck behind the writes (seconds: a lock
        # or write timeout); that neither waits on the other the writes inside each check
        # and each hold show. On a slow, busy host a check beside the writes took 2.4 s
        # against 0.6 s alone, so the checks with a hold are held to those without one.
        until, loaded = time.monotonic() + 3, []
        while time.monotonic() < until or len(loaded) < 2:  # back to back
            started, ended = timed_check()
            loaded.append(ended - started)
            assert ended - started < 4 * baseline + 2.0, (ended - started, baseline)
        monkeypatch.setattr(CurrentState, "apply", held)
        for _ in range(2):
            started, ended = timed_check()
            assert ended - started < 2 * max(loaded) + 2.5, (ended - started, loaded)
            inside = [w for w in writes if started <= w[0] and w[1] <= ended]
            assert len(inside) >= 20, len(inside)
    finally:
        stop.set()
        thread.join(30)
    assert failures == []
    # While a check held its snapshot, writes went on: each hold saw writes both begin and
    # end inside it (a write waiting on the check would end only after the hold; how long
    # one write takes on a busy machine proves nothing either way).
    assert len(holds) >= 2, holds
    for began, ended in holds:
        during = [w for w in writes if began <= w[0] and w[1] <= ended]
        assert len(during) >= 5, (len(during), ended - began)
