"""Schemas as recorded: a namespace's schema or a shared definition, now, at a version or
at a log position, and the shared definitions a schema is compiled with — read from the
version history of the system namespace ``_schemas``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection

from nexus_ssot.ledger.addressing import SCHEMAS_NAMESPACE
from nexus_ssot.ledger.namespace_settings import SETTINGS_NAMESPACE, asserts_formats
from nexus_ssot.ledger.schemas.compiler import CompiledSchema, compile_schema
from nexus_ssot.ledger.schemas.records import (
    DEFINITION_PREFIX,
    SchemaRecord,
    namespace_key,
    record_from,
)
from nexus_ssot.ledger.schemas.references import pin_definitions

_COLUMNS = ("SELECT version, position, recorded_at, event_type, actor, reason,"
            " document::text FROM entry_history WHERE namespace = %s AND key = %s")


@dataclass(frozen=True)
class RecordedSchema:
    """One version of a schema entry: its record (None where the version removed it)."""

    key: str
    version: int
    position: int
    recorded_at: datetime
    actor: str
    reason: str | None
    record: SchemaRecord | None

    def json(self) -> dict[str, Any]:
        record = self.record
        return {
            "version": self.version, "position": self.position,
            "recorded_at": self.recorded_at, "actor": self.actor, "reason": self.reason,
            "schema": record.schema if record is not None else None,
            "definitions": record.definitions if record is not None else {},
            "allow_existing_violations": (record.allow_existing_violations
                                          if record is not None else False),
            "removed": record is None,
        }


async def recorded(conn: AsyncConnection[Any], key: str, *, version: int | None = None,
                   position: int | None = None) -> RecordedSchema | None:
    """The schema entry ``key`` at ``version``, or as of ``position``, or now (None: it
    had no version then)."""
    args: tuple[int, ...]
    if version is not None:
        sql, args = _COLUMNS + " AND version = %s", (version,)
    elif position is not None:
        sql, args = _COLUMNS + " AND position <= %s ORDER BY position DESC LIMIT 1", (position,)
    else:
        sql, args = _COLUMNS + " ORDER BY version DESC LIMIT 1", ()
    cur = await conn.execute(sql, (SCHEMAS_NAMESPACE, key, *args))
    row = await cur.fetchone()
    if row is None:
        return None
    v, pos, at, event_type, actor, reason, document = row
    record = (None if event_type == "entry.deleted" or document is None
              else record_from(orjson.loads(document), v))
    return RecordedSchema(key, v, pos, at, actor, reason, record)


class Definitions:
    """Every version of every shared definition (a small table), read once: what pins a
    new schema's references and compiles a recorded one."""

    def __init__(self, rows: dict[tuple[str, int], SchemaRecord]) -> None:
        self._rows = rows
        self._latest: dict[str, int] = {}
        for name, version in rows:
            self._latest[name] = max(version, self._latest.get(name, 0))

    @classmethod
    async def read(cls, conn: AsyncConnection[Any]) -> Definitions:
        cur = await conn.execute(
            "SELECT key, version, document::text FROM entry_history WHERE namespace = %s"
            " AND starts_with(key, %s) AND event_type <> 'entry.deleted'",
            (SCHEMAS_NAMESPACE, DEFINITION_PREFIX))
        rows: dict[tuple[str, int], SchemaRecord] = {}
        for key, version, document in await cur.fetchall():
            record = record_from(orjson.loads(document), version)
            if record is not None:
                rows[(key[len(DEFINITION_PREFIX):], version)] = record
        return cls(rows)

    def pins(self, schema: Any) -> dict[str, int]:
        """The definition versions a new ``schema`` is pinned to (raises InvalidSchema)."""
        def pins_of(name: str, version: int) -> dict[str, int] | None:
            found = self._rows.get((name, version))
            return found.definitions if found is not None else None

        pins: dict[str, int] = pin_definitions(schema, self._latest.get, pins_of)
        return pins

    def compile(self, schema: Any, pins: dict[str, int], *,
                assert_formats: bool) -> CompiledSchema:
        return compile_schema(schema, {name: self._rows[(name, version)].schema
                                       for name, version in pins.items()},
                              assert_formats=assert_formats)


async def format_asserts(conn: AsyncConnection[Any], namespace: str,
                         position: int | None = None) -> bool:
    """Whether ``format`` asserts in ``namespace``'s schema (its ``schema_format``), now
    or as of ``position``."""
    if position is None:
        cur = await conn.execute("SELECT document::text FROM entries WHERE namespace = %s"
                                 " AND key = %s", (SETTINGS_NAMESPACE, namespace))
    else:
        cur = await conn.execute(
            "SELECT document::text FROM entry_history WHERE namespace = %s AND key = %s"
            " AND position <= %s ORDER BY position DESC LIMIT 1",
            (SETTINGS_NAMESPACE, namespace, position))
    row = await cur.fetchone()
    settings = orjson.loads(row[0]) if row is not None and row[0] is not None else None
    return isinstance(settings, dict) and asserts_formats(settings)


async def current_schema(conn: AsyncConnection[Any], namespace: str
                         ) -> tuple[int, CompiledSchema | None]:
    """The version of ``namespace``'s schema entry now (0: never set) and the schema
    compiled (None: it has none)."""
    found = await recorded(conn, namespace_key(namespace))
    if found is None or found.record is None:
        return (found.version if found is not None else 0), None
    definitions = await Definitions.read(conn)
    return found.version, definitions.compile(
        found.record.schema, found.record.definitions,
        assert_formats=await format_asserts(conn, namespace))
