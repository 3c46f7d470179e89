"""When a namespace came to exist: the global position of its first event.

A namespace exists from its first entry's first event or its first settings, whichever
came first, and never stops existing (deleting every entry leaves their history). So
"does it exist now?" is "has it a first position?", and "did it exist at position P?" is
"is that position at most P?" — two index lookups (the history's ``(namespace, position)``
index, and the settings entry's version 1 by primary key), whatever the namespace holds.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from nexus_ssot.ledger.namespace_settings import SETTINGS_NAMESPACE

_FIRST_POSITION = (
    "SELECT least("
    " (SELECT position FROM entry_history WHERE namespace = %(ns)s"
    "  ORDER BY position LIMIT 1),"
    " (SELECT position FROM entry_history WHERE namespace = %(settings)s AND key = %(ns)s"
    "  AND version = 1))"
)


async def first_position(conn: AsyncConnection[tuple[Any, ...]], namespace: str) -> int | None:
    """The position of the namespace's first event (an entry's or its settings'); None when
    it never had one: it does not exist."""
    cur = await conn.execute(_FIRST_POSITION, {"ns": namespace, "settings": SETTINGS_NAMESPACE},
                             prepare=True)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])
