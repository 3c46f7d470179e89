"""A view's range commits with its tracked position in one round trip, and only if the view
is still where the range started: otherwise nothing of it is committed and the runner is
told (``TrackingConflict``); an error of the view's own statements is not taken for one.
The same holds of both ways a range is applied: the view's statements in one transaction
(``apply_range``), or its common table expressions in one statement (``apply_statement``)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest

from nexus_ssot.projections.namespace_stats import NamespaceStats, _fold
from nexus_ssot.projections.runtime import (
    Tables,
    TrackingConflict,
    apply_range,
    apply_statement,
    start_tracking,
)
from tests.integration.conftest import own_database


@pytest.fixture(scope="module")
def migrated_url(server_url: str) -> Iterator[str]:
    with own_database(server_url, "ssot_range") as url:
        yield url


async def _scenario(database_url: str, check: Any) -> None:
    name = f"test_range_{uuid.uuid4().hex[:8]}"
    table = f"{name}_rows"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {table} (upto bigint)")
        try:
            await start_tracking(conn, name)
            await check(conn, name, table)
        finally:
            await conn.rollback()
            await conn.execute(f"DROP TABLE {table}")
            await conn.execute("DELETE FROM projection_tracking WHERE application_name = %s",
                               (name,))


async def _rows_and_position(conn: psycopg.AsyncConnection[Any], name: str,
                             table: str) -> tuple[list[int], int]:
    """The view's rows (the positions its ranges wrote) and its tracked position."""
    cur = await conn.execute(f"SELECT upto FROM {table} ORDER BY upto")
    rows = [row[0] for row in await cur.fetchall()]
    cur = await conn.execute(
        "SELECT notification_id FROM projection_tracking WHERE application_name = %s", (name,))
    row = await cur.fetchone()
    assert row is not None
    return rows, int(row[0])


def _writing(conn: psycopg.AsyncConnection[Any], table: str, upto: int,
             then: str | None = None) -> Callable[[], Awaitable[None]]:
    """A view's fold writing one row for its range (then running ``then``)."""
    async def fold() -> None:
        await conn.execute(f"INSERT INTO {table} VALUES (%s)", (upto,))
        if then is not None:
            await conn.execute(then)
    return fold


def test_a_range_commits_its_rows_with_the_position_it_moves_to(migrated_url: str) -> None:
    async def check(conn: psycopg.AsyncConnection[Any], name: str, table: str) -> None:
        await apply_range(conn, name, 0, 5, _writing(conn, table, 5))
        await apply_range(conn, name, 5, 9, _writing(conn, table, 9))
        assert await _rows_and_position(conn, name, table) == ([5, 9], 9)

    asyncio.run(_scenario(migrated_url, check))


def test_a_range_from_a_position_the_view_has_left_commits_nothing(migrated_url: str) -> None:
    async def check(conn: psycopg.AsyncConnection[Any], name: str, table: str) -> None:
        await apply_range(conn, name, 0, 5, _writing(conn, table, 5))
        with pytest.raises(TrackingConflict, match="no longer at position 0"):
            # another runner moved the view to 5 meanwhile
            await apply_range(conn, name, 0, 7, _writing(conn, table, 7))
        assert await _rows_and_position(conn, name, table) == ([5], 5)

    asyncio.run(_scenario(migrated_url, check))


def test_a_view_statement_dividing_by_zero_is_its_own_error(migrated_url: str) -> None:
    async def check(conn: psycopg.AsyncConnection[Any], name: str, table: str) -> None:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await apply_range(conn, name, 0, 5, _writing(conn, table, 5, then="SELECT 1 / 0"))
        assert await _rows_and_position(conn, name, table) == ([], 0)

    asyncio.run(_scenario(migrated_url, check))


def _inserting(table: str, value: str = "%(upto)s") -> tuple[bytes, dict[str, Any]]:
    """A ``StatementView``'s fold writing one row for its range: ``value``, by default the
    position the range ends at."""
    return f"_rows AS (INSERT INTO {table} VALUES ({value}))".encode(), {}


def test_a_one_statement_range_commits_its_rows_with_the_position(migrated_url: str) -> None:
    async def check(conn: psycopg.AsyncConnection[Any], name: str, table: str) -> None:
        await apply_statement(conn, name, 0, 5, _inserting(table))
        await apply_statement(conn, name, 5, 7, None)  # a range with nothing to fold
        await apply_statement(conn, name, 7, 9, _inserting(table))
        assert await _rows_and_position(conn, name, table) == ([5, 9], 9)

    asyncio.run(_scenario(migrated_url, check))


def test_a_one_statement_range_from_a_position_left_commits_nothing(
        migrated_url: str) -> None:
    async def check(conn: psycopg.AsyncConnection[Any], name: str, table: str) -> None:
        await apply_statement(conn, name, 0, 5, _inserting(table))
        with pytest.raises(TrackingConflict, match="no longer at position 0"):
            await apply_statement(conn, name, 0, 7, _inserting(table))
        with pytest.raises(TrackingConflict, match="no longer at position 3"):
            await apply_statement(conn, name, 3, 8, None)
        assert await _rows_and_position(conn, name, table) == ([5], 5)

    asyncio.run(_scenario(migrated_url, check))


def test_a_one_statement_fold_dividing_by_zero_is_its_own_error(migrated_url: str) -> None:
    async def check(conn: psycopg.AsyncConnection[Any], name: str, table: str) -> None:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await apply_statement(conn, name, 0, 5, _inserting(table, "%(upto)s / 0"))
        assert await _rows_and_position(conn, name, table) == ([], 0)

    asyncio.run(_scenario(migrated_url, check))


def test_the_stats_views_range_looks_each_key_up_by_its_index_in_any_plan(
        migrated_url: str) -> None:
    """``namespace_stats`` runs its range prepared, so PostgreSQL may settle on one generic
    plan, made while the keys table was small. Whatever the planner prefers, each key of a
    range is looked up by the table's index: a plan that hashed the whole table made every
    range cost more as keys were written (38 ms a range at 150,000 keys against 5 ms)."""
    view = NamespaceStats()
    suffix = f"_plan{uuid.uuid4().hex[:8]}"
    t = Tables(view.tables, suffix=suffix)
    keys = t.plain["view_namespace_stats_keys"]
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(view.ddl(t).encode())
        try:
            conn.execute(f"INSERT INTO {t['view_namespace_stats_keys']} SELECT 'ns', 'k' || i,"
                         " true FROM generate_series(1, 2000) i".encode())
            conn.execute(f"ANALYZE {t['view_namespace_stats_keys']}".encode())
            fold = _fold(*(t[n] for n in view.tables)).decode()
            statement = ("WITH " + fold + " SELECT 1").replace("%(after)s", "$1").replace(
                "%(upto)s", "$2").replace("%%", "%")
            conn.execute("BEGIN")
            conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            # a planner that would rather join whole tables than look rows up one by one
            conn.execute("SET LOCAL enable_nestloop = off")
            conn.execute("SET LOCAL enable_mergejoin = off")
            conn.execute(f"PREPARE stats_range (bigint, bigint) AS {statement}".encode())
            plan = "\n".join(row[0] for row in conn.execute(
                "EXPLAIN EXECUTE stats_range (0, 1000)").fetchall())
            conn.execute("ROLLBACK")
            lookup = re.search(rf"Index (Only )?Scan using {keys}_pkey on {keys}.*\n\s*"
                               r"Index Cond: \(\(namespace = l\.namespace\) AND "
                               r"\(key = l\.key\)\)", plan)
            assert lookup is not None, plan  # by the key of each row of the range
            assert f"Seq Scan on {keys}" not in plan, plan
        finally:
            conn.execute("DEALLOCATE ALL")
            for table in t.values():
                conn.execute(f"DROP TABLE IF EXISTS {table}".encode())
