"""`ssot replay`: rebuilds swapped in under live traffic, resumed after a kill, repairing
corrupted rows; point-in-time copies; status. The CLI runs as a process; every result is
compared with a fresh fold of the log."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from nexus_ssot.ops.project import ProjectionsThread
from nexus_ssot.projections.entry_search import EntrySearch
from nexus_ssot.projections.inline import CurrentState, EntryHistory
from nexus_ssot.projections.namespace_stats import NamespaceStats
from nexus_ssot.projections.runtime import Tables, View, create_tables
from tests.integration.conftest import AUTH, RunningServer, make_settings, own_log, wait_until
from tests.integration.test_cli import SSOT
from tests.integration.test_projections import expected_stats, view_stats
from tests.integration.test_search import search

INLINE_TABLES = ("entries", "entry_history")


database_url, api = own_log("ssot_replay")


def replay(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`ssot ARGS` against the database (`replay …`, or `--json replay …`)."""
    env = {**os.environ, "SSOT_DATABASE_URL": database_url}
    return subprocess.run([SSOT, *args], capture_output=True, text=True, env=env,
                          timeout=60)


def start_replay(database_url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SSOT_DATABASE_URL": database_url}
    return subprocess.Popen([SSOT, "replay", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture()
def scratch(db: Any) -> Iterator[str]:
    """A schema of this test's own for fresh folds, dropped afterwards."""
    name = f"scratch_{secrets.token_hex(4)}"
    yield name
    db.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def seed(client: httpx.Client, ns: str, count: int) -> int:
    """``count`` events in atomic batches of 1,000; the last position."""
    position = 0
    for start in range(0, count, 1000):
        r = client.post("/v1/batch", json={"operations": [
            {"op": "put", "namespace": ns, "key": f"seed/{i}", "document": {"i": i}}
            for i in range(start, min(count, start + 1000))]})
        assert r.status_code == 200, r.text
        position = r.json()["operations"][-1]["position"]
    return position


def scalar(db: Any, query: str, *params: Any) -> Any:
    row = db.execute(query, params).fetchone()
    return None if row is None else row[0]


def tracked(db: Any, name: str) -> int | None:
    value = scalar(db, "SELECT notification_id FROM projection_tracking"
                      " WHERE application_name = %s", name)
    return None if value is None else int(value)


def head(db: Any) -> int:
    return int(scalar(db, "SELECT coalesce(max(notification_id), 0) FROM ssot_events"))


def columns(db: Any, table: str) -> str:
    """The table's columns for EXCEPT ALL (json has no equality: compared as text)."""
    rows = db.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s"
        " ORDER BY ordinal_position", (table,)).fetchall()
    assert rows, table
    return ", ".join(f'"{c}"::text' if t == "json" else f'"{c}"' for c, t in rows)


def assert_equals_fresh_fold(database_url: str, db: Any, view: View, schema: str,
                             upto: int) -> None:
    """The live tables of ``view`` hold exactly what one fold of the log up to ``upto``
    (in one statement per table, into ``schema``) gives."""

    async def fold() -> None:
        async with await psycopg.AsyncConnection.connect(database_url,
                                                         autocommit=True) as conn:
            t = Tables(view.tables, schema=schema)
            await create_tables(conn, view, t)
            async with conn.transaction():
                await view.apply(conn, 0, upto, t)

    asyncio.run(fold())
    for table in view.tables:
        cols = columns(db, table)
        live, folded = f"SELECT {cols} FROM {table}", f"SELECT {cols} FROM {schema}.{table}"
        assert db.execute(f"({live}) EXCEPT ALL ({folded})").fetchall() == [], table
        assert db.execute(f"({folded}) EXCEPT ALL ({live})").fetchall() == [], table


def catalog(db: Any, table: str) -> tuple[int, list[str], list[str]]:
    """The table's oid, index names and constraint names."""
    oid = int(scalar(db, "SELECT to_regclass(%s)::oid", table))
    indexes = [r[0] for r in db.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        " AND tablename = %s ORDER BY 1", (table,))]
    constraints = [r[0] for r in db.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s ORDER BY 1", (oid,))]
    return oid, indexes, constraints


def waiting_on_lock(db: Any, query_start: str) -> bool:
    """Whether some session waits for a lock running a query that holds ``query_start``."""
    return bool(scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type ="
                           " 'Lock' AND datname = current_database()"
                           " AND query LIKE %s", "%" + query_start + "%"))


@pytest.fixture()
def patient_api(database_url: str) -> Iterator[RunningServer]:
    """A server whose writes wait up to 120 s: the test below holds the log's lock while a
    replay process starts, which on a loaded machine outlasts the default 10 s."""
    with RunningServer(make_settings(database_url, write_timeout=120)) as server:
        yield server


def test_rebuild_under_live_writes_never_shrinks_the_view_and_equals_a_fresh_fold(
        database_url: str, patient_api: RunningServer, ns: str, db: Any,
        scratch: str) -> None:
    """Four clients write and a reader counts the live tables every few ms while both
    inline views are rebuilt and swapped in: the reader never sees fewer rows than at the
    start, the writer goes on writing the new tables, and they equal a fresh fold."""
    api = patient_api
    client = httpx.Client(headers=AUTH, base_url=api.url, timeout=150)
    seed(client, ns, 2000)
    before = {t: catalog(db, t) for t in INLINE_TABLES}
    rows_before = {t: int(scalar(db, f"SELECT count(*) FROM {t}")) for t in INLINE_TABLES}
    stop = threading.Event()
    seen: dict[str, list[int]] = {t: [] for t in INLINE_TABLES}
    written: list[int] = []
    failures: list[str] = []

    def read() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not stop.is_set():
                for t in INLINE_TABLES:
                    try:
                        row = conn.execute(f"SELECT count(*) FROM {t}").fetchone()
                        seen[t].append(int(row[0]) if row else -1)
                    except psycopg.Error as e:
                        failures.append(f"reading {t}: {e}")
                time.sleep(0.003)

    def write(n: int) -> None:
        """Single puts, or (n = 0) batches of 100 that hold the log's lock longer."""
        with httpx.Client(headers=AUTH, base_url=api.url, timeout=150) as c:
            i = 0
            while not stop.is_set():
                i += 1
                if n == 0:
                    r = c.post("/v1/batch", json={"operations": [
                        {"op": "put", "namespace": ns, "key": f"b/{j}", "document": {"i": i}}
                        for j in range(100)]})
                else:
                    r = c.put(f"/v1/namespaces/{ns}/entries/w{n}/k{i % 40}", json={"i": i})
                if r.status_code in (200, 201):
                    written.append(i)
                else:
                    failures.append(f"{r.status_code} {r.text}")

    def write_once() -> None:
        held.append(client.put(f"/v1/namespaces/{ns}/entries/held", json={}).status_code)

    held: list[int] = []
    threads = [threading.Thread(target=read), threading.Thread(target=write_once)] + [
        threading.Thread(target=write, args=(n,)) for n in range(4)]
    try:
        with psycopg.connect(database_url) as holder:
            # a write queued for the log's lock when the first swap asks for it: it
            # commits after the shadow caught up, and the swap must fold it under its lock
            holder.execute("LOCK TABLE ssot_events IN SHARE MODE")
            for t in threads:
                t.start()
            wait_until(lambda: waiting_on_lock(db, "SELECT * FROM ssot_append"), "a write")
            writes_before = len(written)
            process = start_replay(database_url, "views", "--view", "current_state",
                                   "--view", "entry_history", "--batch", "500")
            wait_until(lambda: waiting_on_lock(db, "LOCK TABLE ssot_events"), "the swap")
            holder.rollback()
        out, err = process.communicate(timeout=60)
        # the writers went on across the rebuild and its swaps (an answer may arrive just
        # after the rebuild ended: waited for, not counted at that moment)
        wait_until(lambda: len(written) > writes_before, "a write acknowledged since")
        writes_during = len(written) - writes_before
        time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert process.returncode == 0, err
    assert held == [201]
    assert "current_state: rebuilt from position 0" in out
    assert "entry_history: rebuilt from position 0" in out
    assert failures == [] and writes_during > 0
    for t in INLINE_TABLES:
        assert len(seen[t]) > 10 and min(seen[t]) >= rows_before[t], t
        oid, indexes, constraints = catalog(db, t)
        assert oid != before[t][0], f"{t} was not swapped"
        assert (indexes, constraints) == before[t][1:], "names later migrations rely on"
    assert tracked(db, "current_state@rebuild") is None
    assert scalar(db, "SELECT to_regclass('entries__rebuild')") is None
    # ssot_append writes the swapped-in tables (its cached plans were invalidated)
    after = client.put(f"/v1/namespaces/{ns}/entries/after-swap", json={"ok": True}).json()
    assert scalar(db, "SELECT version FROM entries WHERE namespace = %s AND key = %s",
                  ns, "after-swap") == 1
    assert scalar(db, "SELECT count(*) FROM entry_history WHERE position = %s",
                  after["position"]) == 1
    upto = head(db)
    assert_equals_fresh_fold(database_url, db, CurrentState(), scratch, upto)
    assert_equals_fresh_fold(database_url, db, EntryHistory(), scratch, upto)


def test_an_interrupted_rebuild_resumes_where_it_stopped(
        database_url: str, client: httpx.Client, ns: str, db: Any, scratch: str) -> None:
    """SIGKILLed mid-way, the rebuild leaves its shadow and position (status says
    "rebuilding") and the next run resumes there; Ctrl-C stops it cleanly, saying how to
    resume; --restart starts over. Each result equals a fresh fold."""
    seed(client, ns, 2000)
    live_indexes = indexes(db, "entry_history")
    process = start_replay(database_url, "views", "--view", "entry_history", "--batch", "5")
    wait_until(lambda: (tracked(db, "entry_history@rebuild") or 0) > 0, "a first batch")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM pg_stat_activity"
                                  " WHERE application_name = 'ssot replay'") == 0,
               "the killed run's session to end")
    killed_at = tracked(db, "entry_history@rebuild")
    assert killed_at is not None and 0 < killed_at < head(db)
    assert scalar(db, "SELECT to_regclass('entry_history__rebuild')") is not None
    # the shadow folds with its unique indexes only; the others come after the fold
    assert all(" UNIQUE " in d for _, d in indexes(db, "entry_history__rebuild"))
    assert len(indexes(db, "entry_history__rebuild")) == 3 < len(live_indexes)

    listed = replay(database_url, "replay", "status", "--json")
    assert listed.returncode == 0, listed.stderr
    by_view = {s["view"]: s for s in json.loads(listed.stdout)}
    assert by_view["entry_history"]["state"] == "rebuilding"
    assert by_view["entry_history"]["rebuild_position"] == killed_at
    assert by_view["current_state"]["state"] == "current"
    assert by_view["current_state"]["kind"] == "inline"
    assert "rebuilding" in replay(database_url, "replay", "status").stdout

    resumed = replay(database_url, "--json", "replay", "views", "--view", "entry_history")
    assert resumed.returncode == 0, resumed.stderr
    [outcome] = json.loads(resumed.stdout)
    assert outcome["complete"] and outcome["resumed_from"] == killed_at
    assert outcome["position"] == head(db)
    assert tracked(db, "entry_history@rebuild") is None
    assert indexes(db, "entry_history") == live_indexes  # built again, the same names
    assert_equals_fresh_fold(database_url, db, EntryHistory(), scratch, head(db))

    process = start_replay(database_url, "views", "--view", "entry_history", "--batch", "5")
    wait_until(lambda: (tracked(db, "entry_history@rebuild") or 0) > 0, "a first batch")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    stopped_at = tracked(db, "entry_history@rebuild")
    assert f"entry_history: interrupted at position {stopped_at}" in err
    assert "run `ssot replay views --view entry_history` to resume" in err

    restarted = replay(database_url, "replay", "views", "--view", "entry_history",
                       "--restart")
    assert restarted.returncode == 0, restarted.stderr
    assert "entry_history: rebuilt from position 0" in restarted.stdout
    db.execute(f"DROP SCHEMA {scratch} CASCADE")
    assert_equals_fresh_fold(database_url, db, EntryHistory(), scratch, head(db))
    statuses = json.loads(replay(database_url, "replay", "status", "--json",
                                 "--view", "entry_history").stdout)
    assert [(s["view"], s["state"], s["rebuild_position"]) for s in statuses] == [
        ("entry_history", "current", None)]


def indexes(db: Any, table: str) -> list[tuple[str, str]]:
    """(name, definition) of each index of ``table``, by name."""
    return [(name, definition) for name, definition in db.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s ORDER BY 1",
        (table,)).fetchall()]


def test_rebuilt_views_have_the_live_indexes_names_and_settings(
        database_url: str, client: httpx.Client, ns: str, db: Any) -> None:
    """Secondary indexes — the search view's trigram index (GIN, its pending-list
    setting) among them — are built after the fold and swapped in under their live
    names, like every other index."""
    last = seed(client, ns, 1000)
    before = indexes(db, "entries")
    done = replay(database_url, "--json", "replay", "views", "--view", "current_state")
    assert done.returncode == 0, done.stderr
    assert indexes(db, "entries") == before
    asyncio.run(_create_live_tables(database_url, EntrySearch()))  # as `ssot migrate` does
    searched = indexes(db, "view_entry_search")
    assert any("USING gin" in d and "gin_pending_list_limit='512'" in d
               for name, d in searched if name == "view_entry_search_text_idx"), searched
    done = replay(database_url, "--json", "replay", "views", "--view", "entry_search")
    assert done.returncode == 0, done.stderr
    assert indexes(db, "view_entry_search") == searched
    found = search(client, ns, "seed/99", last)
    assert found.status_code == 200, found.text
    assert {e["key"] for e in found.json()["items"]} >= {"seed/99", "seed/990"}


async def _create_live_tables(database_url: str, view: View) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await create_tables(conn, view, Tables(view.tables))


def test_a_swap_that_cannot_take_its_locks_lets_go_and_retries(
        database_url: str, client: httpx.Client, ns: str, db: Any, scratch: str) -> None:
    """A long reader of the live table: each attempt waits half a second (writers queue
    behind it meanwhile, then go on) and lets go; once the reader is done the swap is
    made, with nothing folded twice or skipped."""
    e = f"/v1/namespaces/{ns}/entries"
    with psycopg.connect(database_url) as reader:
        reader.execute("SELECT count(*) FROM entry_history")  # holds its lock until commit
        process = start_replay(database_url, "views", "--view", "entry_history")
        wait_until(lambda: waiting_on_lock(db, "LOCK TABLE \"entry_history\""), "the swap")
        started = time.monotonic()
        statuses = [client.put(f"{e}/k{i}", json={}).status_code for i in range(5)]
        assert statuses == [201] * 5 and time.monotonic() - started < 5
        time.sleep(1.0)
        reader.commit()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "view entry_history: swap attempt 1: canceling statement due to lock timeout" in err
    assert_equals_fresh_fold(database_url, db, EntryHistory(), scratch, head(db))


def test_rebuild_repairs_rows_corrupted_by_sql(
        database_url: str, client: httpx.Client, ns: str, db: Any, scratch: str) -> None:
    """`ssot check` names a row corrupted by SQL and exits 1; `ssot replay views` makes the
    view equal to a fresh fold again, and the check passes."""
    e = f"/v1/namespaces/{ns}/entries"
    client.put(f"{e}/a", json={"v": 1})
    client.put(f"{e}/b", json={"v": 1})
    client.put(f"{e}/c", json={"v": 1})
    client.delete(f"{e}/c")
    first = replay(database_url, "replay", "views", "--view", "namespace_stats")
    assert first.returncode == 0, first.stderr
    good = db.execute("SELECT * FROM entries WHERE namespace = %s ORDER BY key",
                      (ns,)).fetchall()
    db.execute("UPDATE entries SET document = '{\"corrupt\": true}', version = 9"
               " WHERE namespace = %s AND key = 'a'", (ns,))
    db.execute("DELETE FROM entries WHERE namespace = %s AND key = 'b'", (ns,))
    db.execute("UPDATE view_namespace_stats SET entries = entries + 7 WHERE namespace = %s",
               (ns,))
    db.execute("DELETE FROM view_namespace_stats_actors WHERE namespace = %s", (ns,))

    check = ("check", "--view", "current_state", "--view", "namespace_stats")
    found = replay(database_url, *check)
    assert found.returncode == 1 and f"namespace {ns}: key a " in found.stdout, found.stdout
    repaired = replay(database_url, "replay", "views", "--view", "current_state", "--view",
                      "namespace_stats")
    assert repaired.returncode == 0, repaired.stderr
    checked = replay(database_url, *check)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert db.execute("SELECT * FROM entries WHERE namespace = %s ORDER BY key",
                      (ns,)).fetchall() == good
    position = tracked(db, "namespace_stats")
    assert position is not None
    assert view_stats(client, ns, position) == expected_stats(db, ns)
    assert_equals_fresh_fold(database_url, db, CurrentState(), scratch, head(db))
    assert_equals_fresh_fold(database_url, db, NamespaceStats(), scratch, position)


def test_the_live_runner_reloads_its_position_after_a_swap_moved_it(
        database_url: str, client: httpx.Client, ns: str, db: Any, scratch: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """The swap waits for a runner in the middle of a range and moves the view's row past
    it; the runner's next range fails its guarded advance, it reloads its position and
    goes on from the swapped-in tables."""
    caplog.set_level(logging.WARNING, logger="nexus_ssot.projections.runtime")
    e = f"/v1/namespaces/{ns}/entries"
    runner = ProjectionsThread(make_settings(database_url), ["namespace_stats"])
    runner.start()
    try:
        view_stats(client, ns, client.put(f"{e}/k0", json={}).json()["position"])
        with psycopg.connect(database_url) as holder:  # holds the runner at its advance
            holder.execute("SELECT 1 FROM projection_tracking"
                           " WHERE application_name = 'namespace_stats' FOR UPDATE")
            client.put(f"{e}/k1", json={})
            wait_until(lambda: waiting_on_lock(db, "UPDATE projection_tracking"),
                       "the runner to wait at its advance")
            client.put(f"{e}/k2", json={})
            # The swap waits for the tables as long as the test needs (by default it lets
            # go after 0.5 s, and on a loaded machine the runner could pass meanwhile).
            process = start_replay(database_url, "views", "--view", "namespace_stats",
                                   "--lock-wait", "120")
            wait_until(lambda: waiting_on_lock(db, "LOCK TABLE"), "the swap to wait")
            holder.rollback()
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        last = client.put(f"{e}/k3", json={}).json()["position"]
        assert view_stats(client, ns, last) == expected_stats(db, ns)
        assert "is no longer at position" in caplog.text
    finally:
        runner.stop()
    position = tracked(db, "namespace_stats")
    assert position is not None and position >= last
    assert_equals_fresh_fold(database_url, db, NamespaceStats(), scratch, position)


def test_side_effects_are_off_while_rebuilding_and_reconciled_after_the_swap(
        database_url: str, client: httpx.Client, ns: str, db: Any) -> None:
    """A view of this test's own whose side effect is a row written outside its tables
    (as a mirror's is a NATS KV write): none while it is rebuilt, then one reconcile. It
    never ran, so the swap also gives it its tracking row and its index's live name."""
    from nexus_ssot.projections.rebuild import rebuild

    token = secrets.token_hex(4)
    outside = f"echo_effects_{token}"

    class Echo:
        name = f"echo_{token}"
        tables = (f"echo_{token}",)
        side_effects = True

        def __init__(self) -> None:
            self.effects = True
            self.reconciled = 0

        def ddl(self, t: Tables) -> str:
            return (f"CREATE TABLE IF NOT EXISTS {t[self.tables[0]]}"
                    " (position bigint PRIMARY KEY)")

        async def apply(self, conn: Any, after: int, upto: int, t: Tables) -> None:
            await conn.execute(f"INSERT INTO {t[self.tables[0]]} SELECT notification_id"
                               " FROM ssot_events WHERE notification_id > %s"
                               " AND notification_id <= %s", (after, upto))
            if self.effects:
                await conn.execute(f"INSERT INTO {outside} VALUES (%s)", (upto,))

        async def reconcile(self, conn: Any, *, dry_run: bool = False) -> dict[str, int]:
            self.reconciled += 1
            return {"repaired": 0}

    view = Echo()
    db.execute(f"CREATE TABLE {outside} (upto bigint)")
    try:
        client.put(f"/v1/namespaces/{ns}/entries/k", json={})
        done = asyncio.run(rebuild(database_url, view, batch=100))
        assert done.complete and done.reconciled == {"repaired": 0} and view.reconciled == 1
        assert view.effects is False
        assert scalar(db, f"SELECT count(*) FROM {outside}") == 0
        assert tracked(db, view.name) == done.position == head(db)
        assert scalar(db, f"SELECT count(*) FROM {view.tables[0]}") == scalar(
            db, "SELECT count(*) FROM ssot_events")
        _, indexes, constraints = catalog(db, view.tables[0])
        assert indexes == [f"echo_{token}_pkey"] and f"echo_{token}_pkey" in constraints
        assert not [c for c in constraints if "__rebuild" in c]  # PostgreSQL 18: not-nulls
    finally:
        db.execute(f"DROP TABLE IF EXISTS {outside}, echo_{token}, echo_{token}__rebuild")
        db.execute("DELETE FROM projection_tracking WHERE application_name LIKE %s",
                   (f"echo_{token}%",))


def test_until_into_copies_the_views_as_of_a_past_position_or_time(
        database_url: str, client: httpx.Client, ns: str, db: Any) -> None:
    schema, foreign = f"asof_{ns}", f"foreign_{ns}"
    e = f"/v1/namespaces/{ns}/entries"
    client.put(f"{e}/a", json={"v": 1})
    cut = client.put(f"{e}/b", json={"v": 1}).json()
    client.put(f"{e}/a", json={"v": 2})
    client.delete(f"{e}/b")
    client.put(f"{e}/c", json={"v": 1})
    as_of = client.get(e, params={"position": cut["position"]}).json()["items"]
    expected = [(i["key"], i["version"], i["position"], i["document"]) for i in as_of]
    assert [k for k, *_ in expected] == ["a", "b"]

    def copied() -> list[tuple[Any, ...]]:
        return [tuple(r) for r in db.execute(
            f"SELECT key, version, position, document FROM {schema}.entries"
            " WHERE namespace = %s AND NOT deleted ORDER BY key", (ns,))]

    try:
        made = replay(database_url, "replay", "views", "--until", str(cut["position"]),
                      "--into", schema)
        assert made.returncode == 0, made.stderr
        assert f"as of position {cut['position']} into schema {schema}" in made.stdout
        assert copied() == expected
        assert db.execute(f"SELECT entries, deleted, writes FROM {schema}.view_namespace_stats"
                          " WHERE namespace = %s", (ns,)).fetchone() == (2, 0, 2)
        assert scalar(db, f"SELECT max(position) FROM {schema}.entry_history") == cut[
            "position"]

        again = replay(database_url, "replay", "views", "--until", "1", "--into", schema)
        assert again.returncode == 2 and "--into" in again.stderr
        assert "--replace" in again.stderr
        by_time = replay(database_url, "--json", "replay", "views", "--view",
                         "current_state", "--until", cut["recorded_at"], "--into", schema,
                         "--replace")
        assert by_time.returncode == 0, by_time.stderr
        assert json.loads(by_time.stdout)["position"] == cut["position"]
        assert copied() == expected
        assert scalar(db, "SELECT to_regclass(%s)", f"{schema}.entry_history") is None

        db.execute(f"CREATE SCHEMA {foreign}")
        db.execute(f"CREATE TABLE {foreign}.keep (x int)")
        for args, field, says in (
                (["--until", "1", "--into", foreign, "--replace"], "--into",
                 "not made by ssot replay"),
                (["--until", "1", "--into", "public"], "--into", "not a schema for a copy"),
                (["--until", str(head(db) + 1000), "--into", f"x{ns}"], "--until",
                 "beyond the log's head"),
                (["--until", "yesterday", "--into", f"x{ns}"], "--until",
                 "is not an RFC 3339 time"),
                (["--until", "2026-01-01T00:00:00", "--into", f"x{ns}"], "--until",
                 "no UTC offset"),
                (["--until", "1"], "--until", "needs --into"),
                (["--into", "Bad-Name"], "--into", "not a plain"),
                (["--view", "nope"], "--view", "unknown view 'nope'")):
            refused = replay(database_url, "replay", "views", *args)
            assert refused.returncode == 2, (args, refused.stderr)
            assert f"'{field}'" in refused.stderr and says in refused.stderr, refused.stderr
        assert scalar(db, f"SELECT count(*) FROM {foreign}.keep") == 0
        assert scalar(db, "SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                      f"x{ns}") == 0
    finally:
        db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        db.execute(f"DROP SCHEMA IF EXISTS {foreign} CASCADE")


def test_status_lists_every_view_with_its_lag(database_url: str, client: httpx.Client,
                                               ns: str, db: Any) -> None:
    rebuilt = replay(database_url, "replay", "views", "--view", "namespace_stats")
    assert rebuilt.returncode == 0, rebuilt.stderr
    client.put(f"/v1/namespaces/{ns}/entries/k", json={})
    client.put(f"/v1/namespaces/{ns}/entries/k", json={"v": 2})
    listed = replay(database_url, "replay", "status", "--json")
    assert listed.returncode == 0, listed.stderr
    by_view = {s["view"]: s for s in json.loads(listed.stdout)}
    assert {"current_state", "entry_history", "namespace_stats"} <= set(by_view)
    stats = by_view["namespace_stats"]
    assert (stats["kind"], stats["state"], stats["lag_events"]) == ("async", "behind", 2)
    assert stats["position"] == head(db) - 2 and stats["lag_seconds"] >= 0
    table = replay(database_url, "replay", "status").stdout.splitlines()
    assert table[0].split() == ["VIEW", "KIND", "POSITION", "LAG", "EVENTS", "LAG",
                                "SECONDS", "STATE", "REBUILD", "AT"]
    row = next(line.split() for line in table if line.split()[0] == "namespace_stats")
    assert row[1:4] == ["async", str(head(db) - 2), "2"] and row[5] == "behind"
