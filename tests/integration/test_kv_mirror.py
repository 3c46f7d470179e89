"""The nats_kv_mirror view: JetStream KV buckets equal to current state after every kind
of write, through NATS outages, and after a replay without effects and a reconcile."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import nats
import nats.js.errors
import orjson
import psycopg
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus_ssot.ledger.addressing import check_key
from nexus_ssot.ledger.errors import InvalidInput
from nexus_ssot.ledger.namespace_settings import SETTINGS_NAMESPACE
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ops.project import run_all, runners_for
from nexus_ssot.projections.kv_mirror import KvMirror, entry_key, kv_key
from nexus_ssot.projections.runtime import Tables, ViewRunner, create_tables
from nexus_ssot.projections.views import KV_MIRROR, SERVICE_VIEWS
from tests.integration.conftest import KV_BUCKET_PREFIX, delete_kv_buckets, free_port, make_settings
from tests.integration.test_cli import SSOT


@pytest.fixture()
def mirror(api: Any, db: Any, nats_url: str) -> Iterator[KvMirror]:
    """A mirror of this test's own (view name, table, bucket prefix), tracking from the
    log's head; removed afterwards with its buckets."""
    token = secrets.token_hex(4)

    class Mirror(KvMirror):
        name = f"kv_mirror_test_{token}"
        tables = (f"view_kv_mirror_{token}",)

    view = Mirror(nats_url, f"kvt{token}_")
    head = db.execute("SELECT coalesce(max(notification_id), 0) FROM ssot_events").fetchone()[0]
    db.execute("INSERT INTO projection_tracking (application_name, notification_id)"
               " VALUES (%s, %s)", (Mirror.name, head))
    try:
        yield view
    finally:
        db.execute("DELETE FROM projection_tracking WHERE application_name = %s",
                   (Mirror.name,))
        db.execute(f'DROP TABLE IF EXISTS "{Mirror.tables[0]}"')
        delete_kv_buckets(nats_url, view.bucket_prefix)


@contextmanager
def running(database_url: str, view: KvMirror) -> Iterator[ViewRunner]:
    """A runner of the view on a thread with its own event loop."""
    runner = ViewRunner(database_url, view, poll_interval=0.2)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(run_all([runner], stop),))
    thread.start()
    try:
        yield runner
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def wait_for(db: Any, runner: ViewRunner, position: int, timeout: float = 30) -> None:
    """Until the view's tracked position reaches ``position``."""
    deadline = time.monotonic() + timeout
    while True:
        row = db.execute("SELECT notification_id FROM projection_tracking"
                         " WHERE application_name = %s", (runner.view.name,)).fetchone()
        if row is not None and row[0] >= position:
            return
        assert time.monotonic() < deadline, (row, position, runner.progress.last_error)
        time.sleep(0.05)


def canonical(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def current(db: Any, ns: str) -> dict[str, Any]:
    """key → (deleted, document) of every entry of the namespace, from ``entries``."""
    return {key: (deleted, None if text is None else orjson.loads(text))
            for key, text, deleted in db.execute(
                "SELECT key, document::text, deleted FROM entries WHERE namespace = %s",
                (ns,)).fetchall()}


async def assert_bucket_is_current_state(js: Any, view: KvMirror, ns: str,
                                         state: dict[str, Any]) -> None:
    """kv.get of every live entry is its document; deleted entries' keys are absent; the
    bucket holds no other key."""
    kv = await js.key_value(view.bucket(ns))
    for key, (deleted, document) in state.items():
        if deleted:
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get(kv_key(key))
        else:
            got = await kv.get(kv_key(key))
            assert canonical(orjson.loads(got.value)) == canonical(document), key
    live = {kv_key(k) for k, (deleted, _) in state.items() if not deleted}
    assert set(await kv.keys()) == live


def test_the_mirror_equals_current_state_after_every_kind_of_write(
        mirror: KvMirror, client: httpx.Client, ns: str, db: Any, nats_url: str,
        database_url: str) -> None:
    e = f"/v1/namespaces/{ns}/entries"

    def write_everything() -> int:
        """Puts, a merge patch, deletes, reverts, a namespace restore, settings, a batch;
        the last write's position."""
        client.put(f"{e}/services/payments/pool", json={"size": 5})
        client.put(f"{e}/a", json={"v": 1})
        client.patch(f"{e}/a", content=b'{"w": 2}',
                     headers={"Content-Type": "application/merge-patch+json"})
        client.put(f"{e}/b", json={"x": 1})
        client.delete(f"{e}/b")
        client.put(f"{e}/c", json={"v": 1})
        client.delete(f"{e}/c")
        assert client.post(f"{e}/c/revert", json={"to_version": 1}).status_code == 200
        client.put(f"{e}/d", json={"v": 1})
        client.put(f"{e}/d", json={"v": 2})
        assert client.post(f"{e}/d/revert", json={"to_version": 1}).status_code == 200
        mark = client.put(f"{e}/x/.hidden/a_b-c.d", json={"s": "é", "n": None}).json()
        client.put(f"{e}/x/.hidden/a_b-c.d", json={"s": "later"})
        client.put(f"{e}/y", json={})
        client.delete(f"{e}/d")
        restore = client.post(f"/v1/namespaces/{ns}/restore", json={
            "position": mark["position"], "reason": "back to the mark"})
        assert [(o["key"], o["action"]) for o in restore.json()["operations"]] == [
            ("d", "recreate"), ("x/.hidden/a_b-c.d", "revert"), ("y", "delete")]
        settings = client.put(f"/v1/namespaces/{ns}", json={"conflict_policy": "strict"})
        assert settings.status_code in (200, 201), settings.text
        batch = client.post("/v1/batch", json={"operations": [
            {"op": "put", "namespace": ns, "key": "e1", "document": {"list": [1, 2]}},
            {"op": "delete", "namespace": ns, "key": "a"},
            {"op": "put", "namespace": ns, "key": "services/payments/pool",
             "document": {"size": 10}},
            {"op": "delete", "namespace": ns, "key": "services/payments/db.url"},
        ]})
        assert batch.status_code == 200, batch.text
        position: int = batch.json()["operations"][-1]["position"]
        return position

    async def body(runner: ViewRunner) -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            kv = await js.key_value(mirror.bucket(ns))
            watcher = await kv.watch("services.>")
            initial = []
            while (update := await watcher.updates(timeout=5)) is not None:
                initial.append((update.key, orjson.loads(update.value)))
            assert initial == [("services.payments.db=2Eurl", {"url": "postgres://db"})]

            last = await asyncio.to_thread(write_everything)
            await asyncio.to_thread(wait_for, db, runner, last)
            state = current(db, ns)
            await assert_bucket_is_current_state(js, mirror, ns, state)
            assert state["a"] == (True, None) and state["c"] == (False, {"v": 1})
            assert state["d"] == (False, {"v": 1}) and state["y"] == (True, None)

            # the folder's watcher saw its keys change, and nothing outside it
            folder = {kv_key(k): doc for k, (deleted, doc) in state.items()
                      if k.startswith("services/") and not deleted}
            assert folder == {"services.payments.pool": {"size": 10}}
            watched = dict(initial)
            operations = []
            while watched != folder:
                update = await watcher.updates(timeout=10)
                operations.append((update.key, update.operation))
                if update.operation in ("DEL", "PURGE"):
                    watched.pop(update.key, None)
                else:
                    watched[update.key] = orjson.loads(update.value)
            assert ("services.payments.db=2Eurl", "DEL") in operations
            assert all(key.startswith("services.") for key, _ in operations)
            await watcher.stop()

            # namespace settings are not mirrored
            with pytest.raises(nats.js.errors.BucketNotFoundError):
                await js.key_value(mirror.bucket(SETTINGS_NAMESPACE))
        finally:
            await nc.close()

    with running(database_url, mirror) as runner:
        first = client.put(f"{e}/services/payments/db.url", json={"url": "postgres://db"})
        wait_for(db, runner, first.json()["position"])
        asyncio.run(body(runner))

    # the view's table holds exactly the live entries, at their versions
    table = mirror.tables[0]
    assert db.execute(f'SELECT key, version, position FROM "{table}" WHERE namespace = %s'
                      " ORDER BY key", (ns,)).fetchall() == db.execute(
        "SELECT key, version, position FROM entries WHERE namespace = %s AND NOT deleted"
        " ORDER BY key", (ns,)).fetchall()


def test_a_replay_without_effects_leaves_the_bucket_stale_until_reconciled(
        mirror: KvMirror, client: httpx.Client, ns: str, db: Any, nats_url: str,
        database_url: str) -> None:
    e = f"/v1/namespaces/{ns}/entries"
    start = db.execute("SELECT coalesce(max(notification_id), 0) FROM ssot_events").fetchone()[0]

    def wave(*writes: tuple[str, str, Any]) -> int:
        position = 0
        for method, key, document in writes:
            r = (client.delete(f"{e}/{key}") if method == "delete" else
                 client.put(f"{e}/{key}", json=document))
            assert r.status_code in (200, 201), r.text
            position = r.json()["position"]
        return position

    async def body() -> None:
        t = Tables(mirror.tables)
        nc = await nats.connect(nats_url)
        async with await psycopg.AsyncConnection.connect(database_url,
                                                         autocommit=True) as conn:
            try:
                js = nc.jetstream()
                await create_tables(conn, mirror, t)
                first = await asyncio.to_thread(
                    wave, ("put", "a", {"v": 1}), ("put", "b", {"x": 1}),
                    ("put", "c/d", {}), ("put", "f", {"f": 1}))
                async with conn.transaction():
                    await mirror.apply(conn, start, first, t)
                await assert_bucket_is_current_state(js, mirror, ns, current(db, ns))

                # a replay (as a rebuild runs it) folds the table but writes nothing
                second = await asyncio.to_thread(
                    wave, ("put", "a", {"v": 2}), ("delete", "c/d", None),
                    ("put", "e", {"e": True}), ("delete", "f", None),
                    ("put", "f", {"f": True}))  # equal to {"f": 1} in Python, not in JSON
                mirror.effects, mirror.read_slice = False, 2  # and read in slices
                async with conn.transaction():
                    await mirror.apply(conn, first, second, t)
                mirror.effects = True
                kv = await js.key_value(mirror.bucket(ns))
                await kv.put("not=an=entry.key", b"{")  # not ours
                assert orjson.loads((await kv.get("a")).value) == {"v": 1}  # stale

                plan = await mirror.reconcile(conn, namespaces=[ns], dry_run=True)
                assert {k: plan[k] for k in ("missing", "stale", "extra", "repaired")} == {
                    "missing": 1, "stale": 2, "extra": 2, "repaired": 0}
                assert plan["examples"] == {
                    "missing": [f"{ns}/e"], "stale": [f"{ns}/a", f"{ns}/f"],
                    "extra": [f"{ns}/c/d", f"{ns}/not=an=entry.key"]}
                assert orjson.loads((await kv.get("a")).value) == {"v": 1}  # untouched

                done = await mirror.reconcile(conn, namespaces=[ns])
                assert (done["missing"], done["stale"], done["extra"], done["repaired"],
                        done["changed_meanwhile"]) == (1, 2, 2, 5, 0)
                await assert_bucket_is_current_state(js, mirror, ns, current(db, ns))
                for dry_run in (True, False):
                    again = await mirror.reconcile(conn, namespaces=[ns], dry_run=dry_run)
                    assert (again["missing"], again["stale"], again["extra"],
                            again["repaired"]) == (0, 0, 0, 0)

                # every namespace: the others have no bucket under this prefix, so their
                # live entries are missing; a dry run creates no bucket
                everything = await mirror.reconcile(conn, dry_run=True)
                others = db.execute(
                    "SELECT count(DISTINCT namespace), count(*) FILTER (WHERE NOT deleted)"
                    " FROM entries WHERE namespace <> %s AND namespace NOT LIKE %s",
                    (ns, "\\_%")).fetchone()  # not the system namespaces
                assert everything["namespaces"] == others[0] + 1
                assert (everything["missing"], everything["stale"], everything["extra"]) == (
                    others[1], 0, 0)
                assert all(not x.startswith(f"{ns}/") for x in everything["examples"]["missing"])
            finally:
                await mirror.close()
                await nc.close()

    asyncio.run(body())
    assert delete_kv_buckets(nats_url, mirror.bucket_prefix) == [mirror.bucket(ns)]


def test_while_nats_is_unreachable_the_mirror_holds_its_position_then_catches_up(
        mirror: KvMirror, client: httpx.Client, ns: str, db: Any, nats_url: str,
        database_url: str) -> None:
    mirror.nats_url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    with running(database_url, mirror) as runner:
        position = client.put(f"/v1/namespaces/{ns}/entries/k", json={"v": 1}).json()[
            "position"]
        deadline = time.monotonic() + 30
        while not (runner.progress.last_error or "").startswith("NATS KV mirror"):
            assert time.monotonic() < deadline, runner.progress.last_error
            time.sleep(0.02)
        tracked = db.execute("SELECT notification_id FROM projection_tracking"
                             " WHERE application_name = %s", (mirror.name,)).fetchone()[0]
        assert tracked < position
        assert db.execute(f'SELECT count(*) FROM "{mirror.tables[0]}" WHERE namespace = %s',
                          (ns,)).fetchone()[0] == 0  # the range was rolled back
        mirror.nats_url = nats_url  # NATS is back
        wait_for(db, runner, position)

    async def check() -> None:
        nc = await nats.connect(nats_url)
        try:
            await assert_bucket_is_current_state(nc.jetstream(), mirror, ns, current(db, ns))
        finally:
            await nc.close()

    asyncio.run(check())


# --- key encoding ---------------------------------------------------------------------

_KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")  # what JetStream KV accepts

keys = st.lists(st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True), min_size=1,
                max_size=5).map("/".join)


def _valid(key: str) -> bool:
    try:
        check_key(key)
    except InvalidInput:
        return False
    return True


@given(keys.filter(_valid))
def test_kv_keys_encode_entry_keys_reversibly(key: str) -> None:
    encoded = kv_key(key)
    assert _KV_KEY.fullmatch(encoded)
    assert not encoded.startswith(".") and not encoded.endswith(".") and ".." not in encoded
    assert encoded.count(".") == key.count("/")  # one token per segment
    assert entry_key(encoded) == key


def test_kv_key_examples_and_foreign_keys() -> None:
    assert kv_key("services/payments/db.url") == "services.payments.db=2Eurl"
    assert kv_key("a_b-c") == "a_b-c"
    assert kv_key("x/.hidden/v1.2") == "x.=2Ehidden.v1=2E2"
    assert entry_key("services.payments.db=2Eurl") == "services/payments/db.url"
    for foreign in ("", "a..b", ".a", "a.", "a=2", "a=2e", "a=41", "a%2E", "a/b", "a=FF"):
        with pytest.raises(ValueError):
            entry_key(foreign)
    with pytest.raises(ValueError):
        kv_key("a//b")


# --- configuration --------------------------------------------------------------------


def test_the_mirror_runs_where_nats_is_configured(database_url: str, nats_url: str) -> None:
    names = [r.view.name for r in runners_for(make_settings(database_url,
                                                            nats_url=nats_url))]
    assert names == ["namespace_stats", "schema_quality", "entry_search", "nats_kv_mirror"]
    [runner] = runners_for(make_settings(database_url, nats_url=nats_url),
                           ["nats_kv_mirror"])
    assert isinstance(runner.view, KvMirror)
    assert runner.view.bucket_prefix == KV_BUCKET_PREFIX  # the suite's, from SSOT_*
    sql_views = ["namespace_stats", "schema_quality", "entry_search"]
    assert [r.view.name for r in runners_for(make_settings(
        database_url, nats_url=nats_url, kv_mirror=False))] == sql_views
    assert [r.view.name for r in runners_for(make_settings(
        database_url, nats_url=None))] == sql_views
    with pytest.raises(SystemExit) as exited:  # not configured: it needs SSOT_NATS_URL
        runners_for(make_settings(database_url, nats_url=None), ["nats_kv_mirror"])
    assert exited.value.code == 5
    with pytest.raises(pydantic.ValidationError, match="kv_bucket_prefix"):
        Settings(kv_bucket_prefix="no.dots")
    with pytest.raises(ValueError, match="bucket_prefix"):
        KvMirror(nats_url, "")


def test_ssot_project_names_what_the_mirror_needs(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SSOT_NATS_URL"}
    done = subprocess.run([SSOT, "project", "--view", "nats_kv_mirror"],
                          env={**env, "SSOT_DATABASE_URL": database_url},
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (
        5, "error: not_configured: the view nats_kv_mirror needs SSOT_NATS_URL")


def test_conditional_writes_that_lost_to_a_newer_one_are_counted_not_raised(
        nats_url: str) -> None:
    """What a reconcile's repairs rely on: a write or delete conditional on a revision the
    key has moved past (or on "no message yet") changes nothing and counts as lost; one on
    the key's revision lands; plain writes land whatever the revision."""
    from nexus_ssot.projections.kv_mirror import _Write

    view = KvMirror(nats_url, f"kvc{secrets.token_hex(4)}_")
    ns = "conditional"

    async def scenario() -> None:
        try:
            first = await view._send([_Write(ns, "a", b"1"), _Write(ns, "b", b"1")])
            kv = await view._bucket(ns)
            revision = (await kv.get("a")).revision
            await kv.put("a", b"newer")  # a newer write got there first
            lost = await view._send([
                _Write(ns, "a", b"repair", last=revision),  # stale: lost
                _Write(ns, "b", None, last=revision),  # stale delete: lost
                _Write(ns, "c", b"1", last=0),  # "no message yet": lands
                _Write(ns, "b", b"2", last=(await kv.get("b")).revision)])  # current: lands
            assert (first, lost) == (0, 2)
            assert (await kv.get("a")).value == b"newer"
            assert (await kv.get("b")).value == b"2"
            assert (await kv.get("c")).value == b"1"
            assert await view._send([_Write(ns, "c", b"again", last=0)]) == 1  # c exists now
            assert await view._send([_Write(ns, "c", None)]) == 0  # an unconditional delete
            with pytest.raises(nats.js.errors.KeyNotFoundError):  # deleted
                await kv.get("c")
        finally:
            await view.close()

    try:
        asyncio.run(scenario())
    finally:
        delete_kv_buckets(nats_url, view.bucket_prefix)


def test_the_views_name_the_mirror_as_it_names_itself() -> None:
    """``projections.views`` names the mirror without importing it (nor nats-py)."""
    assert KvMirror.name == KV_MIRROR
    assert KV_MIRROR in SERVICE_VIEWS
