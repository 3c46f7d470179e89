"""The log as a feed: CloudEvents after a position, optionally of one namespace or key."""

from __future__ import annotations

from typing import Any, NamedTuple

from psycopg import AsyncConnection

from nexus_ssot.ledger.cloudevents import COLUMNS, FIELDS, SOURCE, cloudevent

_AFTER = (
    f"SELECT {COLUMNS} FROM {SOURCE}"
    " WHERE position > %s AND (%s::text IS NULL OR namespace = %s)"
    " AND (%s::text IS NULL OR key = %s)"
    " ORDER BY position LIMIT %s"
)


async def events_after(
    conn: AsyncConnection[tuple[Any, ...]],
    after: int,
    *,
    limit: int,
    namespace: str | None = None,
    key: str | None = None,
) -> list[FeedEvent]:
    """The events after ``after``, in log order."""
    cur = await conn.execute(_AFTER, (after, namespace, namespace, key, key, limit),
                             prepare=True)
    rows = [dict(zip(FIELDS, row, strict=True)) for row in await cur.fetchall()]
    return [FeedEvent(row["position"], row["namespace"], row["key"], cloudevent(row))
            for row in rows]


class FeedEvent(NamedTuple):
    position: int
    namespace: str
    key: str
    body: bytes  # the CloudEvent JSON


async def head_position(conn: AsyncConnection[tuple[Any, ...]]) -> int:
    cur = await conn.execute("SELECT coalesce(max(position), 0) FROM entry_history")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
