"""The audit trail: events with their metadata, filtered, in log order — a page at a time
or streamed whole (server-side cursor, never all in memory)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from .sql import EVENT_JSON, RECORDED_AT

#: Columns of the CSV export, in order (``patch`` and ``auth`` as JSON text; ``auth`` is
#: null for events from before it was recorded).
CSV_COLUMNS = ("position", "recorded_at", "namespace", "key", "version", "event_type",
               "actor", "reason", "correlation_id", "causation_id", "event_id", "patch",
               "auth")


@dataclass(frozen=True)
class AuditFilter:
    after: int = 0  # position
    until: int | None = None  # position
    namespace: str | None = None
    key_prefix: str | None = None
    actor: str | None = None
    correlation_id: str | None = None
    event_type: str | None = None

    def where(self) -> tuple[str, list[Any], str]:
        """(WHERE clause, its parameters, ORDER BY) of the filter.

        With an equality filter on an indexed column, the query orders by that column and
        position and spells the equality as a range: the planner then walks that column's
        ``(column, position)`` index from the cursor's position instead of the position
        index, whose cost grows with every event before the first match."""
        clauses: list[str] = ["position > %s"]
        params: list[Any] = [self.after]
        lead = next((c for c, v in (("correlation_id", self.correlation_id),
                                    ("actor", self.actor), ("namespace", self.namespace))
                     if v is not None), None)
        for column, value in (("position <=", self.until), ("namespace =", self.namespace),
                              ("actor =", self.actor),
                              ("correlation_id =", self.correlation_id),
                              ("event_type =", self.event_type)):
            if value is None:
                continue
            if lead is not None and column == f"{lead} =":
                clauses.append(f"{lead} >= %s AND {lead} <= %s")
                params += [value, value]
            else:
                clauses.append(f"{column} %s")
                params.append(value)
        if self.key_prefix:
            clauses.append("starts_with(key, %s)")
            params.append(self.key_prefix)
        order = f"{lead}, position" if lead else "position"
        return " AND ".join(clauses), params, order


async def audit_page(conn: AsyncConnection[tuple[Any, ...]], where: AuditFilter,
                     limit: int) -> list[tuple[int, str, str, bytes]]:
    """(position, namespace, key, event JSON) of the matching events, in order."""
    clause, params, order = where.where()
    cur = await conn.execute(
        f"SELECT position, namespace, key, {EVENT_JSON} FROM entry_history WHERE {clause}"
        f" ORDER BY {order} LIMIT %s", [*params, limit])
    return [(row[0], row[1], row[2], row[3].encode()) for row in await cur.fetchall()]


async def audit_rows(conn: AsyncConnection[tuple[Any, ...]], where: AuditFilter,
                     ) -> AsyncIterator[dict[str, Any]]:
    """Every matching event, streamed through a server-side cursor (``patch`` and
    ``auth`` as JSON text, ``auth`` None when the event has none)."""
    clause, params, order = where.where()
    columns = ", ".join(
        f"{RECORDED_AT} AS recorded_at" if c == "recorded_at"
        else f"{c}::text AS {c}" if c in ("patch", "auth") else c for c in CSV_COLUMNS)
    async with conn.transaction(), conn.cursor(name="ssot_audit_export") as cur:
        await cur.execute(f"SELECT {columns} FROM entry_history WHERE {clause}"
                          f" ORDER BY {order}", params)
        async for row in cur:
            yield dict(zip(CSV_COLUMNS, row, strict=True))
