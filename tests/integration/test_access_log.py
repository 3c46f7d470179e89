"""The access log against real PostgreSQL: writers in two processes' worth of pools append
one unbroken chain, a flood stores the bound plus a summary that adds up, records wait
while the database cannot take them, the table refuses changes, ``ssot verify`` finds a
changed, deleted, rewritten or forged row at its seq, and an export carries the log into a
new database (full and incremental) where it still verifies."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from nexus_ssot.access.log import AccessLog, AccessRecord
from nexus_ssot.integrity.verify import verify
from nexus_ssot.ledger import access_chain
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ops.backup.exporter import export
from nexus_ssot.ops.backup.format import ZERO, BadFile, NotEmpty, make_line
from nexus_ssot.ops.backup.importer import import_files

from .conftest import AUTH, RunningServer, make_settings, own_database
from .test_backup import new_db
from .test_cli import SSOT

__all__ = ["new_db"]  # the fixture, used here

Conn = psycopg.Connection[tuple[Any, ...]]
T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
ROWS = (f"SELECT seq, {access_chain.RECORDED_AT_SQL}, record, prev_hash, hash"
        " FROM access_log ORDER BY seq")


def denial(i: int, *, source: str | None = None, subject: str | None = None,
           reason: str = "policy", decision: str = "deny") -> AccessRecord:
    return AccessRecord(decision=decision, status=403 if decision == "deny" else None,
                        reason=reason, method="PUT",
                        path="/v1/namespaces/{namespace}/entries/{key}",
                        source=source or f"10.0.{i // 250}.{i % 250}", subject=subject,
                        action="write", namespace="config", key=f"k/{i}", policy="default",
                        rule="default", correlation_id=f"c-{i}", auth_method="token",
                        time=T0 + timedelta(microseconds=i))


async def open_pool(url: str) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False)
    await pool.open(wait=True, timeout=30)
    return pool


def append(url: str, records: Sequence[AccessRecord], **options: Any) -> AccessLog:
    """``records`` through an AccessLog of its own pool, started and stopped."""
    async def run() -> AccessLog:
        pool = await open_pool(url)
        try:
            log = AccessLog(pool, **{"max_per_second": 100_000, **options})
            await log.start()
            for record in records:
                log.record(record)
            await log.stop()
            return log
        finally:
            await pool.close()

    return asyncio.run(run())


def rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(ROWS.encode()).fetchall()


def assert_one_chain(found: list[tuple[Any, ...]]) -> None:
    previous = None
    for n, (seq, recorded_at, text, prev_hash, own) in enumerate(found, 1):
        assert seq == n
        assert prev_hash == previous
        assert access_chain.stored_row_hash(seq, recorded_at, text, prev_hash) == own
        assert text == access_chain.encode_record(json.loads(text))  # canonical text
        previous = own


@pytest.fixture()
def migrated(new_db: Callable[[], str]) -> str:
    url = new_db()
    migrate(url)
    return url


# --- appending ------------------------------------------------------------------------------


def test_two_writers_in_parallel_append_one_unbroken_chain(migrated: str) -> None:
    n = 1_500

    async def run() -> list[AccessLog]:
        pools = [await open_pool(migrated), await open_pool(migrated)]
        try:
            logs = [AccessLog(pool, max_per_second=100_000, batch_size=40) for pool in pools]
            for log in logs:
                await log.start()
            for i in range(n):
                logs[i % 2].record(denial(i))
                if i % 100 == 99:
                    await asyncio.sleep(0)  # let the writers append meanwhile
            await asyncio.gather(*(log.stop() for log in logs))
            return logs
        finally:
            for pool in pools:
                await pool.close()

    logs = asyncio.run(run())
    assert [log.appended for log in logs] == [n // 2, n // 2]
    found = rows(migrated)
    assert len(found) == n
    assert_one_chain(found)
    assert sorted(json.loads(r[2])["correlation_id"] for r in found) == \
        sorted(f"c-{i}" for i in range(n))
    report = verify(migrated)
    assert report.ok, report.problems
    assert report.access_records == n


def test_a_flood_stores_the_bound_and_a_summary_that_adds_up(migrated: str) -> None:
    clock = [500.0]
    flood, bound = 1_000, 50
    records = [denial(i, source="203.0.113.9", reason="bad_signature") for i in range(flood)]
    records += [denial(i, source="203.0.113.10", reason="bad_signature") for i in range(20)]
    log = append(migrated, records, max_per_second=bound, clock=lambda: clock[0])
    assert log.suppressed == flood - bound
    stored = [json.loads(r[2]) for r in rows(migrated)]
    flooder = [r for r in stored if r["source"] == "203.0.113.9"]
    kept = [r for r in flooder if not r.get("summary")]
    [summary] = [r for r in flooder if r.get("summary")]
    assert len(kept) == bound
    assert summary == {"summary": True, "suppressed": flood - bound, "decision": "deny",
                       "source": "203.0.113.9", "reason": "bad_signature",
                       "from": "2026-12-03T10:00:00.000050Z",
                       "to": "2026-12-03T10:00:00.000999Z"}
    assert len(kept) + summary["suppressed"] == flood
    assert len([r for r in stored if r["source"] == "203.0.113.10"]) == 20  # under it


def test_records_wait_while_the_database_cannot_take_them(new_db: Callable[[], str]) -> None:
    url = new_db()  # not migrated yet: every append fails

    async def run() -> AccessLog:
        pool = await open_pool(url)
        try:
            log = AccessLog(pool, interval=0.01)
            await log.start()
            for i in range(30):
                log.record(denial(i))
            with pytest.raises(psycopg.errors.UndefinedTable):
                await log.flush()
            assert log.pending == 30  # kept, in order, for the next try
            await asyncio.to_thread(migrate, url)  # the database is back
            deadline = time.monotonic() + 30
            while log.pending and time.monotonic() < deadline:  # retried with backoff
                await asyncio.sleep(0.02)
            await log.stop()
            return log
        finally:
            await pool.close()

    log = asyncio.run(run())
    assert log.appended == 30 and log.lost == 0
    found = rows(url)
    assert [json.loads(r[2])["correlation_id"] for r in found] == [f"c-{i}" for i in range(30)]
    assert_one_chain(found)


def test_what_cannot_be_appended_at_stop_is_counted_lost(server_url: str) -> None:
    parts = psycopg.conninfo.conninfo_to_dict(server_url)
    parts["dbname"] = f"ssot_absent_{secrets.token_hex(4)}"
    url = psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})

    async def run() -> AccessLog:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(url, min_size=1, open=False)
        await pool.open(wait=False)
        try:
            log = AccessLog(pool)
            for i in range(5):
                log.record(denial(i))
            await log.stop(timeout=0.5)
            return log
        finally:
            await pool.close()

    log = asyncio.run(run())
    assert log.lost == 5 and log.pending == 0


def test_the_table_is_append_only(migrated: str) -> None:
    append(migrated, [denial(i) for i in range(3)])
    for statement in ("UPDATE access_log SET record = '{}' WHERE seq = 2",
                      "DELETE FROM access_log WHERE seq = 3", "TRUNCATE access_log"):
        with psycopg.connect(migrated) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement.encode())
    assert len(rows(migrated)) == 3


# --- tampering ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(server_url: str) -> Iterator[str]:
    """A database holding ten access records (copied for each tampering test)."""
    with own_database(server_url, "ssot_access") as url:
        append(url, [denial(i, subject=f"user{i}") for i in range(10)])
        yield psycopg.conninfo.conninfo_to_dict(url)["dbname"]


def with_db(url: str, name: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(url)
    parts["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


@pytest.fixture()
def copy(server_url: str, template: str) -> Iterator[str]:
    name = f"ssot_access_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)))
    try:
        yield with_db(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@contextlib.contextmanager
def tampering(url: str) -> Iterator[Conn]:
    """A superuser's connection with the append-only trigger off (back on afterwards)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE access_log DISABLE TRIGGER USER")
        try:
            yield conn
        finally:
            conn.execute("ALTER TABLE access_log ENABLE TRIGGER USER")


def problems(url: str) -> list[tuple[str, int | None]]:
    report = verify(url)
    assert not report.ok
    return [(p.kind, p.seq) for p in report.problems]


def row(conn: Conn, seq: int) -> tuple[Any, ...]:
    found = conn.execute(ROWS.replace("ORDER BY seq", "WHERE seq = %s").encode(),
                         (seq,)).fetchone()
    assert found is not None
    return found


def test_a_clean_access_log_verifies(copy: str) -> None:
    report = verify(copy)
    assert report.ok and report.access_records == 10


def test_a_changed_record_is_found_at_its_seq_by_ssot_verify(copy: str) -> None:
    with tampering(copy) as conn:
        conn.execute("UPDATE access_log SET record = replace(record, '\"user4\"',"
                     " '\"someone-else\"') WHERE seq = 5")
    done = subprocess.run([SSOT, "verify", "--json"], capture_output=True, text=True,
                          env={**os.environ, "SSOT_DATABASE_URL": copy}, timeout=120)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["first_problem"]["kind"] == "access_record_altered"
    assert report["first_problem"]["seq"] == 5
    assert report["problem_count"] == 1
    assert report["access_records"] == 10


def test_a_changed_commit_time_is_found(copy: str) -> None:
    with tampering(copy) as conn:
        conn.execute("UPDATE access_log SET recorded_at = recorded_at - interval '1 hour'"
                     " WHERE seq = 2")
    assert problems(copy) == [("access_record_altered", 2)]


def test_a_deleted_record_is_found_at_its_seq(copy: str) -> None:
    with tampering(copy) as conn:
        conn.execute("DELETE FROM access_log WHERE seq IN (6, 7)")
    assert problems(copy) == [("access_record_missing", 6)]


def test_the_deleted_first_record_is_found(copy: str) -> None:
    with tampering(copy) as conn:
        conn.execute("DELETE FROM access_log WHERE seq = 1")
    assert problems(copy) == [("access_record_missing", 1)]


def test_a_record_rewritten_with_its_hash_recomputed_is_found(copy: str) -> None:
    with tampering(copy) as conn:
        seq, at, text, prev_hash, _ = row(conn, 3)
        forged = json.loads(text) | {"subject": "nobody"}
        conn.execute("UPDATE access_log SET record = %s, hash = %s WHERE seq = 3",
                     (access_chain.encode_record(forged),
                      access_chain.row_hash(seq, at, forged, prev_hash)))
    assert problems(copy) == [("access_record_altered", 3)]


def test_a_forged_record_in_place_of_another_is_found(copy: str) -> None:
    with tampering(copy) as conn:
        seq, at, text, _, _ = row(conn, 8)
        forged = json.loads(text) | {"decision": "allow"}
        fake_prev = "0" * 64
        conn.execute("UPDATE access_log SET record = %s, prev_hash = %s, hash = %s"
                     " WHERE seq = 8", (access_chain.encode_record(forged), fake_prev,
                                        access_chain.row_hash(seq, at, forged, fake_prev)))
    assert problems(copy) == [("access_record_inserted", 8)]


def test_a_record_inserted_with_a_seq_beyond_the_last_is_a_gap(copy: str) -> None:
    with tampering(copy) as conn:
        _, at, text, _, own = row(conn, 10)
        record = json.loads(text)
        conn.execute("INSERT INTO access_log VALUES (12, %s, %s, %s, %s)",
                     (at, text, own, access_chain.row_hash(12, at, record, own)))
    assert problems(copy) == [("access_record_missing", 11)]


def test_a_broken_link_at_the_end_is_reported_there(copy: str) -> None:
    with tampering(copy) as conn:
        _, at, text, _, _ = row(conn, 10)
        record = json.loads(text)
        conn.execute("UPDATE access_log SET prev_hash = NULL, hash = %s WHERE seq = 10",
                     (access_chain.row_hash(10, at, record, None),))
    assert problems(copy) == [("access_chain_broken", 10)]


# --- export and import ----------------------------------------------------------------------


def export_to(url: str, path: Path, **options: Any) -> None:
    export(url, path, **options)


def import_into(url: str, *paths: Path) -> list[Any]:
    return asyncio.run(import_files(url, paths))


@contextlib.contextmanager
def writing(url: str) -> Iterator[Callable[[str], int]]:
    """The API on ``url`` (so that exports have events to continue from): ``put(key)``
    writes an entry and answers its position."""
    with RunningServer(make_settings(url, writer_process=False)) as server, \
            httpx.Client(headers=AUTH, base_url=server.url, timeout=30) as client:
        def put(key: str) -> int:
            r = client.put(f"/v1/namespaces/cfg/entries/{key}", json={"k": key})
            r.raise_for_status()
            return int(r.json()["position"])

        yield put


def test_an_export_carries_the_access_log_into_a_new_database(
        migrated: str, new_db: Callable[[], str], tmp_path: Path) -> None:
    full, after = tmp_path / "full.ndjson.gz", tmp_path / "after.ndjson.gz"
    with writing(migrated) as put:
        put("a")
        append(migrated, [denial(i, subject="alice") for i in range(25)])
        export_to(migrated, full)
        put("b")
        append(migrated, [denial(i, subject="bob", decision="allow") for i in range(7)])
        # an incremental export continues where the full one ended
        export_to(migrated, after, after=full)
    target = new_db()
    [done] = import_into(target, full)
    assert done.access == 25
    assert rows(target) == rows(migrated)[:25]
    report = verify(target)
    assert report.ok and report.access_records == 25

    [done] = import_into(target, after)
    assert done.access == 7
    assert rows(target) == rows(migrated)
    assert verify(target).ok

    # the imported log is tamper-evident as the original
    with tampering(target) as conn:
        conn.execute("UPDATE access_log SET record = replace(record, 'alice', 'carol')"
                     " WHERE seq = 12")
    assert problems(target) == [("access_record_altered", 12)]


def test_an_export_since_a_position_skips_the_access_records_the_target_holds(
        migrated: str, new_db: Callable[[], str], tmp_path: Path) -> None:
    full, since = tmp_path / "full.ndjson.gz", tmp_path / "since.ndjson.gz"
    with writing(migrated) as put:
        put("a")
        append(migrated, [denial(i) for i in range(4)])
        export_to(migrated, full)
        position = put("b")
        append(migrated, [denial(i) for i in range(4, 6)])
        # the access log has no positions: this export holds all of it
        export_to(migrated, since, since=position - 1)
    target = new_db()
    import_into(target, full)
    [done] = import_into(target, since)
    assert done.events == 1 and done.access == 2
    assert rows(target) == rows(migrated)
    assert verify(target).ok


def test_a_full_import_needs_an_empty_access_log(
        migrated: str, new_db: Callable[[], str], tmp_path: Path) -> None:
    append(migrated, [denial(i) for i in range(2)])
    full = tmp_path / "full.ndjson.gz"
    export_to(migrated, full)
    target = new_db()
    migrate(target)
    append(target, [denial(9)])
    with pytest.raises(NotEmpty):
        import_into(target, full)


def test_an_edited_access_line_is_refused(
        migrated: str, new_db: Callable[[], str], tmp_path: Path) -> None:
    append(migrated, [denial(i) for i in range(3)])
    full = tmp_path / "full.ndjson.gz"
    export_to(migrated, full)
    lines = gzip.decompress(full.read_bytes()).splitlines(keepends=True)
    edited, rh = [], ZERO
    for line in lines:  # a forger who recomputes the running hash
        body = line[:line.rindex(b',"rh":')]
        if b'"t":"access","seq":2,' in body:
            body = body.replace(b'"k/1"', b'"k/x"')
        if body.startswith(b'{"t":"trailer"'):
            trailer = json.loads(body + b"}")
            trailer["running_hash"] = rh.hex()
            body = json.dumps(trailer, separators=(",", ":")).encode()[:-1]
        new, rh = make_line(body, rh)
        edited.append(new)
    forged = tmp_path / "forged.ndjson.gz"
    forged.write_bytes(gzip.compress(b"".join(edited)))
    target = new_db()
    with pytest.raises(BadFile, match="access record 2: its hash does not match"):
        import_into(target, forged)
    assert rows(target) == []
