"""A rebuild's shadow tables fold the log without their secondary indexes, which are built
once, after the fold, from the live tables' definitions.

A secondary index is one that is neither unique nor an exclusion constraint's: no fold
statement needs it (an upsert's ``ON CONFLICT`` needs its unique index, which stays), and
keeping it up to date row by row costs far more than building it over the finished table
(``entries``' trigram index took every upsert of a rebuild through GIN's pending list;
``entry_history`` has five such indexes). Indexes are matched by definition, without
their names or their table's, as the swap renames them.

Only where the live table exists: its indexes are what ``build`` makes again. An
interrupted rebuild resumes on a shadow that is already without them.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from .runtime import Tables, relation_exists

Conn = psycopg.AsyncConnection[Any]

#: A table's indexes by definition (without the index's and the table's name).
INDEXES = (
    "SELECT c.relname, regexp_replace(pg_get_indexdef(i.indexrelid),"
    r" '^CREATE (UNIQUE )?INDEX \S+ ON (ONLY )?\S+ ', 'CREATE \1INDEX ON \2')"
    " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    " WHERE i.indrelid = to_regclass(%s) ORDER BY c.relname"
)
#: A table's constraints not backed by an index (those follow their index), by kind and
#: definition.
CONSTRAINTS = (
    "SELECT conname, contype::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE conrelid = to_regclass(%s) AND contype NOT IN ('p', 'u', 'x') ORDER BY conname"
)
_SECONDARY = (
    "SELECT n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE i.indrelid = to_regclass(%s) AND NOT i.indisunique AND NOT i.indisexclusion"
    " ORDER BY c.relname"
)
_HEAD = re.compile(r"^(CREATE (?:UNIQUE )?INDEX ON (?:ONLY )?)")


async def by_definition(conn: Conn, query: str, table: str) -> dict[str, list[str]]:
    """Names by definition, of ``INDEXES`` or ``CONSTRAINTS`` of ``table``."""
    cur = await conn.execute(query, (table,))
    found: dict[str, list[str]] = {}
    for name, definition in await cur.fetchall():
        found.setdefault(definition, []).append(name)
    return found


async def defer(conn: Conn, shadow: Tables, live: Tables) -> list[str]:
    """Drop the secondary indexes of each shadow table whose live table exists (``build``
    makes them again); the names dropped."""
    dropped = []
    for name in shadow:
        if not await relation_exists(conn, live[name]):
            continue
        cur = await conn.execute(_SECONDARY, (shadow[name],))
        for schema, index in await cur.fetchall():
            await conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, index)))
            dropped.append(index)
    return dropped


async def build(conn: Conn, shadow: Tables, live: Tables) -> list[str]:
    """Create on each shadow table the indexes of its live table it does not have (as many
    of each definition as the live table has); the definitions made."""
    made = []
    for name in shadow:
        if not await relation_exists(conn, live[name]):
            continue
        have = await by_definition(conn, INDEXES, shadow[name])
        for definition, names in (await by_definition(conn, INDEXES, live[name])).items():
            head = _HEAD.match(definition)
            assert head is not None, definition  # (INDEXES makes every definition so)
            ddl = f"{head.group(1)}{shadow[name]} {definition[head.end():]}"
            for _ in range(len(names) - len(have.get(definition, []))):
                await conn.execute(ddl.encode())
                made.append(definition)
    return made
