"""Least privilege in the database: what the service's role may do to the ledger's schema.

Two roles, as docs/production.md describes them. The *migration role* owns the schema: it
runs ``ssot migrate`` (and the operator commands that rebuild or restore tables, ``ssot
replay`` and ``ssot import``). The *service role* runs ``serve``, ``broadcast``,
``project``, ``digest`` and ``export``, and gets exactly what they need, table by table:

- the log (``ssot_events``): SELECT only. Appends go through ``ssot_append``, which runs
  as the schema's owner (migration 0017) and takes the lock that keeps commit order equal
  to position order; no UPDATE, DELETE or TRUNCATE, so PostgreSQL itself refuses the
  service's credentials any rewrite of history, not only the append-only triggers;
- the other append-only tables (Merkle leaves and nodes, digests, the access log): SELECT
  and INSERT; the seals (written by migrations and imports): SELECT;
- the inline views (``entries``, ``entry_history``): SELECT, since ``ssot_append`` writes
  them; idempotency keys: SELECT, and UPDATE and DELETE for the purge (which locks the
  rows it deletes: ``FOR UPDATE`` asks for UPDATE), the answers that appended nothing
  being recorded through ``ssot_record_answers`` (migration 0021); the followers' positions and the
  asynchronous views' tables (named by the caller): what their runners write.

Every table of the schema must be named here or by the caller: ``unclassified`` lists
those that are not, so a migration that adds a table without deciding its grants fails the
tests rather than a deployment. ``grant_service_role`` first revokes everything the role
had on these objects, so running it again after an upgrade converges on exactly this.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from .migrate import LOCK_ID

#: Table → what the service role may do with it (the view tables are given by the caller).
SERVICE_GRANTS: dict[str, tuple[str, ...]] = {
    "ssot_events": ("SELECT",),
    "merkle_leaves": ("SELECT", "INSERT"),
    "merkle_nodes": ("SELECT", "INSERT"),
    "digests": ("SELECT", "INSERT"),
    "access_log": ("SELECT", "INSERT"),
    "state_seals": ("SELECT",),
    "entries": ("SELECT",),
    "entry_history": ("SELECT",),
    "idempotency_keys": ("SELECT", "UPDATE", "DELETE"),  # the purge locks what it deletes
    "broadcaster_positions": ("SELECT", "INSERT", "UPDATE"),
    "projection_tracking": ("SELECT", "INSERT", "UPDATE"),
    # where the schema quality counters exist: the HTTP workers count refused writes
    "schema_refusals": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "ssot_schema_migrations": ("SELECT",),
    # the last verify and export, recorded by the API's verify and by ssot export
    "operation_runs": ("SELECT", "INSERT", "UPDATE"),
}
#: What the service role may do with the tables of the asynchronous views it maintains.
VIEW_TABLE_GRANTS = ("SELECT", "INSERT", "UPDATE", "DELETE")
#: Tables of the operator's commands alone (``ssot import`` records its imports there).
OPERATOR_TABLES = frozenset({"ssot_backup_imports"})
#: The functions the service role calls.
SERVICE_FUNCTIONS = ("ssot_append(stored_event_uuid[], json, json, text)",
                     "ssot_record_answers(json)")

_TABLES = ("SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
           " AND c.relkind IN ('r', 'p') ORDER BY c.relname")


def tables(conn: psycopg.Connection[Any]) -> list[str]:
    """The tables of the connection's current schema."""
    return [name for (name,) in conn.execute(_TABLES)]


def unclassified(conn: psycopg.Connection[Any], view_tables: Iterable[str]) -> list[str]:
    """Tables of the schema whose grants nobody decided (a view's shadow tables, a rebuild
    in progress, are the views' own)."""
    known = {*SERVICE_GRANTS, *OPERATOR_TABLES, *view_tables}
    return [t for t in tables(conn) if t not in known and not t.endswith(("__rebuild", "__old"))]


def grant_service_role(conninfo: str, role: str, view_tables: Iterable[str]) -> list[str]:
    """Give ``role`` exactly the rights above on the current schema (revoking any others
    it had on those objects first), in one transaction under the migrations' lock; return
    a line per grant."""
    views = sorted(set(view_tables))
    done: list[str] = []
    with psycopg.connect(conninfo) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))  # one at a time
        who = sql.Identifier(role)
        present = set(tables(conn))
        schema = conn.execute("SELECT current_schema()").fetchone()
        assert schema is not None
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            sql.Identifier(schema[0]), who))
        wanted = {**SERVICE_GRANTS, **{v: VIEW_TABLE_GRANTS for v in views}}
        for table, rights in wanted.items():
            if table not in present:
                continue  # a view whose outside service is not configured here
            name = sql.Identifier(table)
            conn.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(name, who))
            conn.execute(sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                sql.SQL(", ").join(map(sql.SQL, rights)), name, who))
            done.append(f"{table}: {', '.join(rights)}")
        conn.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(
            sql.Identifier(schema[0]), who))
        for function in SERVICE_FUNCTIONS:
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                sql.SQL(function), who))
            done.append(f"{function.split('(')[0]}(): EXECUTE")
    return done
