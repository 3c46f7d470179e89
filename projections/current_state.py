"""Current state: one entry now, a namespace's entries by key, and the namespaces."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, AsyncCursor

from nexus_ssot.ledger.namespace_settings import SETTINGS_NAMESPACE

from .sql import ENTRY_JSON, entry_json


@dataclass(frozen=True)
class CurrentEntry:
    version: int
    deleted: bool
    body: bytes  # the entry JSON (meaningless when deleted)


#: One entry's current state: its version, whether deleted, its entry JSON.
GET = f"SELECT version, deleted, {ENTRY_JSON} FROM entries WHERE namespace = %s AND key = %s"


async def current_entry(
    conn: AsyncConnection[tuple[Any, ...]] | AsyncCursor[Any], namespace: str, key: str
) -> CurrentEntry | None:
    """The entry's current state (None: never written), read through ``conn`` (a
    connection, or a cursor to use again)."""
    cur = await conn.execute(GET, (namespace, key), prepare=True)
    row = await cur.fetchone()
    if row is None:
        return None
    return CurrentEntry(version=row[0], deleted=row[1], body=row[2].encode())


def entry_of_text(row: tuple[bytes | None, ...], encoding: str) -> CurrentEntry:
    """The entry of a row of ``GET`` as the server's text in ``encoding`` (the entry JSON
    passed on as sent when that is UTF-8)."""
    version, deleted, body = row
    if version is None or deleted is None or body is None:
        raise ValueError(f"a row of entries with a null column: {row!r}")
    return CurrentEntry(version=int(version), deleted=deleted == b"t",
                        body=body if encoding == "utf-8" else body.decode(encoding).encode())


_GET_MANY = (
    f"SELECT q.i, e.version, e.deleted, {entry_json('e')}"
    " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS q(namespace, key, i)"
    " JOIN entries e ON e.namespace = q.namespace AND e.key = q.key"
)


async def current_entries(
    conn: AsyncConnection[tuple[Any, ...]] | AsyncCursor[Any], addresses: list[tuple[str, str]]
) -> list[CurrentEntry | None]:
    """``current_entry`` of each (namespace, key) of ``addresses``, in one statement."""
    if len(addresses) == 1:
        return [await current_entry(conn, *addresses[0])]
    cur = await conn.execute(_GET_MANY, ([a[0] for a in addresses], [a[1] for a in addresses]),
                             prepare=True)
    found: list[CurrentEntry | None] = [None] * len(addresses)
    for i, version, deleted, body in await cur.fetchall():
        found[i - 1] = CurrentEntry(version=version, deleted=deleted, body=body.encode())
    return found


_LIST = (
    f"SELECT key, {ENTRY_JSON} FROM entries"
    " WHERE namespace = %s AND key > %s AND key >= %s AND key < %s AND NOT deleted"
    " AND starts_with(key, %s) ORDER BY key LIMIT %s"
)

#: Above every key with a given prefix, byte-wise (keys sort with COLLATE "C").
PAST_PREFIX = "\U0010ffff"


async def list_entries(
    conn: AsyncConnection[tuple[Any, ...]], namespace: str, *, prefix: str, after: str, limit: int
) -> list[tuple[str, bytes]]:
    """Live entries of a namespace in key order, keyset-paginated (``after`` a key); the
    prefix is an index range."""
    params = (namespace, after, prefix, prefix + PAST_PREFIX, prefix, limit)
    cur = await conn.execute(_LIST, params, prepare=True)
    return [(row[0], row[1].encode()) for row in await cur.fetchall()]


# The namespaces with entries (counted) and those with settings only (no counts), each
# side cut at the page size before they are merged: a namespace with entries that the first
# side cut off has a page of smaller names before it, so the merged page is exact.
_NAMESPACES = (
    "SELECT n.*, (SELECT recorded_at FROM ssot_events WHERE notification_id = n.last)"
    " FROM ("
    " SELECT namespace, sum(entries)::bigint, sum(deleted)::bigint, max(last_position) AS last"
    " FROM ("
    "  (SELECT namespace, count(*) FILTER (WHERE NOT deleted) AS entries,"
    "   count(*) FILTER (WHERE deleted) AS deleted, max(position) AS last_position"
    "   FROM entries WHERE namespace > %(after)s AND namespace NOT LIKE %(system)s"
    "   GROUP BY namespace ORDER BY namespace LIMIT %(limit)s)"
    "  UNION ALL"
    "  (SELECT key COLLATE \"default\", 0, 0, NULL FROM entries"
    "   WHERE namespace = %(settings)s AND (key COLLATE \"default\") > %(after)s"
    "   ORDER BY 1 LIMIT %(limit)s)"
    " ) n GROUP BY namespace ORDER BY namespace LIMIT %(limit)s"
    ") n ORDER BY namespace"
)


#: System namespaces (``_namespaces``, ``_access``) are no client's namespaces.
_SYSTEM = "\\_%"


@dataclass(frozen=True)
class NamespaceCount:
    namespace: str
    entries: int
    deleted: int
    last_position: int | None  # None: settings, no entries yet
    last_recorded_at: datetime | None  # when that last change was recorded


async def list_namespaces(
    conn: AsyncConnection[tuple[Any, ...]], *, after: str, limit: int
) -> list[NamespaceCount]:
    """The namespaces after ``after`` in name order, with entries or settings (those with
    settings only count no entries)."""
    params = {"after": after, "system": _SYSTEM, "limit": limit,
              "settings": SETTINGS_NAMESPACE}
    cur = await conn.execute(_NAMESPACES, params, prepare=True)
    return [NamespaceCount(*row) for row in await cur.fetchall()]


_NAMESPACE = (
    "SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE deleted),"
    " max(position) FROM entries WHERE namespace = %s"
)


async def namespace_counts(
    conn: AsyncConnection[tuple[Any, ...]], namespace: str
) -> tuple[int, int, int | None]:
    """(live entries, deleted entries, position of its last change) of one namespace."""
    cur = await conn.execute(_NAMESPACE, (namespace,), prepare=True)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), row[2]


_DOCUMENTS = ("SELECT key, document::text, deleted FROM entries WHERE namespace = %s"
              " ORDER BY key")


async def namespace_documents(
    conn: AsyncConnection[tuple[Any, ...]], namespace: str
) -> list[tuple[str, str | None, bool]]:
    """Every entry of a (small, system) namespace: key, document as JSON text, deleted."""
    cur = await conn.execute(_DOCUMENTS, (namespace,), prepare=True)
    return [(row[0], row[1], row[2]) for row in await cur.fetchall()]
