"""A namespace's current entries checked against a schema: how many conform, and the
violating keys with their violations (a page of them, in key order). Read in one
snapshot, so the report is exact as of the position it names even while writers change
the namespace; validated in chunks off the event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg import AsyncConnection

from nexus_ssot.ledger.schemas.compiler import CompiledSchema

#: Entries read and validated per chunk.
CHUNK = 2000
#: Keys of documents valid under the old schema but not the new one, listed at most.
MAX_COUNTEREXAMPLES = 10


@dataclass
class DataReport:
    """The check of a namespace's live entries against a schema, as of ``position``."""

    position: int = 0
    entries: int = 0
    conforming: int = 0
    #: A page of violating keys after the cursor: {key, violations}, one more than asked
    #: when there are more.
    items: list[dict[str, Any]] = field(default_factory=list)
    #: Against the previous schema: entries valid under it, and those of them the new
    #: schema refuses (their keys, a few).
    valid_before: int = 0
    broken: list[str] = field(default_factory=list)
    broken_count: int = 0

    @property
    def violating(self) -> int:
        return self.entries - self.conforming


def _check(rows: list[tuple[str, str]], new: CompiledSchema, old: CompiledSchema | None,
           after: str, room: int, report: DataReport) -> None:
    for key, text in rows:
        document = orjson.loads(text)
        report.entries += 1
        ok = new.conforms(document)
        if ok:
            report.conforming += 1
        elif key > after and len(report.items) < room:
            report.items.append({"key": key, "violations": new.violations(document)})
        if old is not None and old.conforms(document):
            report.valid_before += 1
            if not ok:
                report.broken_count += 1
                if len(report.broken) < MAX_COUNTEREXAMPLES:
                    report.broken.append(key)


async def check_entries(conn: AsyncConnection[Any], namespace: str, new: CompiledSchema, *,
                        old: CompiledSchema | None = None, after: str = "",
                        limit: int = 100, since: int = 0) -> DataReport:
    """Check the live entries of ``namespace`` (those changed after position ``since``)
    against ``new`` (and, for compatibility, ``old``), listing up to ``limit`` violating
    keys after ``after`` (and one more when there are more)."""
    report = DataReport()
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur = await conn.execute("SELECT coalesce(max(position), 0) FROM entry_history"
                                 " WHERE namespace = %s", (namespace,))
        row = await cur.fetchone()
        report.position = int(row[0]) if row else 0
        async with conn.cursor(name="schema_check") as entries:
            await entries.execute(
                "SELECT key, document::text FROM entries WHERE namespace = %s"
                " AND NOT deleted AND position > %s ORDER BY key", (namespace, since))
            while rows := await entries.fetchmany(CHUNK):
                await asyncio.to_thread(_check, rows, new, old, after, limit + 1, report)
    return report
