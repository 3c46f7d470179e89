"""What the `ssot verify` tests share: one log seeded once per test module through the
ledger's writer and digested (signed, published on a NATS stream of the module's own, whose
messages become the ``--digests`` file), a copy of it per test, and a superuser's tampering.

Every test tampers with a database of its own: a clone (CREATE DATABASE … TEMPLATE) of the
seeded log. The append-only triggers are disabled for the tampering only, as a superuser
would, and put back; the clone is dropped afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import psycopg
from psycopg import sql

from nexus_ssot.integrity.digests import Digester, Signer
from nexus_ssot.integrity.verify import (
    Options,
    load_public_key,
    public_keys,
    read_published_digests,
    verify,
)
from nexus_ssot.ledger.commands import Context, Delete, MergePatch, Put, Restore
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.writer import GroupCommitWriter
from nexus_ssot.ops.verify import PROBLEMS_SHOWN

SSOT = str(Path(sys.executable).parent / "ssot")
Conn = psycopg.Connection[tuple[Any, ...]]
Address = tuple[str, str, int]  # namespace, key, version

# --- the seeded log ---------------------------------------------------------------------


def with_db(url: str, name: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(url)
    parts["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


def context(reason: str | None = None, auth: dict[str, Any] | None = None) -> Context:
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


def seed(url: str) -> None:
    app = open_application(url, pool_size=1)
    writer = GroupCommitWriter(app, lambda _ns: Limits())
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for step in SEED:
                if step == "gap":
                    conn.execute("SELECT nextval('ssot_events_notification_id_seq')")
                    continue
                for future in writer.write_batch([
                        (c, context("seed", OPS_AUTH if c.namespace == "ops" else None), None)
                        for c in step]):
                    future.result()
    finally:
        app.close()


def digest_log(url: str, nats_url: str, stream: str, prefix: str, key: Path) -> None:
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


def published_digests(nats_url: str, stream: str) -> list[bytes]:
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


def delete_streams(nats_url: str, names: list[str]) -> None:
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


def verified(url: str, *, key: Path | None = None, digests: Path | None = None
             ) -> dict[str, Any]:
    """The report ``ssot verify --json`` prints for ``url`` (``--public-key key``,
    ``--digests digests``), from the same verifier run in this process: for the tests of
    what it finds. The command itself (its options, exit codes, output, checkpoints) is
    tested as a process (``ssot_verify``, test_runs.py): each of its runs costs ~0.4 s
    of CPU more, importing what the verifier needs, than the verification of this log."""
    options = Options(published=tuple(read_published_digests(digests) if digests else ()),
                      keys=public_keys([load_public_key(key)] if key else []))
    return verify(url, options).as_dict(PROBLEMS_SHOWN)


def cli_first_problem(url: str, seeded: Seeded, *args: str) -> dict[str, Any]:
    """The first problem ``ssot verify --json ARGS`` reports, run as a process that exits
    with 1."""
    done, report = ssot_verify(url, *args, key=seeded.key)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert report is not None and report["ok"] is False
    first: dict[str, Any] = report["first_problem"]
    return first


def first_problem(url: str, seeded: Seeded, *, digests: Path | None = None
                  ) -> dict[str, Any]:
    report = verified(url, key=seeded.key, digests=digests)
    assert report["ok"] is False, report
    first: dict[str, Any] = report["first_problem"]
    return first


def kinds(report: dict[str, Any]) -> set[str]:
    return {p["kind"] for p in report["problems"]}

def state_at(conn: Conn, position: int) -> bytes:
    row = conn.execute("SELECT state FROM ssot_events WHERE notification_id = %s",
                       (position,)).fetchone()
    assert row is not None
    return bytes(row[0])


def swap_events(conn: Conn, p: int, q: int) -> None:
    conn.execute("UPDATE ssot_events SET notification_id = -1 WHERE notification_id = %s",
                 (p,))
    conn.execute("UPDATE ssot_events SET notification_id = %s WHERE notification_id = %s",
                 (p, q))
    conn.execute("UPDATE ssot_events SET notification_id = %s WHERE notification_id = -1",
                 (q,))
