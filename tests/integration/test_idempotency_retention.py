"""Idempotency keys are kept for their retention, not forever: a retry within the window
answers the first answer; once the key is older than its retention `ssot serve` purges it
and the same key is a new request. The purge takes only expired keys, oldest first, a
bounded batch per statement, holds up no write, and runs in one process per database.

The purge is measured against the keys' commit times (``recorded_at``), so a key is made
old by moving its commit time back, as a superuser would: no test waits for a clock."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from nexus_ssot.ledger.commands import Context, Put
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.event_store import Idempotency
from nexus_ssot.ledger.idempotency_retention import IdempotencyPurger, purge_batch
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.writer import GroupCommitWriter
from tests.integration.conftest import AUTH, free_port, own_database, start_serve

WEEK = 7 * 24 * 3600.0  # the default retention


@pytest.fixture(scope="module")
def own_db(server_url: str) -> Iterator[str]:
    """A migrated database of the module's own (no other process purges it)."""
    with own_database(server_url, "ssot_idem") as url:
        yield url


def keys_of(url: str, actor: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [k for (k,) in conn.execute(
            "SELECT key FROM idempotency_keys WHERE actor = %s ORDER BY key", (actor,))]


def age(url: str, actor: str, keys: list[str], days: float) -> None:
    """Move the commit time of these keys ``days`` back."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE idempotency_keys SET recorded_at = recorded_at - %s"
                     " * interval '1 day' WHERE actor = %s AND key = ANY(%s)",
                     (days, actor, keys))


def add_keys(url: str, actor: str, ages_days: list[float]) -> list[str]:
    """Keys committed ``ages_days`` ago (rows only: the purge reads nothing else)."""
    names = [f"k{n:05d}" for n in range(len(ages_days))]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO idempotency_keys (actor, key, request_hash, namespace, entry_key,"
            " version, position, recorded_at) SELECT %s, k, '\\x00', 'ns', k, 1, 0,"
            " now() - d * interval '1 day' FROM unnest(%s::text[], %s::float8[]) AS x(k, d)",
            (actor, names, ages_days))
    return names


# --- through `ssot serve`: the retry window --------------------------------------------


def test_a_key_answers_retries_within_its_retention_and_is_then_a_new_request(
        database_url: str, nats_url: str, ns: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_NATS_URL": nats_url,
           "SSOT_DATA_DIR": str(tmp_path), "SSOT_HTTP_PORT": str(port),
           "SSOT_BROADCAST": "false", "SSOT_DIGESTS": "false", "SSOT_PROJECTIONS": "false",
           "SSOT_IDEMPOTENCY_PURGE_EVERY_SECONDS": "0.2"}
    proc, url = start_serve(["--workers", "2"], env, port)
    path = f"/v1/namespaces/{ns}/entries/checkout"
    try:
        with httpx.Client(headers=AUTH, base_url=url, timeout=30) as client:
            def put(key: str, body: Any, where: str = path) -> httpx.Response:
                return client.put(where, json=body, headers={"Idempotency-Key": key})

            first = put(f"{ns}-old", {"new_ui": True})
            again = put(f"{ns}-old", {"new_ui": True})
            assert first.status_code == again.status_code == 201, again.text
            assert again.headers["Idempotent-Replayed"] == "true"
            assert again.json() == first.json()
            kept = put(f"{ns}-new", {"on": 1}, f"/v1/namespaces/{ns}/entries/other")
            assert kept.status_code == 201
            with psycopg.connect(database_url) as conn:
                row = conn.execute("SELECT actor FROM idempotency_keys WHERE key = %s",
                                   (f"{ns}-old",)).fetchone()
            assert row is not None
            actor = row[0]
            # the first key's write committed eight days ago, as its retention sees it
            age(database_url, actor, [f"{ns}-old"], 8)
            deadline = time.monotonic() + 30
            while f"{ns}-old" in keys_of(database_url, actor):
                assert time.monotonic() < deadline, "the expired key was not purged"
                time.sleep(0.1)
            assert f"{ns}-new" in keys_of(database_url, actor)  # within its retention
            # a new request, decided afresh: another body under the same key, which the
            # kept key refused as reused, is a new version; and the key is its now
            reused = put(f"{ns}-old", {"new_ui": False})
            assert reused.status_code == 200, reused.text
            assert "Idempotent-Replayed" not in reused.headers
            assert reused.headers["ETag"] == '"2"'
            assert put(f"{ns}-old", {"new_ui": False}).headers["Idempotent-Replayed"] == "true"
            replayed = put(f"{ns}-new", {"on": 1}, f"/v1/namespaces/{ns}/entries/other")
            assert replayed.headers["Idempotent-Replayed"] == "true"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output


# --- the purge -------------------------------------------------------------------------


def test_only_keys_past_their_retention_are_purged_oldest_first_a_batch_at_a_time(
        own_db: str) -> None:
    actor = f"a{secrets.token_hex(3)}"
    expired = [8 + n / 1000 for n in range(250)]  # k00000 the newest of them
    fresh = [0.0, 1.0, 6.9]
    names = add_keys(own_db, actor, expired + fresh)

    async def purge() -> tuple[int, list[str], int]:
        async with await psycopg.AsyncConnection.connect(own_db, autocommit=True) as conn:
            first = await purge_batch(conn, WEEK, batch=100)
            after_one = keys_of(own_db, actor)
            purger = IdempotencyPurger(own_db, retention_seconds=WEEK, every_seconds=60,
                                       batch=100)
            rest = await purger.purge(conn, asyncio.Event())
            return first, after_one, rest

    first, after_one, rest = asyncio.run(purge())
    assert first == 100 and rest == 150
    assert after_one == names[:150] + names[250:]  # the oldest hundred went first
    assert keys_of(own_db, actor) == names[250:]


def _write(writer: GroupCommitWriter, ns: str, key: str, actor: str) -> Any:
    context = Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor=actor,
                      correlation_id="retention")
    request_hash = hashlib.sha256(key.encode()).digest()
    [future] = writer.write_batch([(Put(ns, key, document={"k": key}), context,
                                    Idempotency(actor, key, request_hash))])
    return future.result()


def test_writes_go_on_while_a_purge_holds_its_batch(own_db: str, ns: str) -> None:
    """A purge batch left open (as if slow) holds up no write: writes with new keys are
    committed and answered while its locks are held."""
    actor = f"a{secrets.token_hex(3)}"
    add_keys(own_db, actor, [9.0] * 50)
    app = open_application(own_db, pool_size=2)
    try:
        writer = GroupCommitWriter(app, lambda _ns: Limits())
        with psycopg.connect(own_db) as purging, ThreadPoolExecutor(1) as pool:
            # one purge batch in a transaction not committed yet
            deleted = purging.execute(
                "DELETE FROM idempotency_keys WHERE (actor, key) IN (SELECT actor, key"
                " FROM idempotency_keys WHERE actor = %s AND recorded_at < now() -"
                " interval '7 days' ORDER BY recorded_at LIMIT 20 FOR UPDATE SKIP LOCKED)",
                (actor,)).rowcount
            assert deleted == 20
            writes = pool.submit(lambda: [_write(writer, ns, f"w{n}", actor)
                                          for n in range(3)])
            outcomes = writes.result(timeout=30)  # a write held up by the purge never is
            assert [o.version for o in outcomes] == [1, 1, 1]
            purging.commit()
        assert len(keys_of(own_db, actor)) == 50 - 20 + 3
    finally:
        app.close()


def test_one_purger_leads_per_database(own_db: str) -> None:
    async def run() -> list[bool]:
        stop = asyncio.Event()
        purgers = [IdempotencyPurger(own_db, retention_seconds=WEEK, every_seconds=0.05,
                                     poll_interval=0.05) for _ in range(2)]
        tasks = [asyncio.create_task(p.run(stop)) for p in purgers]
        deadline = time.monotonic() + 30
        while not any(p.progress.leading and p.progress.rounds for p in purgers):
            assert time.monotonic() < deadline, [p.progress for p in purgers]
            await asyncio.sleep(0.05)
        rounds = max(p.progress.rounds for p in purgers)
        while max(p.progress.rounds for p in purgers) < rounds + 3:  # it goes on
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        leading = [p.progress.leading for p in purgers]
        stop.set()
        await asyncio.gather(*tasks)
        return leading

    assert sorted(asyncio.run(run())) == [False, True]
