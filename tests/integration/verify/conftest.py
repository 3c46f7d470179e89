"""The fixtures of the `ssot verify` tests: one log seeded once per test module (kit.py
seeds and digests it) and a copy of it for each test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

from nexus_ssot.integrity.digests import digest_stream
from nexus_ssot.ledger.migrate import migrate
from tests.integration.verify.kit import (
    Seeded,
    delete_streams,
    digest_log,
    published_digests,
    seed,
    with_db,
)


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
    url = with_db(server_url, name)
    try:
        migrate(url)
        seed(url)
        digest_log(url, nats_url, stream, prefix, key)
        published = folder / "published.ndjson"
        lines = published_digests(nats_url, digest_stream(stream))
        published.write_bytes(b"\n".join(lines) + b"\n")
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
        delete_streams(nats_url, [stream, digest_stream(stream)])
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
        yield with_db(seeded.server_url, name)
    finally:
        with psycopg.connect(seeded.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
