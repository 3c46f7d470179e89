"""Versioned schema migrations: ``NNNN_name.sql`` files applied once each, in order.

Idempotent and safe to run from several processes at once: the runner holds a
transaction-level advisory lock while it checks and applies, and records each applied
version in ``ssot_schema_migrations`` in the same transaction as its DDL.

A schema that is up to date is only read: a service role that may not change the schema
(``ledger/roles.py``) starts against it, and one that finds migrations pending is told to
run ``ssot migrate`` as the role that owns the schema (``SchemaBehind``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import errors

from .errors import SchemaBehind

#: The advisory lock every change of the schema and its grants holds (arbitrary, fixed).
LOCK_ID = 0x55_0700_0001
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


def pending(conn: psycopg.Connection[Any]) -> list[Migration]:
    """The migrations the database has not applied yet (read only)."""
    row = conn.execute("SELECT to_regclass('ssot_schema_migrations') IS NOT NULL").fetchone()
    done: set[int] = set()
    if row and row[0]:
        done = {v for (v,) in conn.execute("SELECT version FROM ssot_schema_migrations")}
    return [m for m in available() if m.version not in done]


def migrate(conninfo: str) -> list[Migration]:
    """Apply every pending migration; return those applied by this call. Raises
    ``SchemaBehind`` when some are pending and this role may not apply them."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        todo = pending(conn)
        if not todo:
            return []
        try:
            return _apply(conn)
        # no right to create (or, without USAGE on the schema, nowhere to create) tables
        except (errors.InsufficientPrivilege, errors.InvalidSchemaName) as e:
            first = todo[0]
            raise SchemaBehind(
                f"the database lacks {len(todo)} schema migration(s), from "
                f"{first.version:04d}_{first.name}, and this role may not apply them "
                f"({str(e).strip()}): run `ssot migrate` as the role that owns the schema"
            ) from e


def _apply(conn: psycopg.Connection[Any]) -> list[Migration]:
    applied: list[Migration] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ssot_schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
    for migration in available():
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
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
