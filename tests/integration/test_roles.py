"""Least privilege in the database (docs/production.md#database-roles): `ssot migrate
--grant-to ROLE`, run as the role that owns the schema, gives the service's role what the
ledger needs and no more. PostgreSQL itself refuses that role any rewrite of the log
(UPDATE, DELETE, TRUNCATE, a direct INSERT that skips the append lock, switching the
append-only triggers off), the role appends only through ``ssot_append``, reads and
verifies the log, exports it, and keeps its rights on the views across a rebuild's table
swap. (Serving as that role, through the image's entrypoint: test_deploy.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from nexus_ssot.ledger.migrate import available
from nexus_ssot.ledger.roles import SERVICE_GRANTS, tables, unclassified
from nexus_ssot.projections.views import view_tables
from tests.integration.db_roles import LedgerRoles, ledger_roles

SSOT = str(Path(sys.executable).parent / "ssot")
FIXTURE = Path(__file__).parent.parent / "fixtures" / "main-2026-12-03.ndjson.gz"


def ssot(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SSOT_DATABASE_URL": url}
    return subprocess.run([SSOT, *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.fixture(scope="module")
def roles(server_url: str) -> Iterator[LedgerRoles]:
    """The roles, the schema migrated by its owner and granted to the service role, and
    the log of an earlier release imported by the owner (an operator's command)."""
    with ledger_roles(server_url) as made:
        done = ssot(made.owner_url, "migrate", "--grant-to", made.service)
        assert done.returncode == 0, done.stderr
        imported = ssot(made.owner_url, "import", str(FIXTURE))
        assert imported.returncode == 0, imported.stderr
        yield made


def privileges(url: str, role: str, table: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {p for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES",
                            "TRIGGER")
                if conn.execute("SELECT has_table_privilege(%s, %s, %s)",
                                (role, table, p)).fetchone() == (True,)}


def test_the_service_role_gets_exactly_its_grants_and_a_second_run_changes_nothing(
        roles: LedgerRoles) -> None:
    again = ssot(roles.owner_url, "migrate", "--grant-to", roles.service)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("migrations: applied 0,"), again.stdout
    assert f"granted {roles.service}: ssot_events: SELECT\n" in again.stdout
    with psycopg.connect(roles.owner_url) as conn:
        present = set(tables(conn))
    for table, rights in SERVICE_GRANTS.items():
        if table in present:
            assert privileges(roles.owner_url, roles.service, table) == set(rights), table
    assert privileges(roles.owner_url, roles.service, "ssot_events") == {"SELECT"}
    with psycopg.connect(roles.owner_url) as conn:
        assert unclassified(conn, view_tables()) == []  # every table's grants are decided
        definer, config = conn.execute(
            "SELECT prosecdef, proconfig FROM pg_proc WHERE proname = 'ssot_append'"
        ).fetchone() or (None, None)
        may_append = conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')",
                                  (roles.service, "ssot_append(stored_event_uuid[], json,"
                                   " json, text)")).fetchone()
    assert definer is True and config == ["search_path=public, pg_temp"]
    assert may_append == (True,)


@pytest.mark.parametrize("statement", [
    "UPDATE ssot_events SET topic = topic",
    "DELETE FROM ssot_events",
    "TRUNCATE ssot_events",
    "INSERT INTO ssot_events (originator_id, originator_version, topic, state)"
    f" VALUES ('{uuid.uuid4()}', 1, 'x', '\\x7b7d')",
    "ALTER TABLE ssot_events DISABLE TRIGGER USER",
    "LOCK TABLE ssot_events IN EXCLUSIVE MODE",
    "UPDATE entry_history SET actor = 'someone else'",
    "DELETE FROM entries",
    "DELETE FROM digests",
    "UPDATE access_log SET record = record",
    "DROP TABLE view_namespace_stats",
    "CREATE TABLE planted (x int)",
])
def test_postgresql_refuses_the_service_role_any_rewrite(roles: LedgerRoles,
                                                         statement: str) -> None:
    with psycopg.connect(roles.service_url) as conn, pytest.raises(
            errors.InsufficientPrivilege):
        conn.execute(statement.encode())
    with psycopg.connect(roles.owner_url) as conn:
        assert conn.execute("SELECT count(*) FROM ssot_events").fetchone() == (56,)


def test_the_service_role_reads_verifies_and_exports_the_log(roles: LedgerRoles,
                                                           tmp_path: Path) -> None:
    verified = ssot(roles.service_url, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    exported = ssot(roles.service_url, "export", "--out", str(tmp_path / "log.ndjson.gz"))
    assert exported.returncode == 0, exported.stderr
    assert "exported 56 events" in exported.stdout


def test_the_views_keep_the_service_roles_grants_across_a_rebuild(roles: LedgerRoles) -> None:
    before = {t: privileges(roles.owner_url, roles.service, t)
              for t in ("entries", "entry_history", "view_namespace_stats")}
    rebuilt = ssot(roles.owner_url, "replay", "views", "--view", "current_state",
                   "--view", "entry_history", "--view", "namespace_stats")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.count("swapped in") == 3, rebuilt.stdout
    after = {t: privileges(roles.owner_url, roles.service, t) for t in before}
    assert after == before and before["entries"] == {"SELECT"}
    with psycopg.connect(roles.service_url) as conn:
        assert conn.execute("SELECT count(*) FROM entries").fetchone() != (0,)
        conn.execute("SELECT count(*) FROM view_namespace_stats")


def test_migrate_refuses_a_role_that_grants_cannot_restrain(roles: LedgerRoles,
                                                            server_url: str) -> None:
    itself = ssot(roles.owner_url, "migrate", "--grant-to", roles.owner)
    assert itself.returncode == 2 and "owns the schema" in itself.stderr, itself.stderr
    missing = ssot(roles.owner_url, "migrate", "--grant-to", "no_such_role_" + roles.service)
    assert missing.returncode == 2 and "--grant-to: no role" in missing.stderr
    with psycopg.connect(server_url) as conn:
        superusers = [r for (r,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolsuper ORDER BY rolname LIMIT 1")]
    for superuser in superusers:  # the server has one: its bootstrap role
        refused = ssot(roles.owner_url, "migrate", "--grant-to", superuser)
        assert refused.returncode == 2 and "is a superuser" in refused.stderr


def test_a_service_role_finding_migrations_pending_is_told_to_run_migrate(
        server_url: str) -> None:
    with ledger_roles(server_url) as fresh:
        refused = ssot(fresh.service_url, "migrate")
    assert refused.returncode == 5, refused.stderr
    assert refused.stderr.startswith(
        f"error: schema_not_migrated: the database lacks {len(available())} schema "
        "migration(s), from 0001_event_store"), refused.stderr
    assert "run `ssot migrate` as the role that owns the schema" in refused.stderr
