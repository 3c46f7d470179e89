"""A database laid out as docs/production.md asks: a migration role that owns the database
and its schema, and a service role with no right of its own on either (both made with
unique names for one test module, and dropped with the database afterwards)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class LedgerRoles:
    owner: str
    service: str
    owner_url: str
    service_url: str


def _with(url: str, **changes: str) -> str:
    parts = {**psycopg.conninfo.conninfo_to_dict(url), **changes}
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


@contextmanager
def ledger_roles(server_url: str) -> Iterator[LedgerRoles]:
    """A fresh database owned by a fresh migration role, and a fresh service role."""
    tag = secrets.token_hex(4)
    owner, service, dbname = f"ssot_t{tag}_owner", f"ssot_t{tag}_service", f"ssot_test_{tag}"
    owner_pw, service_pw = secrets.token_hex(16), secrets.token_hex(16)
    with psycopg.connect(server_url, autocommit=True) as conn:
        for role, password in ((owner, owner_pw), (service, service_pw)):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(dbname), sql.Identifier(owner)))
    try:
        with psycopg.connect(_with(server_url, dbname=dbname), autocommit=True) as conn:
            # as PostgreSQL 15 has it, whatever the server's version: nobody but the owner
            # creates anything in the schema
            conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(
                sql.Identifier(owner)))
            conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(dbname)))
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(service)))
        yield LedgerRoles(owner, service,
                          _with(server_url, user=owner, password=owner_pw, dbname=dbname),
                          _with(server_url, user=service, password=service_pw, dbname=dbname))
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(dbname)))
            for role in (owner, service):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
