"""Versioned schema migrations: ``NNNN_name.sql`` files applied once each, in order.

Idempotent and safe to run from several processes at once: the runner holds a
transaction-level advisory lock while it checks and applies, and records each applied
version in ``ssot_schema_migrations`` in the same transaction as its DDL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

_LOCK_ID = 0x55_0700_0001  # arbitrary, fixed: "ssot migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    folder = resources.files("nexus_ssot.ledger.migrations")
    found = []
    for item in folder.iterdir():
        m = _FILE.match(item.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), item.read_text("utf-8")))
    return sorted(found, key=lambda mig: mig.version)


def migrate(conninfo: str) -> list[Migration]:
    """Apply every pending migration; return those applied by this call."""
    applied: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS ssot_schema_migrations ("
                " version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for migration in available():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                done = conn.execute(
                    "SELECT 1 FROM ssot_schema_migrations WHERE version = %s",
                    (migration.version,),
                ).fetchone()
                if done:
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO ssot_schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration)
    return applied
