"""Version history of one entry: any past version, and every event with its metadata."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from .sql import ENTRY_JSON, EVENT_JSON

# One version, sought through the primary key (namespace, key, version) in version order.
# Not "version = %s" alone: then the (namespace, key, position) index looks just as cheap to
# the planner whenever its statistics do not show how long this key's history is (a fresh
# table, a key grown since the last ANALYZE), and taking it means filtering every version
# of the key, O(history). Only the primary key gives rows in version order, so this seek
# stays O(log n) whatever the statistics say.
_VERSION = (
    f"SELECT version, event_type, {ENTRY_JSON} FROM entry_history"
    " WHERE namespace = %s AND key = %s AND version >= %s ORDER BY version LIMIT 1"
)


async def entry_version(
    conn: AsyncConnection[tuple[Any, ...]], namespace: str, key: str, version: int
) -> tuple[str, bytes] | None:
    """(event type, entry JSON) of one version; a deleting version has a null document."""
    cur = await conn.execute(_VERSION, (namespace, key, version), prepare=True)
    row = await cur.fetchone()
    return None if row is None or row[0] != version else (row[1], row[2].encode())


_HISTORY_ASC = (
    f"SELECT version, {EVENT_JSON} FROM entry_history"
    " WHERE namespace = %s AND key = %s AND version > %s ORDER BY version LIMIT %s"
)
_HISTORY_DESC = (
    f"SELECT version, {EVENT_JSON} FROM entry_history"
    " WHERE namespace = %s AND key = %s AND version < %s ORDER BY version DESC LIMIT %s"
)


async def history(
    conn: AsyncConnection[tuple[Any, ...]],
    namespace: str,
    key: str,
    *,
    after_version: int | None,
    limit: int,
    descending: bool = False,
) -> list[tuple[int, bytes]]:
    """Events of one entry, oldest first (or newest first), keyset-paginated by version."""
    if descending:
        bound = after_version if after_version is not None else 2**62
        cur = await conn.execute(_HISTORY_DESC, (namespace, key, bound, limit), prepare=True)
    else:
        bound = after_version if after_version is not None else 0
        cur = await conn.execute(_HISTORY_ASC, (namespace, key, bound, limit), prepare=True)
    return [(row[0], row[1].encode()) for row in await cur.fetchall()]
