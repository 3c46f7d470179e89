"""The bench's PostgreSQL: connection strings of the server and the run's database, the
postmaster (whose CPU the steps account for when it runs on this machine), and the bench's
own connection to the run's database, which counts what the steps wrote.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from .measuring import process_table

Conninfo = dict[str, str]


def conninfo(url: str) -> Conninfo:
    parts = psycopg.conninfo.conninfo_to_dict(url)
    return {k: str(v) for k, v in parts.items() if v is not None}


def with_database(url: str, name: str) -> str:
    parts = conninfo(url)
    parts["dbname"] = name
    return psycopg.conninfo.make_conninfo(**parts)


@contextlib.contextmanager
def created(server_url: str, names: Sequence[str]) -> Iterator[list[str]]:
    """Databases of these ``names`` made on the server, their URLs; dropped at the end."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield [with_database(server_url, name) for name in names]
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            for name in names:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                              .format(sql.Identifier(name)))


def pg_url(parts: Conninfo) -> str:
    """A postgresql:// URL for pgbench (which takes a URL or conninfo as its database)."""
    return psycopg.conninfo.make_conninfo(**parts)


def is_local(parts: Conninfo) -> bool:
    host = parts.get("host", "")
    return host in ("", "127.0.0.1", "localhost", "::1") or host.startswith("/")


def describe_server(parts: Conninfo) -> str:
    return f"{parts.get('host', 'local socket')}:{parts.get('port', '5432')}"


def postmaster_of(conn: psycopg.Connection[tuple[Any, ...]], parts: Conninfo) -> int | None:
    """The pid of the PostgreSQL postmaster when it runs on this machine (the parent of our
    backend), else None."""
    if not is_local(parts):
        return None
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    table = process_table()
    backend = table.get(int(row[0])) if row else None
    if backend is None or not backend.comm.startswith("postgres"):
        return None
    parent = table.get(backend.ppid)
    return backend.ppid if parent is not None and parent.comm.startswith("postgres") else None


class Monitor:
    """The bench's own connection to the run's database (autocommit)."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.conn = conn

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return self.conn.execute(statement, params).fetchone()

    def head(self) -> int:
        row = self.query("SELECT coalesce(max(notification_id), 0) FROM ssot_events")
        return int(row[0]) if row else 0

    def batches(self, after: int, upto: int) -> tuple[int, int]:
        """Events recorded in (after, upto] and the distinct transactions that inserted them
        (rows inserted together share their xmin)."""
        row = self.query(
            "SELECT count(*), count(DISTINCT xmin::text) FROM ssot_events"
            " WHERE notification_id > %s AND notification_id <= %s", (after, upto))
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def close(self) -> None:
        self.conn.close()
