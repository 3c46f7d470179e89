"""`ssot verify` (integrity/verify/) against tampering by direct SQL: each kind found at its
position and key with exit code 1, a clean log verifies (CLI and HTTP agree), a run
resumed from a checkpoint or a position gives the same answer, and bad input is refused.

Every test tampers with a database of its own: a clone (CREATE DATABASE … TEMPLATE) of a
log seeded once per module through the ledger's writer and digested (signed, published on
a NATS stream of the module's own, whose messages become the ``--digests`` file). The
append-only triggers are disabled for the tampering only, as a superuser would, and put
back; the clone is dropped afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

from nexus_ssot.api import verify as verify_route
from nexus_ssot.integrity import verify
from nexus_ssot.integrity.digests import Digest, Digester, Signer, digest_stream
from nexus_ssot.ledger import chain
from nexus_ssot.ledger.addressing import stream_id
from nexus_ssot.ledger.commands import Context, Delete, MergePatch, Put, Restore
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.errors import InvalidInput
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.writer import GroupCommitWriter
from tests.integration.conftest import AUTH, RunningServer, make_settings

SSOT = str(Path(sys.executable).parent / "ssot")
Conn = psycopg.Connection[tuple[Any, ...]]
Address = tuple[str, str, int]  # namespace, key, version

# --- the seeded log ---------------------------------------------------------------------


def _with_db(url: str, name: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(url)
    parts["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


def _context(reason: str | None = None, auth: dict[str, Any] | None = None) -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="alice",
                   correlation_id=f"seed-{secrets.token_hex(3)}", reason=reason, auth=auth)


#: How the actor of the seeded events of namespace ops authenticated (those of cfg: no
#: auth, as events from before it was recorded).
OPS_AUTH = {"method": "token", "token_id": "3f2a9c", "on_behalf_of": "carol"}


#: The log, batch by batch (one transaction each); "gap" burns a position, as a failed
#: insert does, so a forger has somewhere to put an event.
SEED: list[Any] = [
    [Put("cfg", "a", document={"pool": 10, "url": "pg://a"}),
     Put("cfg", "b", document={"n": 1}), Put("ops", "x", document={"on": True})],
    [Put("cfg", "a", document={"pool": 20, "url": "pg://a"}),
     Put("cfg", "c", document={"level": "info"})],
    "gap",
    [Put("cfg", "b", document={"n": 2}), MergePatch("cfg", "a", patch={"ssl": True}),
     Put("ops", "y", document={"k": "v"})],
    [Put("cfg", "c", document={"level": "debug"}), Put("ops", "x", document={"on": False})],
    "gap",
    [Put("cfg", "b", document={"n": 3}), Put("cfg", "a", document={"pool": 30})],
    [Delete("cfg", "c")],
    [Restore("cfg", "c", from_version=1, document={"level": "info"})],
    [Put("ops", "z", document={"ünïcode": "✓", "f": 1.5})],
    "gap",
    [Put("ops", "y", document={"k": "w"}), Put("cfg", "b", document={"n": 4})],
]


def _seed(url: str) -> None:
    app = open_application(url, pool_size=1)
    writer = GroupCommitWriter(app, lambda _ns: Limits())
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for step in SEED:
                if step == "gap":
                    conn.execute("SELECT nextval('ssot_events_notification_id_seq')")
                    continue
                for future in writer.write_batch([
                        (c, _context("seed", OPS_AUTH if c.namespace == "ops" else None), None)
                        for c in step]):
                    future.result()
    finally:
        app.close()


def _digest(url: str, nats_url: str, stream: str, prefix: str, key: Path) -> None:
    """Digests of the whole log, every 4 events, signed and published."""
    digester = Digester(url, nats_url, stream=stream, prefix=prefix, every_events=4,
                        every_seconds=0.2, signer=Signer.from_file(key), poll_interval=0.1)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(notification_id) FROM ssot_events").fetchone()
    assert row is not None
    head = int(row[0])
    stop = asyncio.Event()

    async def run() -> None:
        task = asyncio.create_task(digester.run(stop))
        deadline = time.monotonic() + 60
        progress = digester.progress
        while progress.position < head or progress.published_seq < progress.seq \
                or not progress.seq:
            assert time.monotonic() < deadline, progress
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(run())


def _published(nats_url: str, stream: str) -> list[bytes]:
    async def read() -> list[bytes]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            return [(await js.get_msg(stream, seq=s)).data or b""
                    for s in range(1, info.state.last_seq + 1)]
        finally:
            await nc.close()

    return asyncio.run(read())


def _delete_streams(nats_url: str, names: list[str]) -> None:
    async def delete() -> None:
        nc = await nats.connect(nats_url)
        try:
            for name in names:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await nc.jetstream().delete_stream(name)
        finally:
            await nc.close()

    asyncio.run(delete())


@dataclass(frozen=True)
class Seeded:
    server_url: str
    template: str
    key: Path  # the signing key (PKCS#8 PEM)
    published: Path  # the digests as published on NATS, NDJSON
    positions: dict[Address, int]
    gaps: list[int]
    head: int


@pytest.fixture(scope="module")
def seeded(server_url: str, nats_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    folder = tmp_path_factory.mktemp("verify")
    key = folder / "signing.pem"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    name = f"ssot_verify_tpl_{secrets.token_hex(4)}"
    token = secrets.token_hex(4)
    stream, prefix = f"SSOT_VFTEST_{token}", f"ssotvftest{token}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_db(server_url, name)
    try:
        migrate(url)
        _seed(url)
        _digest(url, nats_url, stream, prefix, key)
        published = folder / "published.ndjson"
        published.write_bytes(b"\n".join(_published(nats_url, digest_stream(stream))) + b"\n")
        with psycopg.connect(url) as conn:
            positions = {(ns, k, int(v)): int(p) for ns, k, v, p in conn.execute(
                "SELECT namespace, key, version, position FROM entry_history")}
            row = conn.execute("SELECT max(notification_id) FROM ssot_events").fetchone()
            assert row is not None
            head = int(row[0])
            present = {int(p) for (p,) in conn.execute(
                "SELECT notification_id FROM ssot_events")}
        gaps = sorted(set(range(1, head + 1)) - present)
        assert len(gaps) == 3
        yield Seeded(server_url, name, key, published, positions, gaps, head)
    finally:
        _delete_streams(nats_url, [stream, digest_stream(stream)])
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture()
def db(seeded: Seeded) -> Iterator[str]:
    """A copy of the seeded log for this test alone, dropped afterwards."""
    name = f"ssot_verify_{secrets.token_hex(4)}"
    with psycopg.connect(seeded.server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(seeded.template)))
    try:
        yield _with_db(seeded.server_url, name)
    finally:
        with psycopg.connect(seeded.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


TABLES = ("ssot_events", "entry_history", "entries", "digests", "merkle_leaves",
          "merkle_nodes")


@contextlib.contextmanager
def tampering(url: str) -> Iterator[Conn]:
    """A superuser's connection with the append-only triggers off (back on afterwards)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(
                sql.Identifier(table)))
        try:
            yield conn
        finally:
            for table in TABLES:
                conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(
                    sql.Identifier(table)))


def ssot_verify(url: str, *args: str, key: Path | None = None
                ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """`ssot verify --json ARGS` as a process; its exit, and its report when it printed
    one."""
    env = {k: v for k, v in os.environ.items() if k != "SSOT_SIGNING_KEY_FILE"}
    env["SSOT_DATABASE_URL"] = url
    extra = ["--public-key", str(key)] if key is not None else []
    done = subprocess.run([SSOT, "verify", "--json", *extra, *args], capture_output=True,
                          text=True, env=env, timeout=120)
    report = json.loads(done.stdout) if done.stdout.strip().startswith("{") else None
    return done, report


def first_problem(url: str, seeded: Seeded, *args: str) -> dict[str, Any]:
    done, report = ssot_verify(url, *args, key=seeded.key)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert report is not None and report["ok"] is False
    first: dict[str, Any] = report["first_problem"]
    return first


def kinds(report: dict[str, Any]) -> set[str]:
    return {p["kind"] for p in report["problems"]}


# --- a clean log ---------------------------------------------------------------------------


def test_a_clean_log_verifies_and_the_route_agrees(db: str, seeded: Seeded) -> None:
    done, report = ssot_verify(db, "--digests", str(seeded.published), key=seeded.key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report is not None and report["ok"] is True and report["problem_count"] == 0
    assert report["events"] == len(seeded.positions) and report["head"] == seeded.head
    assert report["digests_checked"] >= 4
    assert report["signatures_checked"] == report["digests_checked"] + \
        report["external_digests"]
    assert report["digested_to"] == seeded.head
    human = subprocess.run([SSOT, "verify", "--public-key", str(seeded.key)],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "SSOT_DATABASE_URL": db})
    assert human.returncode == 0 and "ok: no problem found" in human.stdout

    settings = make_settings(db, signing_key_file=seeded.key, digests=False)
    with RunningServer(settings) as server:
        r = httpx.get(f"{server.url}/v1/integrity/verify", timeout=60, headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ok"] is True and body["events"] == report["events"]
        assert body["signatures_checked"] == report["digests_checked"]
        half = httpx.get(f"{server.url}/v1/integrity/verify",
                         params={"from_position": 8, "to_position": 14}, timeout=60,
                         headers=AUTH).json()
        assert half["ok"] is True and (half["from_position"], half["to_position"]) == (8, 14)


# --- tampering with events ------------------------------------------------------------------


def _state(conn: Conn, position: int) -> bytes:
    row = conn.execute("SELECT state FROM ssot_events WHERE notification_id = %s",
                       (position,)).fetchone()
    assert row is not None
    return bytes(row[0])


def test_one_changed_byte_of_an_event_is_found_with_its_field(db: str, seeded: Seeded
                                                                ) -> None:
    position = seeded.positions["cfg", "a", 2]
    with tampering(db) as conn:
        state = _state(conn, position)
        at = state.index(b'"pool":20')
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (state[:at + 8] + b"1" + state[at + 9:], position))  # 20 -> 21
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "document")
    assert (first["namespace"], first["key"], first["version"]) == ("cfg", "a", 2)


@pytest.mark.parametrize("change", ["changed", "removed", "nulled"])
def test_a_changed_or_removed_auth_is_found_with_its_field(db: str, seeded: Seeded,
                                                           change: str) -> None:
    position = seeded.positions["ops", "y", 2]
    with tampering(db) as conn:
        state = orjson.loads(_state(conn, position))
        assert state["auth"] == OPS_AUTH
        if change == "changed":
            state["auth"] = {**OPS_AUTH, "on_behalf_of": "mallory"}
        elif change == "removed":
            del state["auth"]  # as if the event had been written before auth was
        else:
            state["auth"] = None
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (orjson.dumps(state), position))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "auth")
    assert (first["namespace"], first["key"], first["version"]) == ("ops", "y", 2)


def test_an_event_given_an_auth_it_never_had_is_found(db: str, seeded: Seeded) -> None:
    position = seeded.positions["cfg", "b", 2]
    with tampering(db) as conn:
        state = orjson.loads(_state(conn, position))
        assert state["auth"] is None
        state["auth"] = OPS_AUTH
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (orjson.dumps(state), position))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "auth")


def test_a_byte_that_breaks_the_json_is_found(db: str, seeded: Seeded) -> None:
    position = seeded.positions["ops", "x", 1]
    with tampering(db) as conn:
        state = _state(conn, position)
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (state[:-1] + b"]", position))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "state")
    assert (first["namespace"], first["key"]) == ("ops", "x")  # from the history copy


def test_an_event_rewritten_with_a_recomputed_hash_is_found(db: str, seeded: Seeded
                                                              ) -> None:
    """Its own hash checks out: the next version's link, the history copy and the
    digests tell."""
    position = seeded.positions["cfg", "b", 2]
    with tampering(db) as conn:
        state = orjson.loads(_state(conn, position))
        state["document"] = {"n": 200}
        state["hash"] = chain.event_hash({
            **state, "stream": str(stream_id("cfg", "b")), "version": 2,
            "type": "entry.updated"})
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (orjson.dumps(state), position))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "document")
    assert "recomputed hash" in first["detail"]


def test_a_changed_commit_time_is_found(db: str, seeded: Seeded) -> None:
    position = seeded.positions["cfg", "c", 2]
    with tampering(db) as conn:
        conn.execute("UPDATE ssot_events SET recorded_at = recorded_at + interval '1 ms'"
                     " WHERE notification_id = %s", (position,))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "recorded_at")
    assert (first["key"], first["version"]) == ("c", 2)


def test_a_commit_time_changed_in_both_copies_is_found_by_the_digests(db: str,
                                                                      seeded: Seeded) -> None:
    position = seeded.positions["cfg", "c", 2]
    with tampering(db) as conn:
        conn.execute("UPDATE ssot_events SET recorded_at = recorded_at + interval '1 ms'"
                     " WHERE notification_id = %s", (position,))
        conn.execute("UPDATE entry_history SET recorded_at = recorded_at + interval '1 ms'"
                     " WHERE position = %s", (position,))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"], first["field"]) == \
        ("event_altered", position, "recorded_at")
    assert "Merkle leaf" in first["detail"]


def test_an_event_deleted_in_the_middle_of_a_stream_is_found(db: str, seeded: Seeded
                                                             ) -> None:
    position = seeded.positions["cfg", "a", 2]
    with tampering(db) as conn:
        conn.execute("DELETE FROM ssot_events WHERE notification_id = %s", (position,))
    done, report = ssot_verify(db, key=seeded.key)
    assert done.returncode == 1 and report is not None
    first = report["first_problem"]
    assert (first["kind"], first["position"]) == ("event_missing", position)
    assert (first["namespace"], first["key"], first["version"]) == ("cfg", "a", 2)
    # the digests after it no longer match, but that is explained by the missing event
    assert "digest_altered" not in kinds(report)


def test_the_deleted_last_event_of_a_stream_is_found(db: str, seeded: Seeded) -> None:
    position = seeded.positions["cfg", "b", 4]
    with tampering(db) as conn:
        conn.execute("DELETE FROM ssot_events WHERE notification_id = %s", (position,))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"]) == ("event_missing", position)
    assert (first["namespace"], first["key"], first["version"]) == ("cfg", "b", 4)


def test_an_event_deleted_with_its_copies_is_found_by_the_digests(db: str, seeded: Seeded
                                                                  ) -> None:
    position = seeded.positions["cfg", "b", 4]
    with tampering(db) as conn:
        conn.execute("DELETE FROM ssot_events WHERE notification_id = %s", (position,))
        conn.execute("DELETE FROM entry_history WHERE position = %s", (position,))
        conn.execute("UPDATE entries SET version = 3, position = %s, hash = %s"
                     " WHERE namespace = 'cfg' AND key = 'b'",
                     (seeded.positions["cfg", "b", 3], None))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"]) == ("event_missing", position)
    assert "digests cover" in first["detail"]


def _forge(conn: Conn, position: int, namespace: str, key: str, version: int,
           document: Any, prev_hash: str | None) -> dict[str, Any]:
    """An event as the writer would make it, inserted at ``position`` with its copies."""
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()), "namespace": namespace, "key": key,
        "document": document, "patch": [{"op": "add", "path": "", "value": document}],
        "actor": "mallory", "reason": None, "correlation_id": "forged",
        "causation_id": None, "idempotency_key": None, "resolution": None,
        "prev_hash": prev_hash}
    kind = "entry.created" if version == 1 else "entry.updated"
    timestamp = datetime.now(UTC).isoformat()
    fields["hash"] = chain.event_hash({
        **fields, "timestamp": timestamp, "auth": None, "class_version": 5,
        "stream": str(stream_id(namespace, key)), "version": version, "type": kind})
    state = {"timestamp": timestamp, **fields, "auth": None, "class_version": 5}
    topic = "nexus_ssot.ledger.domain:" + ("EntryCreated" if version == 1 else "EntryUpdated")
    conn.execute(
        "INSERT INTO ssot_events (originator_id, originator_version, topic, state,"
        " notification_id) VALUES (%s, %s, %s, %s, %s)",
        (stream_id(namespace, key), version, topic, orjson.dumps(state), position))
    conn.execute(
        "INSERT INTO entry_history (namespace, key, version, position, recorded_at,"
        " event_type, event_id, actor, correlation_id, patch, document, prev_hash, hash)"
        " SELECT %s, %s, %s, %s, recorded_at, %s, %s, 'mallory', 'forged', %s, %s, %s, %s"
        " FROM ssot_events WHERE notification_id = %s",
        (namespace, key, version, position, kind, fields["event_id"],
         orjson.dumps(fields["patch"]).decode(), orjson.dumps(document).decode(),
         prev_hash, fields["hash"], position))
    conn.execute(
        "INSERT INTO entries (namespace, key, version, position, recorded_at, document,"
        " deleted, hash) SELECT %s, %s, %s, %s, recorded_at, %s, false, %s FROM ssot_events"
        " WHERE notification_id = %s ON CONFLICT (namespace, key) DO UPDATE SET"
        " version = EXCLUDED.version, position = EXCLUDED.position,"
        " document = EXCLUDED.document, hash = EXCLUDED.hash",
        (namespace, key, version, position, orjson.dumps(document).decode(), fields["hash"],
         position))
    return fields


def test_a_forged_event_with_a_recomputed_chain_is_caught_by_the_digests(
        db: str, seeded: Seeded) -> None:
    """A valid chain, history and current state: only the Merkle leaves know better."""
    gap = seeded.gaps[1]
    with tampering(db) as conn:
        _forge(conn, gap, "cfg", "forged", 1, {"admin": True}, None)
    done, report = ssot_verify(db, key=seeded.key)
    assert done.returncode == 1 and report is not None
    first = report["first_problem"]
    assert (first["kind"], first["position"]) == ("event_inserted", gap)
    assert (first["namespace"], first["key"], first["version"]) == ("cfg", "forged", 1)
    assert "no leaf" in first["detail"]
    assert "digest_altered" not in kinds(report)  # the roots differ because of it


def test_a_forged_next_version_without_copies_is_found(db: str, seeded: Seeded) -> None:
    gap = seeded.gaps[2]  # after ops/y version 1, before its version 2
    with tampering(db) as conn:
        last = orjson.loads(_state(conn, seeded.positions["ops", "z", 1]))
        _forge(conn, gap, "ops", "z", 2, {"evil": 1}, last["hash"])
        conn.execute("DELETE FROM entry_history WHERE position = %s", (gap,))
        conn.execute("UPDATE entries SET version = 1, position = %s, hash = %s WHERE"
                     " namespace = 'ops' AND key = 'z'",
                     (seeded.positions["ops", "z", 1], last["hash"]))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"]) == ("event_inserted", gap)
    assert (first["key"], first["version"]) == ("z", 2)


def _swap(conn: Conn, p: int, q: int) -> None:
    conn.execute("UPDATE ssot_events SET notification_id = -1 WHERE notification_id = %s",
                 (p,))
    conn.execute("UPDATE ssot_events SET notification_id = %s WHERE notification_id = %s",
                 (p, q))
    conn.execute("UPDATE ssot_events SET notification_id = %s WHERE notification_id = -1",
                 (q,))


@pytest.mark.parametrize("one, other", [
    (("cfg", "a", 2), ("cfg", "c", 1)),  # two streams
    (("cfg", "b", 2), ("cfg", "b", 3)),  # one stream: versions out of order
])
def test_two_swapped_events_are_found(db: str, seeded: Seeded, one: Address,
                                      other: Address) -> None:
    p, q = seeded.positions[one], seeded.positions[other]
    with tampering(db) as conn:
        _swap(conn, p, q)
    done, report = ssot_verify(db, key=seeded.key)
    assert done.returncode == 1 and report is not None
    first = report["first_problem"]
    assert (first["kind"], first["position"], first["other_position"]) == \
        ("events_reordered", min(p, q), max(p, q))
    assert first["namespace"] == "cfg"
    assert report["problem_count"] == 1, report["problems"]


def test_events_swapped_with_their_copies_are_found_by_the_digests(db: str, seeded: Seeded
                                                                   ) -> None:
    p, q = seeded.positions["cfg", "a", 3], seeded.positions["ops", "y", 1]
    with tampering(db) as conn:
        _swap(conn, p, q)
        for table, column in (("entry_history", "position"), ("entries", "position")):
            for a, b in ((p, -1), (q, p), (-1, q)):
                conn.execute(sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
                    sql.Identifier(table), sql.Identifier(column), sql.Identifier(column)),
                    (b, a))
    done, report = ssot_verify(db, key=seeded.key)
    assert done.returncode == 1 and report is not None
    first = report["first_problem"]
    assert (first["kind"], first["position"], first["other_position"]) == \
        ("events_reordered", min(p, q), max(p, q))
    assert "digested" in first["detail"]
    assert report["problem_count"] == 1, report["problems"]


def test_a_changed_prev_hash_breaks_the_chain(db: str, seeded: Seeded) -> None:
    """The forger recomputed the event's hash and its copies: the link still tells."""
    position = seeded.positions["cfg", "a", 3]
    with tampering(db) as conn:
        state = orjson.loads(_state(conn, position))
        state["prev_hash"] = "0" * 64
        state["hash"] = chain.event_hash({
            **state, "stream": str(stream_id("cfg", "a")), "version": 3,
            "type": "entry.patched"})
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (orjson.dumps(state), position))
        conn.execute("UPDATE entry_history SET prev_hash = %s, hash = %s"
                     " WHERE position = %s", (state["prev_hash"], state["hash"], position))
    first = first_problem(db, seeded)
    assert (first["kind"], first["position"]) == ("chain_broken", position)
    assert (first["key"], first["version"]) == ("a", 3)


def test_an_unchained_event_is_reported(db: str, seeded: Seeded) -> None:
    app = open_application(db, pool_size=1)
    try:
        writer = GroupCommitWriter(app, lambda _ns: Limits(), hash_chain=False)
        outcome = writer.write_batch([(Put("ops", "plain", document={}), _context(),
                                       None)])[0].result()
    finally:
        app.close()
    done, report = ssot_verify(db, key=seeded.key)
    assert done.returncode == 1 and report is not None
    first = report["first_problem"]
    assert (first["kind"], first["position"], first["key"]) == \
        ("unchained_event", outcome.position, "plain")
    assert any("no digest covers" in n for n in report["notes"])


# --- tampering with digests ---------------------------------------------------------------


def _digests(conn: Conn) -> list[tuple[int, int]]:
    return [(int(s), int(p)) for s, p in conn.execute(
        "SELECT seq, position FROM digests ORDER BY seq")]


def test_a_deleted_digest_row_is_found(db: str, seeded: Seeded) -> None:
    with tampering(db) as conn:
        rows = _digests(conn)
        conn.execute("DELETE FROM digests WHERE seq = 2")
    first = first_problem(db, seeded)
    assert (first["kind"], first["seq"], first["position"]) == \
        ("digest_missing", 2, rows[2][1])  # shows where the chain resumes
    exact = first_problem(db, seeded, "--digests", str(seeded.published))
    assert (exact["kind"], exact["seq"], exact["position"]) == \
        ("digest_missing", 2, rows[1][1])  # the published copy knows where it was


def test_the_deleted_last_digest_is_found(db: str, seeded: Seeded) -> None:
    with tampering(db) as conn:
        rows = _digests(conn)
        conn.execute("DELETE FROM digests WHERE seq = %s", (rows[-1][0],))
    first = first_problem(db, seeded)
    assert (first["kind"], first["seq"], first["position"]) == \
        ("digest_missing", rows[-1][0], rows[-1][1])


def test_a_changed_digest_is_found(db: str, seeded: Seeded) -> None:
    with tampering(db) as conn:
        rows = _digests(conn)
        conn.execute("UPDATE digests SET root = %s WHERE seq = 2", (b"\x07" * 32,))
    done, report = ssot_verify(db, key=seeded.key)
    assert done.returncode == 1 and report is not None
    first = report["first_problem"]
    assert (first["kind"], first["seq"], first["position"], first["field"]) == \
        ("digest_altered", 2, rows[1][1], "content")
    assert {"digest_altered", "digest_signature_invalid"} <= kinds(report)


def test_a_rewritten_digest_table_cannot_hide_from_the_published_digests(
        db: str, seeded: Seeded) -> None:
    """Every digest re-signed with the forger's own key, from digest 2 on with a new time
    (so a new hash and chain): the table is coherent, the published copies are not it."""
    forger = Ed25519PrivateKey.generate()
    forged_key = Signer(forger)
    with tampering(db) as conn:
        rows = [Digest.from_row(r) for r in conn.execute(
            f"SELECT {Digest.COLUMNS} FROM digests ORDER BY seq")]
        prev = None
        for old in rows:
            at = old.recorded_at if old.seq == 1 else old.recorded_at.replace(microsecond=0)
            moved = Digest(old.seq, old.position, old.size, old.root, at, prev, b"")
            canonical = moved.canonical()
            new_hash = hashlib.sha256(canonical).digest()
            conn.execute("UPDATE digests SET recorded_at = %s, prev = %s, hash = %s,"
                         " signature = %s, key_id = %s WHERE seq = %s",
                         (moved.recorded_at, prev, new_hash, forged_key.sign(canonical),
                          forged_key.key_id, old.seq))
            prev = new_hash
    # with the forger's key, the table verifies; the published digests do not agree
    forger_pem = Path(str(seeded.key) + f".forger{secrets.token_hex(2)}")
    forger_pem.write_bytes(forger.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    try:
        done, report = ssot_verify(db, key=forger_pem)
        assert done.returncode == 0, report
        done, report = ssot_verify(db, "--digests", str(seeded.published), key=forger_pem)
        assert done.returncode == 1 and report is not None
        first = report["first_problem"]
        assert (first["seq"], first["position"]) == (1, rows[0].position)
        mismatches = {p["seq"]: p["field"] for p in report["problems"]
                      if p["kind"] == "digest_mismatch_external"}
        assert mismatches[1] == "signature" and mismatches[2] == "recorded_at"
        # (the published copies are signed by a key the forger's is not)
        assert first["kind"] == "digest_signature_invalid"
        # and with the real key, the signatures themselves fail
        real = first_problem(db, seeded)
        assert (real["kind"], real["seq"], real["field"]) == \
            ("digest_signature_invalid", 1, "key_id")
    finally:
        forger_pem.unlink()


# --- resuming, the route, bad input -----------------------------------------------------------


def test_resuming_gives_the_same_answer(db: str, seeded: Seeded, tmp_path: Path) -> None:
    missing = seeded.positions["cfg", "a", 2]
    swapped = (seeded.positions["ops", "y", 1], seeded.positions["cfg", "b", 3])
    with tampering(db) as conn:
        conn.execute("DELETE FROM ssot_events WHERE notification_id = %s", (missing,))
        _swap(conn, *swapped)
    _, whole = ssot_verify(db, key=seeded.key)
    assert whole is not None
    expected = [(p["kind"], p["position"]) for p in whole["problems"]]
    assert expected[0] == ("event_missing", missing)
    assert ("events_reordered", min(swapped)) in expected
    for stop in (missing - 1, missing + 1, max(swapped) + 1):
        checkpoint = tmp_path / f"at{stop}.json"
        done, part = ssot_verify(db, "--to-position", str(stop), "--checkpoint",
                                 str(checkpoint), key=seeded.key)
        assert part is not None and part["to_position"] == stop
        done, rest = ssot_verify(db, "--checkpoint", str(checkpoint), key=seeded.key)
        assert done.returncode == 1 and rest is not None
        assert rest["resumed_from"] == stop
        assert [(p["kind"], p["position"]) for p in rest["problems"]] == expected, stop
        assert rest["events_total"] == whole["events"]
    _, later = ssot_verify(db, "--from-position", str(missing - 1), key=seeded.key)
    assert later is not None and later["first_problem"]["position"] == missing


def test_an_interrupted_run_resumes_from_its_last_checkpoint(db: str, seeded: Seeded,
                                                             tmp_path: Path) -> None:
    position = seeded.positions["ops", "y", 2]
    with tampering(db) as conn:
        conn.execute("DELETE FROM ssot_events WHERE notification_id = %s", (position,))
    whole = verify.verify(db, verify.Options())
    checkpoint = tmp_path / "run.json"
    seen: list[int] = []

    def interrupt(done: int, total: int, at: int) -> None:
        seen.append(at)
        if len(seen) == 3:
            raise KeyboardInterrupt

    options = verify.Options(checkpoint=checkpoint, checkpoint_every=1, fetch_size=2)
    with pytest.raises(KeyboardInterrupt):
        verify.verify(db, options, progress=interrupt)
    saved = orjson.loads(checkpoint.read_bytes())
    assert saved["position"] == seen[1]  # the last batch before the interruption
    resumed = verify.verify(db, options)
    assert resumed.resumed_from == seen[1]
    assert [p.as_dict() for p in resumed.problems] == [p.as_dict() for p in whole.problems]
    assert whole.first is not None and whole.first.position == position
    with pytest.raises(InvalidInput) as refused:
        verify.verify(db, verify.Options(checkpoint=checkpoint, namespace="cfg"))
    assert refused.value.field == "namespace"


def test_the_route_agrees_and_is_bounded(db: str, seeded: Seeded,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    position = seeded.positions["cfg", "c", 1]
    with tampering(db) as conn:
        state = _state(conn, position)
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (state.replace(b'"info"', b'"INFO"', 1), position))
    cli = first_problem(db, seeded)
    settings = make_settings(db, signing_key_file=seeded.key, digests=False)
    with RunningServer(settings) as server:
        get = route_get(server.url)
        body = get().json()
        assert body["ok"] is False and body["first_problem"] == cli
        assert get(from_position=position - 1, to_position=position).json()[
            "first_problem"]["position"] == position
        assert get(from_position=position).json()["ok"] is True
        monkeypatch.setattr(verify_route, "MAX_EVENTS", 5)
        page = get().json()
        assert page["events"] == 5 and page["next_from_position"] == page["to_position"]
        too_many = get(to_position=seeded.head)
        assert too_many.status_code == 400
        assert too_many.json()["code"] == "range_too_large"
        assert too_many.json()["field"] == "to_position"
        backwards = get(from_position=5, to_position=2)
        assert backwards.status_code == 400 and backwards.json()["field"] == "to_position"
        bad = get(namespace="Not Valid")
        assert bad.status_code == 400 and bad.json()["field"] == "namespace"
        negative = get(from_position=-1)
        assert negative.status_code == 400 and negative.json()["field"] == "from_position"


def route_get(base: str) -> Any:
    def get(**params: Any) -> httpx.Response:
        return httpx.get(f"{base}/v1/integrity/verify", params=params, timeout=60, headers=AUTH)
    return get


def test_a_namespace_is_verified_alone(db: str, seeded: Seeded) -> None:
    position = seeded.positions["cfg", "a", 2]
    with tampering(db) as conn:
        state = _state(conn, position)
        conn.execute("UPDATE ssot_events SET state = %s WHERE notification_id = %s",
                     (state.replace(b'"pool":20', b'"pool":99', 1), position))
    done, report = ssot_verify(db, "--namespace", "ops", key=seeded.key)
    assert done.returncode == 0, report  # the tampering is in cfg
    assert report is not None and report["streams"] == 3
    first = first_problem(db, seeded, "--namespace", "cfg")
    assert (first["kind"], first["position"]) == ("event_altered", position)


def test_bad_input_is_refused_and_changes_nothing(db: str, seeded: Seeded,
                                                  tmp_path: Path) -> None:
    bad = tmp_path / "bad.ndjson"
    lines = seeded.published.read_text().splitlines()
    bad.write_text(lines[0] + "\n" + lines[1].replace('"root":"', '"root":"zz') + "\n")
    done, _ = ssot_verify(db, "--digests", str(bad))
    assert done.returncode == 2
    assert "--digests" in done.stderr and "line 2" in done.stderr and "root" in done.stderr
    done, _ = ssot_verify(db, "--digests", str(tmp_path / "absent.ndjson"))
    assert done.returncode == 2 and "cannot be read" in done.stderr
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    done, _ = ssot_verify(db, "--public-key", str(key))
    assert done.returncode == 2 and "--public-key" in done.stderr
    done, _ = ssot_verify(db, "--namespace", "Bad Name")
    assert done.returncode == 2 and "--namespace" in done.stderr
    done, _ = ssot_verify(db, "--from-position", "9", "--to-position", "3")
    assert done.returncode == 2 and "--to-position" in done.stderr
    checkpoint = tmp_path / "cp.json"
    checkpoint.write_text('{"format": "something else"}')
    done, _ = ssot_verify(db, "--checkpoint", str(checkpoint))
    assert done.returncode == 2 and "--checkpoint" in done.stderr
    assert checkpoint.read_text() == '{"format": "something else"}'
    valid = tmp_path / "valid.json"
    ssot_verify(db, "--checkpoint", str(valid), "--to-position", "4")
    done, _ = ssot_verify(db, "--checkpoint", str(valid), "--from-position", "2")
    assert done.returncode == 2 and "--from-position" in done.stderr
    down = subprocess.run([SSOT, "verify"], capture_output=True, text=True, timeout=60,
                          env={**os.environ,
                               "SSOT_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/x"})
    assert down.returncode == 5 and down.stderr.startswith("error: unreachable:")
    done, report = ssot_verify(db, key=seeded.key)
    assert done.returncode == 0 and report is not None and report["ok"]


def test_the_published_digests_file_is_parsed_strictly(seeded: Seeded) -> None:
    good = orjson.loads(seeded.published.read_text().splitlines()[0])
    assert verify.parse_published_digest(good).seq == 1
    cases: list[tuple[dict[str, Any], str]] = [
        ({"seq": 0}, "seq"), ({"root": "ab"}, "root"),
        ({"recorded_at": "2026-01-01T00:00:00"}, "recorded_at"), ({"prev": 5}, "prev"),
        ({"key_id": 3}, "key_id")]
    for change, member in cases:
        with pytest.raises(ValueError, match=member):
            verify.parse_published_digest({**good, **change})


def test_verify_reads_in_one_snapshot_while_writes_go_on(db: str, seeded: Seeded) -> None:
    app = open_application(db, pool_size=1)
    writer = GroupCommitWriter(app, lambda _ns: Limits())
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            writer.write_batch([(Put("ops", f"live/{i % 7}", document={"i": i}),
                                 _context(), None)])[0].result()
            i += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        reports = [verify.verify(db) for _ in range(3)]
    finally:
        stop.set()
        thread.join()
        app.close()
    for report in reports:
        assert report.ok, [p.describe() for p in report.problems]
