"""Verified backups: ssot export / ssot import round trips (identical reads, a verified
chain), incremental exports chained onto a full one, and refusals of truncated, edited,
out-of-order and misdirected imports that leave the target database empty."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import re
import secrets
import subprocess
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql

from nexus_ssot.integrity import merkle
from nexus_ssot.ledger import chain
from nexus_ssot.ledger.events import TYPE_OF_TOPIC
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ops.backup import compression, copier, importer
from nexus_ssot.ops.backup.exporter import export
from nexus_ssot.ops.backup.format import TAIL, ZERO, BadFile, OutOfOrder, make_line
from nexus_ssot.ops.backup.importer import import_files
from tests.integration.conftest import AUTH

from .conftest import RunningServer, make_settings
from .test_cli import SSOT

Conn = psycopg.Connection[tuple[Any, ...]]


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture()
def new_db(server_url: str) -> Iterator[Callable[[], str]]:
    """Makes databases of this test's own (dropped at the end)."""
    made: list[str] = []

    def make() -> str:
        name = f"ssot_backup_{secrets.token_hex(4)}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        parts = psycopg.conninfo.conninfo_to_dict(server_url)
        parts["dbname"] = name
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})

    try:
        yield make
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            for name in made:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))


def entry(ns: str, key: str) -> str:
    return f"/v1/namespaces/{ns}/entries/{key}"


def write_history(client: httpx.Client, ns: str, rounds: int = 3) -> None:
    """Creates, updates, patches, deletes, re-creates and restores, a namespace's
    settings and idempotent writes: every event type (with floats orjson writes unlike
    the canonical encoding, 1e-07, so an import takes integrity's own path for them)."""
    client.put(f"/v1/namespaces/{ns}", json={"conflict_policy": "merge"},
               headers={"If-None-Match": "*"}).raise_for_status()
    for r in range(rounds):
        for k in range(4):
            key = f"svc/{k}"
            client.put(entry(ns, key), json={"round": r, "k": k, "name": "ünïcode ✓",
                                             "ratio": 0.1 * r, "tiny": 1e-7 * (k + 1),
                                             "tags": ["a", "b"]},
                       headers={"Idempotency-Key": f"{ns}-{r}-{k}",
                                "X-Reason": f"round {r}"}).raise_for_status()
        client.patch(entry(ns, "svc/0"), json={"patched": r},
                     headers={"Content-Type": "application/merge-patch+json"}
                     ).raise_for_status()
    client.delete(entry(ns, "svc/1")).raise_for_status()
    client.put(entry(ns, "svc/1"), json={"again": True}).raise_for_status()
    client.post(entry(ns, "svc/2") + "/revert", json={"to_version": 1}).raise_for_status()


def ssot(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SSOT_DATABASE_URL": url}
    return subprocess.run([SSOT, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode()).fetchall()


TABLES = {
    "ssot_events": "SELECT notification_id, originator_id, originator_version, topic, state,"
                   " recorded_at FROM ssot_events ORDER BY notification_id",
    "entries": "SELECT * FROM entries ORDER BY namespace, key",
    "entry_history": "SELECT * FROM entry_history ORDER BY position",
    "idempotency_keys": "SELECT * FROM idempotency_keys ORDER BY actor, key",
    "merkle_leaves": "SELECT * FROM merkle_leaves ORDER BY idx",
    "merkle_nodes": "SELECT * FROM merkle_nodes ORDER BY level, idx",
    "digests": "SELECT * FROM digests ORDER BY seq",
}


def assert_same_tables(a: str, b: str) -> None:
    for table, query in TABLES.items():
        assert rows(a, query) == rows(b, query), table


def check_chains(url: str) -> int:
    """Every stream's hash chain recomputed here (independently of the import): each
    event's hash from its content, each prev_hash the stream's previous hash."""
    topics = TYPE_OF_TOPIC
    last: dict[str, tuple[int, str | None]] = {}
    for stream, version, topic, state in rows(
            url, "SELECT originator_id::text, originator_version, topic, state"
                 " FROM ssot_events ORDER BY notification_id"):
        fields = orjson.loads(bytes(state))
        before = last.get(stream, (0, None))
        assert version == before[0] + 1 and fields["prev_hash"] == before[1]
        assert fields["hash"] == chain.event_hash(
            {**fields, "stream": stream, "version": version, "type": topics[topic]})
        last[stream] = (version, fields["hash"])
    return len(last)


def add_digest(url: str) -> None:
    """Leaves for the whole log, the nodes they complete and a digest of the tree, as the
    digester records them (ledger/chain.py, merkle.py), so exports carry them."""
    with psycopg.connect(url) as conn:
        size_row = conn.execute("SELECT count(*) FROM merkle_leaves").fetchone()
        size = int(size_row[0]) if size_row else 0
        frontier = merkle.Frontier()
        for (leaf,) in conn.execute("SELECT hash FROM merkle_leaves ORDER BY idx"):
            frontier.add(bytes(leaf))
        last = conn.execute("SELECT seq, hash FROM digests ORDER BY seq DESC LIMIT 1"
                            ).fetchone()
        position = 0
        for position, at, state in conn.execute(
                "SELECT notification_id, recorded_at, state FROM ssot_events"
                " WHERE notification_id > coalesce((SELECT max(position) FROM merkle_leaves),"
                " 0) ORDER BY notification_id").fetchall():
            leaf = merkle.leaf_hash(chain.leaf_data(
                position, at, orjson.loads(bytes(state))["hash"]))
            idx = frontier.size
            for level, i, node in frontier.add(leaf):
                if level == 0:
                    conn.execute("INSERT INTO merkle_leaves VALUES (%s, %s, %s)",
                                 (idx, position, node))
                else:
                    conn.execute("INSERT INTO merkle_nodes VALUES (%s, %s, %s)",
                                 (level, i, node))
        assert frontier.size > size
        seq = last[0] + 1 if last else 1
        prev = bytes(last[1]) if last else None
        now = datetime.now(UTC)
        content = {"seq": seq, "position": position, "size": frontier.size,
                   "root": frontier.root().hex(), "recorded_at": chain.timestamp(now),
                   "prev": prev.hex() if prev else None}
        conn.execute("INSERT INTO digests (seq, position, size, root, recorded_at, prev, hash)"
                     " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                     (seq, position, frontier.size, frontier.root(), now, prev,
                      hashlib.sha256(chain.canonical(content)).digest()))


@pytest.fixture()
def source(new_db: Callable[[], str]) -> Iterator[tuple[str, httpx.Client]]:
    """A database of its own with every kind of event, served by the API."""
    url = new_db()
    migrate(url)
    with RunningServer(make_settings(url)) as server, \
            httpx.Client(headers=AUTH, base_url=server.url, timeout=30) as client:
        yield url, client


def reads(client: httpx.Client, ns: str, at: str) -> dict[str, Any]:
    """What a client can read: the entries now and as of ``at`` (or that the namespace did
    not exist yet then), every history."""
    def page(path: str, **params: Any) -> Any:
        response = client.get(path, params={"limit": 1000, **params})
        if response.status_code == 404:
            return response.json()["code"]
        response.raise_for_status()
        return response.json()["items"]

    now = page(f"/v1/namespaces/{ns}/entries")
    return {"now": now, "as_of": page(f"/v1/namespaces/{ns}/entries", as_of=at),
            "histories": {e["key"]: page(entry(ns, e["key"]) + "/history") for e in now},
            "one": client.get(entry(ns, "svc/0")).json()}


# --- round trips ----------------------------------------------------------------------


def test_export_import_gives_identical_reads_tables_and_a_verified_chain(
        source: tuple[str, httpx.Client], new_db: Callable[[], str], tmp_path: Path) -> None:
    src, client = source
    ns = f"b{secrets.token_hex(4)}"
    write_history(client, ns)
    mid = client.get(entry(ns, "svc/3")).json()["recorded_at"]
    write_history(client, ns + "x", rounds=2)
    # a schema everything written there violates, set over it: history stays history
    client.put(f"/v1/namespaces/{ns}x/schema", json={"not": {}},
               params={"allow_existing_violations": "true"}).raise_for_status()
    add_digest(src)
    client.put(entry(ns, "svc/9"), json={"after": "digest"}).raise_for_status()

    out = tmp_path / "full.ndjson.gz"
    done = ssot(src, "--json", "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["events"] > 30 and summary["digests"] == 1 and summary["idempotency"] == 20
    assert not list(tmp_path.glob("*.partial"))

    dst = new_db()
    imported = ssot(dst, "import", str(out))
    assert imported.returncode == 0, imported.stderr
    assert "chain verified" in imported.stdout

    assert_same_tables(src, dst)
    assert check_chains(dst) == check_chains(src) > 8
    head = rows(dst, "SELECT last_value FROM ssot_events_notification_id_seq")[0][0]
    assert head == summary["last_position"]
    with RunningServer(make_settings(dst)) as copy, \
            httpx.Client(headers=AUTH, base_url=copy.url, timeout=30) as restored:
        for name in (ns, ns + "x"):
            assert reads(restored, name, mid) == reads(client, name, mid)
        # the copy is a working ledger: the next write continues each stream's chain
        put = restored.put(entry(ns, "svc/0"), json={"restored": True})
        assert put.status_code == 200 and put.json()["version"] == 7
        # imported without being validated again, and enforced from there on
        assert restored.put(entry(ns + "x", "svc/0"), json={}).status_code == 422
    check_chains(dst)
    async_views = rows(dst, "SELECT application_name, notification_id"
                            " FROM projection_tracking ORDER BY 1")
    assert async_views and all(p == summary["last_position"] for _, p in async_views)


def test_incremental_exports_chain_in_order_and_out_of_order_is_refused(
        source: tuple[str, httpx.Client], new_db: Callable[[], str], tmp_path: Path) -> None:
    src, client = source
    ns = f"b{secrets.token_hex(4)}"
    write_history(client, ns, rounds=1)
    add_digest(src)
    full, first, second = (tmp_path / f"{n}.ndjson.gz" for n in ("full", "inc1", "inc2"))
    export(src, full)
    write_history(client, ns + "y", rounds=1)
    client.put(entry(ns, "svc/0"), json={"later": 1}).raise_for_status()
    add_digest(src)  # leaves for events the full export held and new ones
    one = export(src, first, after=full)
    assert one.events > 0 and one.digests == 1
    two = export(src, second, after=first)  # nothing new: an empty link
    assert two.events == 0 and two.since_position == one.last_position

    dst = new_db()
    with pytest.raises(OutOfOrder, match="import the full export first"):
        asyncio.run(import_files(dst, [first]))
    assert rows(dst, "SELECT count(*) FROM ssot_events") == [(0,)]
    done = asyncio.run(import_files(dst, [full]))
    with pytest.raises(OutOfOrder, match="in order"):
        asyncio.run(import_files(dst, [second]))
    done += asyncio.run(import_files(dst, [first, second]))
    assert [d.events for d in done] == [d.events for d in done[:1]] + [one.events, 0]
    with pytest.raises(OutOfOrder):  # again: it no longer continues the database
        asyncio.run(import_files(dst, [first]))
    assert_same_tables(src, dst)
    check_chains(dst)
    # an incremental export by position continues as well
    client.put(entry(ns, "svc/1"), json={"by": "position"}).raise_for_status()
    by_position = tmp_path / "inc3.ndjson.gz"
    export(src, by_position, since=two.last_position)
    asyncio.run(import_files(dst, [by_position]))
    assert_same_tables(src, dst)


def test_a_full_export_goes_into_an_empty_database_only(
        source: tuple[str, httpx.Client], tmp_path: Path) -> None:
    src, client = source
    write_history(client, f"b{secrets.token_hex(4)}", rounds=1)
    out = tmp_path / "full.ndjson.gz"
    export(src, out)
    refused = ssot(src, "import", str(out))
    assert refused.returncode == 1
    assert "import_refused" in refused.stderr and "not empty" in refused.stderr


# --- refusals -------------------------------------------------------------------------


def lines_of(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as f:
        return f.readlines()


def write_lines(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(b"".join(lines))
    return path


def rehash(lines: list[bytes]) -> list[bytes]:
    """Recompute every running hash, as someone covering an edit would."""
    rh, out = ZERO, []
    for line in lines:
        made, rh = make_line(line[:-TAIL], rh)
        out.append(made)
    return out


@pytest.fixture()
def exported(source: tuple[str, httpx.Client], tmp_path: Path) -> list[bytes]:
    src, client = source
    write_history(client, f"b{secrets.token_hex(4)}", rounds=2)
    out = tmp_path / "full.ndjson.gz"
    export(src, out)
    return lines_of(out)


def refused(new_db: Callable[[], str], path: Path, match: str) -> str:
    dst = new_db()
    result = ssot(dst, "import", str(path))
    assert result.returncode == 1, result.stdout
    assert re.search(match, result.stderr), result.stderr
    assert "nothing was imported" in result.stderr
    for table in ("ssot_events", "entries", "entry_history", "idempotency_keys"):
        assert rows(dst, f"SELECT count(*) FROM {table}") == [(0,)], table
    return result.stderr


def test_a_truncated_export_is_refused_naming_the_last_complete_line(
        exported: list[bytes], new_db: Callable[[], str], tmp_path: Path) -> None:
    cut = len(exported) - 5
    refused(new_db, write_lines(tmp_path / "cut.gz", exported[:cut]),
            rf"line {cut + 1}: the file is truncated: it ends without a trailer "
            rf"\(the last complete line is {cut}\)")
    half = write_lines(tmp_path / "half.gz", [*exported[:cut], exported[cut][:40]])
    refused(new_db, half, rf"line {cut + 1}: .*incomplete \(the last complete line is {cut}\)")
    raw = (tmp_path / "half.gz").read_bytes()
    (tmp_path / "bytes.gz").write_bytes(raw[:len(raw) // 2])
    refused(new_db, tmp_path / "bytes.gz", r"the file is truncated: the compressed stream ends")


def test_an_edited_export_is_refused_at_the_edited_line(
        exported: list[bytes], new_db: Callable[[], str], tmp_path: Path) -> None:
    number = next(i for i, line in enumerate(exported, 1)
                  if b'"t":"event"' in line and b'"round":1' in line)
    edited = list(exported)
    edited[number - 1] = exported[number - 1].replace(b'"round":1', b'"round":7', 1)
    refused(new_db, write_lines(tmp_path / "edit.gz", edited),
            rf"line {number}: running hash mismatch")
    # the running hashes recomputed over the edit: the event's own hash still tells
    refused(new_db, write_lines(tmp_path / "rehashed.gz", rehash(edited)),
            rf"line {number}: .*the event's hash does not match its content")
    # an event removed (and the running hashes recomputed): its stream's chain breaks
    dropped = rehash(exported[:number - 1] + exported[number:])
    stream = orjson.loads(exported[number - 1])["stream"]
    after = next(i for i, line in enumerate(dropped, 1)
                 if i >= number and orjson.loads(line).get("stream") == stream)
    refused(new_db, write_lines(tmp_path / "dropped.gz", dropped),
            rf"line {after}: stream {stream} version \d+ does not follow version")
    # not JSON at all
    broken = list(exported)
    broken[number - 1] = b"{not json" + exported[number - 1][9:]
    refused(new_db, write_lines(tmp_path / "broken.gz", rehash(broken)),
            rf"line {number}: not valid JSON")


def test_an_event_holding_a_lone_surrogate_is_refused_at_its_line_naming_its_path(
        exported: list[bytes], new_db: Callable[[], str], tmp_path: Path) -> None:
    # A \u escape of half a UTF-16 pair is JSON text, but no text the ledger stores.
    number = next(i for i, line in enumerate(exported, 1)
                  if b'"t":"event"' in line and b'"name":"' in line)
    edited = list(exported)
    edited[number - 1] = re.sub(rb'"name":"[^"]*"', rb'"name":"\\ud800"', exported[number - 1],
                                count=1)
    refused(new_db, write_lines(tmp_path / "surrogate.gz", rehash(edited)),
            rf"line {number}: state\.document\.name holds U\+D800, a lone UTF-16 surrogate")


def gzip_members(path: Path) -> int:
    data, members = path.read_bytes(), 0
    while data:
        decompressor = zlib.decompressobj(31)
        decompressor.decompress(data)
        assert decompressor.eof
        data, members = decompressor.unused_data, members + 1
    return members


def index_definitions(url: str) -> list[tuple[Any, ...]]:
    """The indexes a full import drops and makes again: entry_history's, the events',
    entries' secondary ones."""
    return rows(url, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename"
                     " IN ('entry_history', 'ssot_events', 'entries') ORDER BY 1")


def test_large_files_go_by_batches_copy_writes_and_gzip_members(
        source: tuple[str, httpx.Client], new_db: Callable[[], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Small batches, COPY writes and gzip members, so that a small log takes every path a
    large one does: lines checked batch by batch, the history folded meanwhile, events
    sent in several writes, an incremental file's known streams looked up by batch."""
    monkeypatch.setattr(importer, "BATCH", 7)
    monkeypatch.setattr(copier, "CHUNK", 2_000)
    monkeypatch.setattr(compression, "MEMBER", 4_000)
    src, client = source
    ns = f"b{secrets.token_hex(4)}"
    write_history(client, ns, rounds=3)
    add_digest(src)
    full, later = tmp_path / "full.ndjson.gz", tmp_path / "later.ndjson.gz"
    done = export(src, full)
    assert done.events > 15 and gzip_members(full) > 3
    write_history(client, ns + "z", rounds=2)
    for k in range(4):
        client.put(entry(ns, f"svc/{k}"), json={"later": k}).raise_for_status()
    add_digest(src)
    assert export(src, later, after=full).events > 10

    folded_with: list[list[str]] = []  # entries' indexes as its fold ran
    finish = importer._finish

    async def watched_finish(conn: Any, *args: Any) -> None:
        cur = await conn.execute("SELECT indexname FROM pg_indexes"
                                 " WHERE tablename = 'entries' ORDER BY 1")
        folded_with.append([name for (name,) in await cur.fetchall()])
        await finish(conn, *args)

    monkeypatch.setattr(importer, "_finish", watched_finish)
    dst = new_db()
    imported = asyncio.run(import_files(dst, [full, later]))
    assert [i.events for i in imported] == [done.events, imported[1].events]
    assert_same_tables(src, dst)
    assert check_chains(dst) == check_chains(src)
    assert index_definitions(dst) == index_definitions(src)
    # entries is folded with its primary key only (its secondary indexes, of which there is
    # none since search became a view, would be made again after a full file's fold)
    assert folded_with == [["entries_pkey"], ["entries_pkey"]]


def test_a_bad_line_after_batches_were_stored_leaves_the_database_empty_and_indexed(
        exported: list[bytes], new_db: Callable[[], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "BATCH", 5)
    monkeypatch.setattr(copier, "CHUNK", 1_000)
    number = max(i for i, line in enumerate(exported, 1) if b'"t":"event"' in line)
    assert number > 10
    edited = list(exported)
    edited[number - 1] = exported[number - 1].replace(b'"actor":"', b'"actor":"x', 1)
    path = write_lines(tmp_path / "late.gz", rehash(edited))
    dst = new_db()
    migrate(dst)
    indexes = index_definitions(dst)
    with pytest.raises(BadFile, match="the event's hash does not match") as refused:
        asyncio.run(import_files(dst, [path]))
    assert refused.value.line == number
    for table in ("ssot_events", "entries", "entry_history", "merkle_leaves"):
        assert rows(dst, f"SELECT count(*) FROM {table}") == [(0,)], table
    assert index_definitions(dst) == indexes and len(indexes) == 11


def test_an_impossible_commit_time_is_refused_at_its_line(
        exported: list[bytes], new_db: Callable[[], str], tmp_path: Path) -> None:
    number = next(i for i, line in enumerate(exported, 1) if b'"t":"event"' in line)
    edited = list(exported)
    edited[number - 1] = re.sub(rb'"recorded_at":"\d{4}-\d\d', b'"recorded_at":"2026-13',
                                exported[number - 1], count=1)
    refused(new_db, write_lines(tmp_path / "month.gz", rehash(edited)),
            rf"line {number}: recorded_at '2026-13-.*' is not RFC 3339 UTC")
