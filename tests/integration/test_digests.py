"""Digests of the log (integrity/digests/): cadence, roots equal to the tree over the log,
copies on NATS, Ed25519 signatures, inclusion proofs checked by the standalone script, and
a digester that survives SIGKILL without a leaf twice or missing."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
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

from nexus_ssot.integrity import digests, merkle
from nexus_ssot.integrity.digests import digester as digester_module
from nexus_ssot.ledger import chain
from nexus_ssot.ledger.following import Following
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ops.digest import DigesterThread, digester_for
from nexus_ssot.ops.loop_thread import LoopThread
from tests.integration.conftest import (
    AUTH,
    RunningServer,
    free_port,
    make_settings,
    start_serve,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ops" / "verify_proof.py"
SSOT = str(Path(sys.executable).parent / "ssot")
Conn = psycopg.Connection[tuple[Any, ...]]


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture()
def streams(nats_url: str) -> Iterator[tuple[str, str]]:
    """(events stream name, subject prefix) of this test's own; the events stream and its
    digests stream are deleted afterwards."""
    token = secrets.token_hex(4)
    name, prefix = f"SSOT_DGTEST_{token}", f"ssotdgtest{token}"
    yield name, prefix

    async def delete() -> None:
        nc = await nats.connect(nats_url)
        try:
            for stream in (name, digests.digest_stream(name)):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    asyncio.run(delete())


@pytest.fixture()
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signing.pem"
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return path


class Ledger:
    """The API on a fresh database (writer in process) and, when started, a digester."""

    def __init__(self, database_url: str, nats_url: str, streams: tuple[str, str],
                 **settings: Any) -> None:
        self.settings = make_settings(database_url, nats_url=nats_url, nats_stream=streams[0],
                                      nats_subject_prefix=streams[1], **settings)
        self.server = RunningServer(self.settings)
        self.digester: DigesterThread | None = None

    def __enter__(self) -> Ledger:
        self.server.__enter__()
        self.client = httpx.Client(headers=AUTH, base_url=self.server.url, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_digester()
        self.client.close()
        self.server.__exit__(*exc)

    def start_digester(self) -> digests.Digester:
        self.digester = DigesterThread(self.settings, publish=True)
        self.digester.start()
        return self.digester.digester

    def stop_digester(self) -> None:
        if self.digester is not None:
            self.digester.stop()
            assert not self.digester.thread.is_alive()
            self.digester = None

    def put(self, ns: str, key: str, document: Any) -> dict[str, Any]:
        r = self.client.put(f"/v1/namespaces/{ns}/entries/{key}", json=document)
        assert r.status_code in (200, 201), r.text
        body: dict[str, Any] = r.json()
        return body


def log_leaves(conn: Conn) -> list[tuple[int, bytes]]:
    """(position, leaf hash) of every event of the log, recomputed from ssot_events."""
    rows = conn.execute("SELECT notification_id, recorded_at, state FROM ssot_events"
                        " ORDER BY notification_id").fetchall()
    return [(p, merkle.leaf_hash(chain.leaf_data(p, at, orjson.loads(s)["hash"])))
            for p, at, s in rows]


def stored_digests(conn: Conn) -> list[digests.Digest]:
    return [digests.Digest.from_row(r) for r in conn.execute(
        f"SELECT {digests.Digest.COLUMNS} FROM digests ORDER BY seq").fetchall()]


def wait_for(condition: Any, timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def digested(database_url: str, size: int) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT max(size) FROM digests").fetchone()
    return bool(row and row[0] is not None and row[0] >= size)


async def _published(nats_url: str, stream: str) -> list[Any]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return []
        return [await js.get_msg(stream, seq=s)
                for s in range(info.state.first_seq, info.state.last_seq + 1)
                if info.state.messages]
    finally:
        await nc.close()


def published(nats_url: str, streams: tuple[str, str]) -> list[dict[str, Any]]:
    """The digests the NATS digest stream holds, in stream order (headers checked)."""
    found = []
    for msg in asyncio.run(_published(nats_url, digests.digest_stream(streams[0]))):
        assert msg.subject == digests.digest_subject(streams[1])
        body = orjson.loads(msg.data)
        assert msg.headers["Nats-Msg-Id"] == str(body["seq"])
        found.append(body)
    return found


async def _delete_stream(nats_url: str, name: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


def published_through(nats_url: str, streams: tuple[str, str],
                      size: int) -> list[dict[str, Any]] | None:
    """The published digests once the last covers ``size`` events."""
    found = published(nats_url, streams)
    return found if found and found[-1]["size"] == size else None


def check_chain(conn: Conn, leaves: list[tuple[int, bytes]]) -> list[digests.Digest]:
    """Every stored digest: chained, hashed, its root that of the log's first leaves; the
    stored leaves and nodes exactly the log's, each once."""
    digest_chain = stored_digests(conn)
    prev = None
    for i, d in enumerate(digest_chain, 1):
        assert d.seq == i and d.prev == prev
        assert d.hash == hashlib.sha256(chain.canonical(d.content())).digest()
        assert d.root == merkle.root([h for _, h in leaves[:d.size]])
        assert d.position == leaves[d.size - 1][0]
        prev = d.hash
    size = digest_chain[-1].size if digest_chain else 0
    stored = conn.execute("SELECT idx, position, hash FROM merkle_leaves ORDER BY idx").fetchall()
    assert [(i, p, bytes(h)) for i, p, h in stored] == [
        (i, p, h) for i, (p, h) in enumerate(leaves[:size])]
    frontier, nodes = merkle.Frontier(), set()
    for _, h in leaves[:size]:
        nodes.update((lv, i, n) for lv, i, n in frontier.add(h) if lv > 0)
    stored_nodes = {(lv, i, bytes(h)) for lv, i, h in conn.execute(
        "SELECT level, idx, hash FROM merkle_nodes").fetchall()}
    assert stored_nodes == nodes
    return digest_chain


def verify(proof: dict[str, Any], digest: dict[str, Any], tmp_path: Path,
           *key: Path) -> subprocess.CompletedProcess[str]:
    """ops/verify_proof.py as a process, proof on stdin."""
    digest_file = tmp_path / f"digest-{secrets.token_hex(3)}.json"
    digest_file.write_text(json.dumps(digest))
    return subprocess.run([sys.executable, str(SCRIPT), "-", str(digest_file), *map(str, key)],
                          input=json.dumps(proof), capture_output=True, text=True, timeout=30,
                          cwd=tmp_path, env={"PATH": os.environ.get("PATH", "")})


# --- tests ----------------------------------------------------------------------------


def test_digests_at_the_event_cadence_match_the_log_reach_nats_and_are_signed(
    fresh_db: str, nats_url: str, streams: tuple[str, str], key_file: Path, ns: str,
) -> None:
    with Ledger(fresh_db, nats_url, streams, digest_every_events=5,
                digest_every_seconds=3600, signing_key_file=key_file) as ledger:
        for i in range(23):
            ledger.put(ns, f"k{i % 4}", {"i": i, "text": "é€"})
        digester = ledger.start_digester()
        wait_for(lambda: digested(fresh_db, 20), what="4 digests")
        wait_for(lambda: len(published(nats_url, streams)) == 4, what="4 digests on NATS")
        time.sleep(0.5)  # and not one more: 3 events wait for the hour
        assert digester.progress.seq == 4 and digester.progress.published_seq == 4
        with psycopg.connect(fresh_db) as conn:
            digest_chain = check_chain(conn, log_leaves(conn))
        assert [d.size for d in digest_chain] == [5, 10, 15, 20]

        api_digests = ledger.client.get("/v1/integrity/digests", params={"limit": 3}).json()
        rest = ledger.client.get("/v1/integrity/digests",
                                 params={"after": api_digests["next_after"]}).json()
        assert api_digests["next_after"] == 3 and rest["next_after"] is None
        items = api_digests["items"] + rest["items"]
        assert items == [d.as_json() for d in digest_chain] == published(nats_url, streams)
        assert ledger.client.get("/v1/integrity/digests/2").json() == items[1]

        key = ledger.client.get("/v1/integrity/public-key").json()
        assert key["algorithm"] == "Ed25519"
        public = serialization.load_pem_public_key(key["public_key_pem"].encode())
        raw = bytes.fromhex(key["public_key_hex"])
        assert key["key_id"] == hashlib.sha256(raw).hexdigest()[:16]
        for d in items:
            assert d["key_id"] == key["key_id"]
            content = {k: d[k] for k in ("seq", "position", "size", "root", "recorded_at",
                                         "prev")}
            public.verify(bytes.fromhex(d["signature"]), chain.canonical(content))  # type: ignore[union-attr]

        # a digest stream that lost its messages gets every digest again, in order
        asyncio.run(_delete_stream(nats_url, digests.digest_stream(streams[0])))
        for i in range(5):
            ledger.put(ns, "later", {"i": i})
        wait_for(lambda: published_through(nats_url, streams, 25), what="the stream refilled")
        with psycopg.connect(fresh_db) as conn:
            digest_chain = check_chain(conn, log_leaves(conn))
        assert published(nats_url, streams) == [d.as_json() for d in digest_chain]
        assert [d.size for d in digest_chain] == [5, 10, 15, 20, 25]

        # the digest tables are append-only
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            for statement in ("UPDATE digests SET size = 1", "DELETE FROM merkle_leaves",
                              "TRUNCATE merkle_nodes"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)


def test_digests_at_the_time_cadence_only_when_there_is_news(
    fresh_db: str, nats_url: str, streams: tuple[str, str], ns: str,
) -> None:
    with Ledger(fresh_db, nats_url, streams, digest_every_events=1000,
                digest_every_seconds=0.5) as ledger:
        digester = ledger.start_digester()
        time.sleep(1.0)
        assert digester.progress.seq == 0  # an empty log: no digest
        for i in range(3):
            ledger.put(ns, "k", {"i": i})
        wait_for(lambda: digested(fresh_db, 3), timeout=10, what="a timed digest")
        with psycopg.connect(fresh_db) as conn:
            before = [d.size for d in stored_digests(conn)]
        time.sleep(1.2)  # no news: no digest
        with psycopg.connect(fresh_db) as conn:
            assert [d.size for d in stored_digests(conn)] == before
        started = time.monotonic()
        ledger.put(ns, "k", {"i": 3})
        wait_for(lambda: digested(fresh_db, 4), timeout=10, what="the next timed digest")
        assert time.monotonic() - started < 3
        with psycopg.connect(fresh_db) as conn:
            digest_chain = check_chain(conn, log_leaves(conn))
        assert [d.size for d in digest_chain] == [*before, 4]
        for earlier, later in itertools.pairwise(digest_chain):  # at most one per period
            assert later.recorded_at - earlier.recorded_at >= timedelta(seconds=0.45)
        assert published_through(nats_url, streams, 4) or wait_for(
            lambda: published_through(nats_url, streams, 4), what="the digests on NATS")
        assert [d["signature"] for d in published(nats_url, streams)] == [None] * len(digest_chain)
        r = ledger.client.get("/v1/integrity/public-key")
        assert (r.status_code, r.json()["code"]) == (404, "no_signing_key")


def test_a_caught_up_digester_lingers_so_a_trickle_of_commits_folds_as_one_range(
    fresh_db: str, nats_url: str, streams: tuple[str, str], ns: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once it has folded the log's last events, the digester waits ``linger`` before it
    reads again: one-event commits meanwhile make one range, not a wake-up each. Its
    linger is held here until four more commits have landed; they are folded together."""
    lingers: list[float] = []
    release = threading.Event()

    async def lingering(stop: asyncio.Event, seconds: float) -> None:
        lingers.append(seconds)
        await asyncio.get_running_loop().run_in_executor(None, release.wait)

    monkeypatch.setattr(digester_module, "sleep_unless_stopped", lingering)
    with Ledger(fresh_db, nats_url, streams, digest_every_events=5,
                digest_every_seconds=3600) as ledger:
        # the digester on a log tail of the test's own, to know when the tail has read
        digester = digester_for(ledger.settings, publish=False)
        following = Following(fresh_db)

        async def follow(stop: asyncio.Event) -> None:
            await asyncio.gather(following.run(stop), digester.run(stop, following))

        thread = LoopThread("test-digester", follow)
        thread.start()
        try:
            assert digester.linger == 0.05
            ledger.put(ns, "k", {"i": 0})  # an empty log's first digest is due at once
            wait_for(lambda: digested(fresh_db, 1), what="the first digest")
            ledger.put(ns, "k", {"i": 1})
            wait_for(lambda: lingers, what="the digester to fold it and linger")
            for i in range(2, 6):
                last = ledger.put(ns, "k", {"i": i})["position"]
            wait_for(lambda: following.tail.head >= last, what="the tail to read the four")
        finally:
            release.set()
        try:
            wait_for(lambda: digested(fresh_db, 6), what="the digest of six events")
        finally:
            thread.stop()
        assert not thread.thread.is_alive()
        assert lingers == [0.05]  # the four were one range: it made the digest, no linger
        with psycopg.connect(fresh_db) as conn:
            assert [d.size for d in check_chain(conn, log_leaves(conn))] == [1, 6]


def test_every_version_has_a_proof_the_standalone_script_accepts(
    fresh_db: str, nats_url: str, streams: tuple[str, str], key_file: Path, ns: str,
    tmp_path: Path,
) -> None:
    with Ledger(fresh_db, nats_url, streams, digest_every_events=3,
                digest_every_seconds=0.3, signing_key_file=key_file) as ledger:
        c = ledger.client
        base = f"/v1/namespaces/{ns}/entries/svc/db.url"
        c.put(base, json={"url": "pg://a", "pool": 5, "ratio": 0.1, "name": "Zürich ✓"})
        c.patch(base, json={"pool": 6}, headers={"Content-Type": "application/merge-patch+json",
                                                  "X-Reason": "more connections"})
        c.put(base, json={"url": "pg://b"}, headers={"If-Match": '"2"',
                                                     "Idempotency-Key": "idem-1"})
        assert c.delete(base).status_code in (200, 204)
        assert c.post(f"{base}/revert", json={"to_version": 1}).status_code in (200, 201)
        for i in range(5):  # other keys, so the tree has ragged edges
            ledger.put(ns, f"other{i}", {"i": [i, 2.5e-8, -0.0, 10**15], "n": None})
        early = c.get(f"{base}/proof", params={"version": 1})
        assert early.status_code == 409 and early.json()["code"] == "not_yet_digested"
        assert early.json()["next_digest_expected_at"].endswith("Z")
        assert early.json()["field"] == "version"

        ledger.start_digester()
        with psycopg.connect(fresh_db) as conn:
            total = len(log_leaves(conn))
        wait_for(lambda: digested(fresh_db, total), what="the whole log digested")
        on_nats = {d["seq"]: d for d in wait_for(
            lambda: published_through(nats_url, streams, total), what="the digests on NATS")}
        latest = max(on_nats)
        public_key = tmp_path / "public.pem"
        public_key.write_text(c.get("/v1/integrity/public-key").json()["public_key_pem"])

        for version in range(1, 6):
            r = c.get(f"{base}/proof", params={"version": version})
            assert r.status_code == 200, r.text
            proof = r.json()
            assert proof["digest"] == on_nats[latest]
            assert proof["event"]["version"] == version
            assert proof["event"]["namespace"] == ns and proof["event"]["key"] == "svc/db.url"
            done = verify(proof, on_nats[latest], tmp_path, public_key)
            assert (done.returncode, done.stdout.strip()) == (0, "OK"), done.stdout
            # against every older digest that covers it, too
            for seq, digest in on_nats.items():
                older = c.get(f"{base}/proof", params={"version": version, "digest": seq})
                if digest["position"] < proof["event"]["position"]:
                    assert older.status_code == 422, older.text
                    assert older.json()["code"] == "not_in_digest"
                    continue
                assert older.status_code == 200, older.text
                done = verify(older.json(), digest, tmp_path, public_key)
                assert (done.returncode, done.stdout.strip()) == (0, "OK"), done.stdout
        assert c.get(f"{base}/proof", params={"version": 3}).json()["event"][
            "idempotency_key"] == "idem-1"

        proof = c.get(f"{base}/proof", params={"version": 2}).json()
        digest = on_nats[latest]
        tampered: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            ("event:", {**proof, "event": {**proof["event"], "reason": "other"}}, digest),
            ("event:", {**proof, "event": {**proof["event"], "document": {"pool": 7}}}, digest),
            ("leaf:", {**proof, "event": {**proof["event"], "position": 99}}, digest),
            ("leaf:", {**proof, "event": {**proof["event"], "recorded_at":
                                          "2020-01-01T00:00:00.000000Z"}}, digest),
            ("audit path:", {**proof, "audit_path": proof["audit_path"][::-1]}, digest),
            ("audit path:", {**proof, "audit_path": proof["audit_path"][:-1]}, digest),
            ("audit path:", {**proof, "leaf": {**proof["leaf"], "index": 0}}, digest),
            ("digest:", proof, {**digest, "root": "00" * 32}),
            ("digest:", proof, on_nats[latest - 1]),
        ]
        for failure, bad_proof, bad_digest in tampered:
            done = verify(bad_proof, bad_digest, tmp_path)
            assert done.returncode == 1 and done.stdout.startswith(f"FAIL {failure}"), (
                failure, done.stdout)
        other_key = tmp_path / "other.pem"
        other_key.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        done = verify(proof, digest, tmp_path, other_key)
        assert (done.returncode, done.stdout.strip()) == (
            1, "FAIL signature: not this key's signature of the digest")
        done = verify({"event": {}}, digest, tmp_path)
        assert done.returncode == 1 and done.stdout.startswith("FAIL unreadable input")

        # a file argument works as well as stdin
        (tmp_path / "proof.json").write_text(json.dumps(proof))
        (tmp_path / "digest.json").write_text(json.dumps(digest))
        done = subprocess.run([sys.executable, str(SCRIPT), "proof.json", "digest.json"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=30)
        assert (done.returncode, done.stdout.strip()) == (0, "OK")

        # what does not exist, or is not digested
        cases = [({"version": 9}, 404, "version_not_found", "version"),
                 ({"version": 1, "digest": 999}, 404, "digest_not_found", "digest"),
                 ({"version": 0}, 400, "invalid_parameter", "version"),
                 ({}, 400, "invalid_parameter", "version"),
                 ({"version": "x"}, 400, "invalid_parameter", "version"),
                 ({"version": 1, "digest": 0}, 400, "invalid_parameter", "digest")]
        for params, status, code, field in cases:
            r = c.get(f"{base}/proof", params=params)
            assert (r.status_code, r.json()["code"], r.json().get("field")) == (
                status, code, field), (params, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        r = c.get(f"/v1/namespaces/{ns}/entries/nothing/proof", params={"version": 1})
        assert (r.status_code, r.json()["code"]) == (404, "entry_not_found")
        r = c.get("/v1/integrity/digests/999")
        assert (r.status_code, r.json()["code"]) == (404, "digest_not_found")
        r = c.get("/v1/integrity/digests", params={"limit": 0})
        assert (r.status_code, r.json()["field"]) == (400, "limit")
        # proof is a sub-resource of an entry: writes to it are refused, reads are proofs
        r = c.put(f"/v1/namespaces/{ns}/entries/a/proof", json={})
        assert (r.status_code, r.json()["code"]) == (405, "method_not_allowed")
        assert r.headers["allow"] == "GET"

        ledger.stop_digester()
        v6 = ledger.put(ns, "svc/db.url", {"url": "pg://c"})
        r = c.get(f"{base}/proof", params={"version": v6["version"]})
        assert r.status_code == 409 and r.json()["code"] == "not_yet_digested"
        assert r.json()["position"] == v6["position"]
        assert r.json()["digested_through"] == digest["position"]


def test_the_digester_process_survives_sigkill_without_a_leaf_twice_or_missing(
    fresh_db: str, nats_url: str, streams: tuple[str, str], key_file: Path, ns: str,
) -> None:
    env = {**os.environ, "SSOT_DATABASE_URL": fresh_db, "SSOT_NATS_URL": nats_url,
           "SSOT_NATS_STREAM": streams[0], "SSOT_NATS_SUBJECT_PREFIX": streams[1],
           "SSOT_DIGEST_EVERY_EVENTS": "7", "SSOT_DIGEST_EVERY_SECONDS": "0.2",
           "SSOT_SIGNING_KEY_FILE": str(key_file)}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([SSOT, "digest"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    stop = threading.Event()
    written: list[int] = []
    with Ledger(fresh_db, nats_url, streams) as ledger:
        def write(writer: int) -> None:  # (each its own documents: each write an event)
            i = 0
            while not stop.is_set():
                written.append(ledger.put(ns, f"k{i % 13}", {"i": i, "by": writer})["position"])
                i += 1

        writers = [threading.Thread(target=write, args=(n,)) for n in range(3)]
        for t in writers:
            t.start()
        proc = start()
        try:
            for kill in range(6):
                time.sleep(0.4 + 0.3 * (kill % 3))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                proc = start()
            stop.set()
            for t in writers:
                t.join(30)
            with psycopg.connect(fresh_db) as conn:
                total = len(log_leaves(conn))
            assert total == len(written) > 30
            wait_for(lambda: digested(fresh_db, total), what="the whole log digested")
            wait_for(lambda: published_through(nats_url, streams, total),
                     what="every digest on NATS")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        with psycopg.connect(fresh_db) as conn:
            digest_chain = check_chain(conn, log_leaves(conn))
        assert digest_chain[-1].size == total
        assert published(nats_url, streams) == [d.as_json() for d in digest_chain]  # each once
        assert all(d.signature is not None for d in digest_chain)
        ledger.client.get("/v1/health").raise_for_status()


def test_ssot_serve_records_and_publishes_digests(
    fresh_db: str, nats_url: str, streams: tuple[str, str], ns: str, tmp_path: Path,
) -> None:
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": fresh_db, "SSOT_NATS_URL": nats_url,
           "SSOT_NATS_STREAM": streams[0], "SSOT_NATS_SUBJECT_PREFIX": streams[1],
           "SSOT_HTTP_PORT": str(port), "SSOT_HTTP_WORKERS": "1", "SSOT_KV_MIRROR": "false",
           "SSOT_DIGEST_EVERY_EVENTS": "2", "SSOT_DIGEST_EVERY_SECONDS": "0.3",
           # its own (else the checkout's .ssot: a `make run` there, its metrics folder)
           "SSOT_DATA_DIR": str(tmp_path / "data")}
    proc, url = start_serve([], env, port)
    try:
        with httpx.Client(headers=AUTH, base_url=url, timeout=30) as c:
            for i in range(3):
                c.put(f"/v1/namespaces/{ns}/entries/k", json={"i": i}).raise_for_status()
            proof = wait_for(lambda: (r := c.get(f"/v1/namespaces/{ns}/entries/k/proof",
                                                 params={"version": 3})).status_code == 200
                             and r.json(), what="a proof of version 3")
        digest = wait_for(lambda: next((d for d in published(nats_url, streams)
                                        if d["seq"] == proof["digest"]["seq"]), None),
                          what="its digest on NATS")
        done = verify(proof, digest, tmp_path)
        assert (done.returncode, done.stdout.strip()) == (0, "OK")
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    assert "recording digests every 2 events" in output


def test_a_tree_unlike_its_digests_and_a_stream_of_another_log_are_refused(
    fresh_db: str, server_url: str, nats_url: str, streams: tuple[str, str], ns: str,
) -> None:
    with Ledger(fresh_db, nats_url, streams, digest_every_events=2,
                digest_every_seconds=3600) as ledger:
        for i in range(4):
            ledger.put(ns, "k", {"i": i})
        digester = ledger.start_digester()
        wait_for(lambda: published_through(nats_url, streams, 4), what="2 digests on NATS")
        ledger.stop_digester()
        with psycopg.connect(fresh_db, autocommit=True) as conn:  # the owner edits the tree
            conn.execute("ALTER TABLE merkle_nodes DISABLE TRIGGER USER")
            conn.execute("UPDATE merkle_nodes SET hash = %s WHERE level = 2 AND idx = 0",
                         (b"\0" * 32,))
            conn.execute("ALTER TABLE merkle_nodes ENABLE TRIGGER USER")
        for i in range(2):
            ledger.put(ns, "k", {"i": 10 + i})
        digester = ledger.start_digester()
        wait_for(lambda: "TreeMismatch" in (digester.progress.last_error or ""),
                 what="the digester to refuse")
        assert "digest 2 covers 4 events up to position" in (digester.progress.last_error or "")
        time.sleep(0.5)
        with psycopg.connect(fresh_db) as conn:
            assert [d.size for d in stored_digests(conn)] == [2, 4]  # nothing added on top

    # another database's digester finds this log's digests in the stream: it publishes none
    name = f"ssot_digest_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    other = psycopg.conninfo.make_conninfo(fresh_db, dbname=name)
    try:
        migrate(other)
        with Ledger(other, nats_url, streams, digest_every_events=1,
                    digest_every_seconds=3600) as ledger:
            for i in range(3):
                ledger.put(ns, "k", {"other": i})
            digester = ledger.start_digester()
            wait_for(lambda: "another log" in (digester.progress.last_error or ""),
                     what="the publisher to refuse")
            # recording is a role of its own: it may record the third digest after the
            # publisher has refused
            wait_for(lambda: digester.progress.seq == 3, what="3 digests recorded")
            assert digester.progress.published_seq == 0
            assert [d["size"] for d in published(nats_url, streams)] == [2, 4]
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
