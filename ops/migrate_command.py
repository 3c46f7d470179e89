"""``ssot migrate``: bring the database's schema up to date, once, and give the service's
role exactly the rights it needs (``ledger/roles.py``; docs/production.md#database-roles).

Run it as the role that owns the schema (the migration role), before the service starts
(ops/deploy/entrypoint.sh, the Kubernetes migration Job). It applies the pending
migrations under the migrations' advisory lock (several at once apply each once), creates
the asynchronous views' tables (a service role may not create them), and with
``--grant-to ROLE`` grants that role its rights, revoking any others it had on them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from .console import EXIT_OTHER, EXIT_USAGE, fail, out
from .database import operator_settings


@click.command()
@click.option("--grant-to", "role", metavar="ROLE",
              help="The service's database role: grant it what the ledger's processes need "
                   "(no UPDATE, DELETE or TRUNCATE on the log).")
def migrate(role: str | None) -> None:
    """Apply pending schema migrations once (advisory lock), create the views' tables, and
    grant the service's role its rights (--grant-to)."""
    import psycopg

    from nexus_ssot.ledger.migrate import available
    from nexus_ssot.ledger.migrate import migrate as apply_migrations
    from nexus_ssot.ledger.roles import grant_service_role, unclassified
    from nexus_ssot.projections.views import view_tables

    settings = operator_settings()
    url = str(settings.database_url)
    if role is not None:
        _check_role(url, role)
    applied = apply_migrations(url)
    known = available()
    out.print(f"migrations: applied {len(applied)}" + (
        f" ({applied[0].version:04d}_{applied[0].name} … "
        f"{applied[-1].version:04d}_{applied[-1].name})" if applied else "")
        + f", {len(known)} in all")
    for line in asyncio.run(_view_tables(settings)):
        out.print(line)
    with psycopg.connect(url) as conn:
        stray = unclassified(conn, view_tables())
    if stray:
        fail(EXIT_OTHER, "unclassified_tables", f"no grants are decided for the tables "
             f"{', '.join(stray)} of this schema: grant them by hand or drop them")
    if role is not None:
        for line in grant_service_role(url, role, view_tables()):
            out.print(f"granted {role}: {line}")


def _check_role(url: str, role: str) -> None:
    """``--grant-to`` names a role that grants restrain: it exists, is not the one running
    the migrations (which owns the schema) and is no superuser (who bypasses grants)."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT rolsuper, rolname = current_user FROM pg_roles"
                           " WHERE rolname = %s", (role,)).fetchone()
    if row is None:
        fail(EXIT_USAGE, "usage", f"--grant-to: no role {role!r} in this database's cluster"
             " (create it first: CREATE ROLE … LOGIN)")
    if row[1]:
        fail(EXIT_USAGE, "usage", f"--grant-to: {role!r} is the role running the migrations"
             " (it owns the schema); name the service's own role")
    if row[0]:
        fail(EXIT_USAGE, "usage", f"--grant-to: {role!r} is a superuser, whom no grant"
             " restrains; give the service a role without SUPERUSER")


async def _view_tables(settings: Any) -> list[str]:
    """Create the tables of every asynchronous view; a line for each view."""
    import psycopg

    from nexus_ssot.ledger.migrate import LOCK_ID
    from nexus_ssot.projections.runtime import Tables, create_tables
    from nexus_ssot.projections.views import every_view_for_its_tables

    lines = []
    # one transaction (committed as the block ends), under the migrations' lock: two
    # runs at once make each table once
    async with await psycopg.AsyncConnection.connect(str(settings.database_url)) as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        for view in every_view_for_its_tables():
            await create_tables(conn, view, Tables(view.tables))
            lines.append(f"view {view.name}: tables {', '.join(view.tables)}")
    return lines
