"""NATS users rendered from the access policy, on a real (embedded) nats-server: what a
token may read and publish, ``ssot access nats-config`` reading a database, and ``ssot
serve``'s refresher following token changes.

The ``_access`` entries are written straight into ``entries`` of a database each test
makes (and drops): the renderer reads only that table's current state."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
from nats.js.api import StreamConfig
from psycopg import sql
from psycopg.types.json import Json

from nexus_ssot.access.nats_config import render
from nexus_ssot.access.policy import PolicySet, check_policy
from nexus_ssot.access.tokens import TokenRecord, issue
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ops.embedded import EmbeddedNats
from nexus_ssot.ops.nats_authorization import NatsAuthorizer

PREFIX, STREAM, KV_PREFIX = "ssot", "SSOT", "ssot_"
SSOT = str(Path(sys.executable).parent / "ssot")
READ_A = {"rules": [{"effect": "allow", "subjects": ["user:alice"], "actions": ["read"],
                     "namespaces": ["a"]}]}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {timeout} s"
        time.sleep(0.02)


async def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {timeout} s"
        await asyncio.sleep(0.01)


def token_url(server: EmbeddedNats, record: TokenRecord, token: str) -> str:
    return f"nats://{record.id}:{token}@127.0.0.1:{server.url.rsplit(':', 1)[1]}"


class Client:
    """A NATS connection that keeps the errors the server sends it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: nats.NATS | None = None

    async def connect(self, url: str) -> nats.NATS:
        async def keep(error: Exception) -> None:
            self.errors.append(str(error))

        self.nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False,
                                     max_reconnect_attempts=0, error_cb=keep)
        return self.nc

    async def barrier(self) -> None:
        """Return once the server has processed everything sent before. (nats-py's
        ``flush()`` does not promise it: its PING can overtake a SUB still queued.) Our own
        message comes back through the same queue, after what was queued before it."""
        assert self.nc is not None
        inbox = self.nc.new_inbox()
        back: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def arrived(msg: Any) -> None:
            if not back.done():
                back.set_result(None)

        sub = await self.nc.subscribe(inbox, cb=arrived)
        await self.nc.publish(inbox, b"")
        await asyncio.wait_for(back, 15)
        await sub.unsubscribe()

    def refused(self, kind: str, subject: str) -> Callable[[], bool]:
        said = f'permissions violation for {kind} to "{subject}"'.lower()
        return lambda: any(said in e.lower() for e in self.errors)


async def admitted(url: str) -> bool | None:
    """Whether the server lets a connection to ``url`` in (None: it was cut while the
    server reloaded its users; ask again)."""
    try:
        nc = await Client().connect(url)
    except nats.errors.Error as error:
        assert "authorization violation" in str(error).lower(), error
        return False
    except ConnectionResetError:
        return None
    await nc.close()
    return True


def refused_at_connect(url: str) -> bool:
    return asyncio.run(admitted(url)) is False


def let_in(url: str) -> bool:
    return asyncio.run(admitted(url)) is True


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path / "nats") as running:
        yield running


def test_a_token_reads_its_namespace_and_publishes_nothing_into_the_ledger(
        server: EmbeddedNats) -> None:
    policies = PolicySet({"read-a": check_policy(READ_A)})
    alice, alice_token = issue("alice", (), 3600, None, "test")
    bob, bob_token = issue("bob", (), None, None, "test")  # no rule names bob
    assert server.authorize(render(policies, [alice, bob], subject_prefix=PREFIX,
                                   stream=STREAM, kv_bucket_prefix=KV_PREFIX,
                                   service_user=server.service_user, namespaces=["a", "b"]))

    async def scenario() -> None:
        service = await Client().connect(server.url)
        js = service.jetstream()
        await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{PREFIX}.>"]))
        kv = await js.create_key_value(bucket=f"{KV_PREFIX}a", history=1)
        await kv.put("k", b"in a")
        a = Client()
        nc = await a.connect(token_url(server, alice, alice_token))
        received: list[str] = []

        async def keep(msg: Any) -> None:
            received.append(f"{msg.subject} {msg.data.decode()}")

        await nc.subscribe(f"{PREFIX}.a.>", cb=keep)
        await a.barrier()
        ack = await js.publish(f"{PREFIX}.a.x", b"by the service user")  # it may publish
        await js.publish(f"{PREFIX}.b.y", b"not for alice")
        await until(lambda: bool(received), "received")
        assert received == [f"{PREFIX}.a.x by the service user"]

        await nc.subscribe(f"{PREFIX}.b.>", cb=keep)
        await until(a.refused("subscription", f"{PREFIX}.b.>"), "refused b")
        await nc.publish(f"{PREFIX}.a.x", b"forged")
        await until(a.refused("publish", f"{PREFIX}.a.x"), "refused publishing")

        ajs = nc.jetstream(timeout=2)  # the stream, through a consumer filtered to a
        sub = await ajs.pull_subscribe(f"{PREFIX}.a.>", durable="alice-a", stream=STREAM)
        [msg] = await sub.fetch(1, timeout=10)
        assert (msg.subject, msg.metadata.sequence.stream) == (f"{PREFIX}.a.x", ack.seq)
        await msg.ack()
        with pytest.raises(nats.errors.TimeoutError):  # refused: no answer comes
            await ajs.pull_subscribe(f"{PREFIX}.b.>", durable="alice-b", stream=STREAM)
        await until(a.refused("publish", f"$JS.API.CONSUMER.CREATE.{STREAM}.alice-b."
                                         f"{PREFIX}.b.>"), "refused a consumer of b")
        with pytest.raises(nats.errors.TimeoutError):
            await ajs.get_msg(STREAM, seq=ack.seq)  # the stream whole: not for alice

        bucket = await ajs.key_value(f"{KV_PREFIX}a")  # a's KV bucket: read, not write
        assert (await bucket.get("k")).value == b"in a"
        await nc.publish(f"$KV.{KV_PREFIX}a.k", b"forged")
        await until(a.refused("publish", f"$KV.{KV_PREFIX}a.k"), "refused a KV write")
        assert (await kv.get("k")).value == b"in a"

        b = Client()
        bob_nc = await b.connect(token_url(server, bob, bob_token))
        await bob_nc.subscribe(f"{PREFIX}.a.>")
        await until(b.refused("subscription", f"{PREFIX}.a.>"), "refused bob")
        await bob_nc.close()
        await nc.close()
        await service.close()

    asyncio.run(scenario())


def test_a_revoked_token_is_let_in_no_more(server: EmbeddedNats) -> None:
    policies = PolicySet({"read-a": check_policy(READ_A)})
    alice, alice_token = issue("alice", (), None, None, "test")

    def grant(tokens: list[TokenRecord]) -> bool:
        return server.authorize(render(policies, tokens, subject_prefix=PREFIX, stream=STREAM,
                                       kv_bucket_prefix=KV_PREFIX,
                                       service_user=server.service_user))

    assert refused_at_connect(token_url(server, alice, alice_token))
    assert grant([alice])

    async def connected_then_revoked() -> None:
        nc = await Client().connect(token_url(server, alice, alice_token))
        assert grant([])  # revoked: the reload closes its connection
        await until(lambda: nc.is_closed, "disconnected")

    asyncio.run(connected_then_revoked())
    assert refused_at_connect(token_url(server, alice, alice_token))


# --- read from the database -----------------------------------------------------------------


@pytest.fixture
def access_db(server_url: str) -> Iterator[str]:
    """A database of this test's own, migrated, dropped afterwards."""
    name = f"ssot_access_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = psycopg.conninfo.conninfo_to_dict(server_url)
    url = psycopg.conninfo.make_conninfo(**{**{k: str(v) for k, v in parts.items()},
                                            "dbname": name})
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))


def put_entry(url: str, namespace: str, key: str, document: Any, deleted: bool = False) -> None:
    """The current state the ledger would keep after writing (or deleting) the entry."""
    with psycopg.connect(url, autocommit=True) as conn:
        position = conn.execute("SELECT coalesce(max(position), 0) + 1 FROM entries").fetchone()
        assert position is not None
        conn.execute(
            "INSERT INTO entries (namespace, key, version, position, recorded_at, document,"
            " deleted) VALUES (%s, %s, 1, %s, %s, %s, %s) ON CONFLICT (namespace, key) DO"
            " UPDATE SET version = entries.version + 1, position = excluded.position,"
            " document = excluded.document, deleted = excluded.deleted",
            (namespace, key, position[0], datetime.now(UTC), Json(document), deleted))


def users_of(block: str) -> dict[str, dict[str, Any]]:
    match = re.search(r"users = (.*)\n\}\n\Z", block, re.DOTALL)
    assert match, block
    return {u["user"]: u for u in json.loads(match.group(1))}


def test_ssot_access_nats_config_prints_the_users_of_the_database(
        access_db: str, tmp_path: Path) -> None:
    team = {"rules": [{"effect": "allow", "subjects": ["group:team"], "actions": ["read"],
                       "namespaces": ["team-*"]}]}
    put_entry(access_db, "_access", "policies/team", team)
    put_entry(access_db, "_access", "policies/broken", {"rules": "not a list"})
    member, _ = issue("carol", ("team",), None, None, "test")
    revoked, _ = issue("dave", ("team",), None, None, "test")
    put_entry(access_db, "_access", f"tokens/{member.id}", member.document())
    put_entry(access_db, "_access", f"tokens/{revoked.id}", revoked.document(), deleted=True)
    for namespace in ("team-x", "team-y", "other"):
        put_entry(access_db, namespace, "k", {"v": 1})
    password_file = tmp_path / "service.password"
    password_file.write_text("the-service-password\n")
    env = {**os.environ, "SSOT_DATABASE_URL": access_db, "SSOT_NATS_SUBJECT_PREFIX": "ledger",
           "SSOT_NATS_STREAM": "LEDGER"}

    def nats_config(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SSOT, "access", "nats-config", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    done = nats_config()
    assert done.returncode == 0, done.stderr
    assert "policies/broken" in done.stderr  # left out, with a warning
    users = users_of(done.stdout)
    assert list(users) == [member.id]  # the revoked token has no user
    assert users[member.id]["password"] == member.nats_hash
    assert users[member.id]["permissions"]["subscribe"]["allow"] == [
        "_INBOX.>", "ledger.team-x.>", "ledger.team-y.>"]
    assert "$JS.API.CONSUMER.CREATE.LEDGER.*.ledger.team-x.>" in (
        users[member.id]["permissions"]["publish"]["allow"])

    done = nats_config("--namespaces", "team-z", "--service-user", "svc",
                       "--service-password-file", str(password_file))
    assert done.returncode == 0, done.stderr
    users = users_of(done.stdout)
    assert list(users) == ["svc", member.id]
    assert users["svc"]["password"].startswith("$2")
    assert "the-service-password" not in done.stdout
    assert users[member.id]["permissions"]["subscribe"]["allow"] == [
        "_INBOX.>", "ledger.team-z.>"]


def test_ssot_access_nats_config_on_an_unreachable_database_hides_the_password() -> None:
    url = "postgresql://someone:hunter2-secret@127.0.0.1:9/nowhere"
    done = subprocess.run([SSOT, "access", "nats-config"],
                          env={**os.environ, "SSOT_DATABASE_URL": url},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 5, done.stderr
    assert done.stderr.startswith("error: unreachable:")
    assert "hunter2" not in done.stdout + done.stderr


def test_serve_keeps_the_embedded_nats_users_in_line_with_the_tokens(
        access_db: str, server: EmbeddedNats) -> None:
    put_entry(access_db, "_access", "policies/read-a", READ_A)
    alice, alice_token = issue("alice", (), None, None, "test")
    settings = Settings(database_url=access_db, nats_url=server.url,
                        nats_subject_prefix=PREFIX, nats_stream=STREAM)
    users = NatsAuthorizer(settings, server, every=0.05)
    users.start()
    try:
        assert users.reloads == 0  # nothing but the service user yet: no reload
        url = token_url(server, alice, alice_token)
        assert refused_at_connect(url)
        put_entry(access_db, "_access", f"tokens/{alice.id}", alice.document())
        wait_for(lambda: let_in(url), "let in")
        # a reload is counted once the server has taken it: a connection may see it first
        wait_for(lambda: users.reloads >= 1, "the reload counted")
        reloads = users.reloads
        assert reloads == 1
        put_entry(access_db, "_access", f"tokens/{alice.id}", alice.document(), deleted=True)
        wait_for(lambda: refused_at_connect(url), "revoked")
        wait_for(lambda: users.reloads > reloads, "the reload counted")
        assert users.reloads == reloads + 1
    finally:
        users.stop()
