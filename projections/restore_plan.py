"""Point-in-time recovery: what it takes to make a namespace (or a key prefix) equal to
its state at a past position, key by key, computed from the inline views.

Every key ever written in the namespace has a current-state row; for each, its last event
at or before the cut comes from the version history's primary key. A key needs:

- ``revert``   live at the cut and live now, with a different document;
- ``recreate`` live at the cut, deleted now;
- ``delete``   absent or deleted at the cut, live now.

Keys whose state at the cut and now agree need nothing and are not listed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection

_STATES = (
    "SELECT e.key, e.version, e.deleted, e.document::text,"
    " h.version, h.event_type, h.document::text"
    " FROM entries e LEFT JOIN LATERAL ("
    "   SELECT version, event_type, document FROM entry_history h"
    "   WHERE h.namespace = e.namespace AND h.key = (e.key COLLATE \"default\")"
    "   AND h.position <= %s ORDER BY h.position DESC LIMIT 1) h ON true"
    " WHERE e.namespace = %s AND e.key >= %s AND e.key < %s AND starts_with(e.key, %s)"
    " ORDER BY e.key"
)


@dataclass(frozen=True)
class Step:
    """One key's part of a restore: ``action`` turns version ``from_version`` (now) into
    the content of ``to_version`` (at the cut; None for a delete)."""

    key: str
    action: str
    from_version: int
    to_version: int | None
    current: Any
    target: Any


def _canonical(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


async def plan(
    conn: AsyncConnection[tuple[Any, ...]], namespace: str, position: int, *, prefix: str = ""
) -> AsyncIterator[Step]:
    """The steps that make ``namespace`` (keys starting with ``prefix``) equal to its state
    at ``position``, in key order, read through a server-side cursor in one snapshot."""
    params = (position, namespace, prefix, prefix + "\U0010ffff", prefix)
    async with conn.transaction(), conn.cursor(name="ssot_restore_plan") as cursor:
        await cursor.execute(_STATES, params)
        async for row in cursor:
            key, version, deleted, document, cut_version, cut_type, cut_document = row
            live_at_cut = cut_version is not None and cut_type != "entry.deleted"
            current = None if deleted or document is None else orjson.loads(document)
            target = orjson.loads(cut_document) if live_at_cut and cut_document else None
            if live_at_cut:
                if deleted:
                    yield Step(key, "recreate", version, cut_version, None, target)
                elif _canonical(current) != _canonical(target):
                    yield Step(key, "revert", version, cut_version, current, target)
            elif not deleted:
                yield Step(key, "delete", version, None, current, None)
