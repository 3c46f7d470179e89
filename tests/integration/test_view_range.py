"""A view's range commits with its tracked position in one round trip, and only if the view
is still where the range started: otherwise nothing of it is committed and the runner is
told (``TrackingConflict``); an error of the view's own statements is not taken for one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from nexus_ssot.projections.runtime import TrackingConflict, apply_range, start_tracking
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


async def _rows(conn: psycopg.AsyncConnection[Any], table: str) -> list[int]:
    cur = await conn.execute(f"SELECT upto FROM {table} ORDER BY upto")
    return [row[0] for row in await cur.fetchall()]


async def _position(conn: psycopg.AsyncConnection[Any], name: str) -> int:
    cur = await conn.execute(
        "SELECT notification_id FROM projection_tracking WHERE application_name = %s", (name,))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def test_a_range_commits_its_rows_with_the_position_it_moves_to(migrated_url: str) -> None:
    async def check(conn: psycopg.AsyncConnection[Any], name: str, table: str) -> None:
        for after, upto in ((0, 5), (5, 9)):
            async def fold(upto: int = upto) -> None:
                await conn.execute(f"INSERT INTO {table} VALUES (%s)", (upto,))
            await apply_range(conn, name, after, upto, fold)
        assert await _rows(conn, table) == [5, 9]
        assert await _position(conn, name) == 9

    asyncio.run(_scenario(migrated_url, check))


def test_a_range_from_a_position_the_view_has_left_commits_nothing(migrated_url: str) -> None:
    async def check(conn: psycopg.AsyncConnection[Any], name: str, table: str) -> None:
        async def fold() -> None:
            await conn.execute(f"INSERT INTO {table} VALUES (5)")
        await apply_range(conn, name, 0, 5, fold)
        with pytest.raises(TrackingConflict, match="no longer at position 0"):
            await apply_range(conn, name, 0, 7, fold)  # (another runner moved it to 5)
        assert await _rows(conn, table) == [5]
        assert await _position(conn, name) == 5

    asyncio.run(_scenario(migrated_url, check))


def test_a_view_statement_dividing_by_zero_is_its_own_error(migrated_url: str) -> None:
    async def check(conn: psycopg.AsyncConnection[Any], name: str, table: str) -> None:
        async def fold() -> None:
            await conn.execute(f"INSERT INTO {table} VALUES (5)")
            await conn.execute("SELECT 1 / 0")
        with pytest.raises(psycopg.errors.DivisionByZero):
            await apply_range(conn, name, 0, 5, fold)
        assert await _rows(conn, table) == []
        assert await _position(conn, name) == 0

    asyncio.run(_scenario(migrated_url, check))
