"""A view that fails (its fold names a table that is not there yet: dropped by hand, a
schema behind) does not stop the followers it shares a loop with: it reports the error,
retries, and catches up once the cause is gone, while the other views keep following."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import psycopg
import pytest

from nexus_ssot.ledger.writer import GroupCommitWriter
from nexus_ssot.ops.project import run_all
from nexus_ssot.projections.runtime import LINGER, Tables, ViewRunner, apply_ctes
from nexus_ssot.projections.schema_quality import SchemaQuality
from tests.integration.conftest import wait_until
from tests.integration.test_log_tail import append


@pytest.fixture()
def database_url(fresh_db: str) -> str:
    """A database of this test's own: its views fold the whole log."""
    return fresh_db


def counting_view(token: str, needs: str | None) -> Any:
    """A view counting the log's events in a table of its own; with ``needs``, its fold
    also reads that table, which fails while the table does not exist."""

    class Counting:
        name: ClassVar[str] = f"counting_{token}"
        tables: ClassVar[tuple[str, ...]] = (f"view_counting_{token}",)
        side_effects: ClassVar[bool] = False

        def ddl(self, t: Tables) -> str:
            return f"CREATE TABLE IF NOT EXISTS {t[self.tables[0]]} (events bigint NOT NULL)"

        async def apply(self, conn: psycopg.AsyncConnection[Any], after: int, upto: int,
                        t: Tables) -> None:
            extra = f" + (SELECT count(*) FROM {needs})" if needs else ""
            await conn.execute(f"INSERT INTO {t[self.tables[0]]} SELECT count(*){extra}"
                               " FROM ssot_events WHERE notification_id > %s"
                               " AND notification_id <= %s".encode(), (after, upto))

    return Counting()


def tracked(database_url: str, name: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT notification_id FROM projection_tracking"
                           " WHERE application_name = %s", (name,)).fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def running(runners: list[ViewRunner], join: float = 30) -> Iterator[None]:
    """``runners`` on a loop and thread of their own, as ``ssot serve`` runs its views (one
    loop, one log tail), until the block ends; then stopped, within ``join`` seconds."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete,
                              args=(run_all(runners, stop),), daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(join)
        alive = thread.is_alive()
        if not alive:
            loop.close()
    assert not alive, "the runners did not stop"


def log_head(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return int(conn.execute("SELECT max(notification_id) FROM ssot_events").fetchone()[0])


@pytest.fixture()
def runners(database_url: str) -> Iterator[tuple[ViewRunner, ViewRunner, str]]:
    """A failing view and a sound one, run together as ``ssot serve`` runs its views (one
    loop, one log tail); and the table the failing one needs."""
    token = secrets.token_hex(4)
    needed = f"needed_{token}"
    failing = ViewRunner(database_url, counting_view(f"f{token}", needed), poll_interval=0.2)
    sound = ViewRunner(database_url, counting_view(f"s{token}", None), poll_interval=0.2)
    with running([failing, sound]):
        yield failing, sound, needed


def test_a_failing_view_retries_and_the_others_keep_following(
        database_url: str, writer: GroupCommitWriter,
        runners: tuple[ViewRunner, ViewRunner, str]) -> None:
    failing, sound, needed = runners
    append(writer, "viewfail", 30, 5)
    head = log_head(database_url)

    wait_until(lambda: tracked(database_url, sound.view.name) >= head,
               "the sound view to follow the log", timeout=30)
    wait_until(lambda: (failing.progress.last_error or "").startswith("UndefinedTable"),
               "the failing view to report its error", timeout=30)
    assert tracked(database_url, failing.view.name) < head

    append(writer, "viewfail", 10, 5)  # the sound view keeps following meanwhile
    head = log_head(database_url)
    wait_until(lambda: tracked(database_url, sound.view.name) >= head,
               "the sound view to follow the log while the other fails", timeout=30)

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {needed} (x int)".encode())
    wait_until(lambda: tracked(database_url, failing.view.name) >= head,
               "the failing view to catch up once its table exists", timeout=30)
    assert failing.progress.last_error is None


def test_a_view_sets_its_own_linger_and_a_stop_does_not_wait_for_it(
        database_url: str, writer: GroupCommitWriter) -> None:
    """A view may say how stale it may get under a trickle (``linger``: seconds between
    ranges once caught up); the schema-quality report waits a quarter of a second, a view
    that says nothing ``LINGER``. A runner lingering is stopped at once, not after it."""
    token = secrets.token_hex(4)
    view = counting_view(f"l{token}", None)
    type(view).linger = 60.0
    runner = ViewRunner(database_url, view, poll_interval=0.2)
    assert runner.linger == 60.0
    assert ViewRunner(database_url, counting_view(f"d{token}", None)).linger == LINGER
    assert ViewRunner(database_url, SchemaQuality()).linger == SchemaQuality.linger > LINGER
    append(writer, "linger", 3, 1)  # before it starts: its first range takes them all
    head = log_head(database_url)
    with running([runner], join=10):  # a minute's linger would hold it: the stop cuts it short
        wait_until(lambda: tracked(database_url, view.name) >= head,
                   "the view to fold the log, then linger", timeout=30)


def ranges_view(token: str) -> Any:
    """A view folded in SQL that needs no events (``reads_events = False``): each range
    adds a row (its end, its events counted in SQL); it notes what it was handed."""

    class Ranges:
        name: ClassVar[str] = f"ranges_{token}"
        tables: ClassVar[tuple[str, ...]] = (f"view_ranges_{token}",)
        side_effects: ClassVar[bool] = False
        reads_events: ClassVar[bool] = False
        handed: ClassVar[list[int]] = []

        def ddl(self, t: Tables) -> str:
            return (f"CREATE TABLE IF NOT EXISTS {t[self.tables[0]]}"
                    " (upto bigint NOT NULL, events bigint NOT NULL)")

        def _ctes(self, t: Tables) -> bytes:
            return (f"_range AS (INSERT INTO {t[self.tables[0]]} SELECT %(upto)s, count(*)"
                    " FROM ssot_events WHERE notification_id > %(after)s"
                    " AND notification_id <= %(upto)s)").encode()

        async def apply(self, conn: psycopg.AsyncConnection[Any], after: int, upto: int,
                        t: Tables) -> None:
            await apply_ctes(conn, self._ctes(t), {"after": after, "upto": upto})

        async def range_statement(self, conn: psycopg.AsyncConnection[Any], after: int,
                                  upto: int, t: Tables, events: Any
                                  ) -> tuple[bytes, dict[str, Any]]:
            type(self).handed.append(len(events))
            return self._ctes(t), {}

    return Ranges()


def test_a_view_that_reads_its_ranges_in_sql_is_handed_no_events_behind_or_at_the_tail(
        database_url: str, writer: GroupCommitWriter) -> None:
    """Behind the log's tail (the log written before it started) such a view is told only
    where each range ends, not read every event with its history; at the tail, the
    same. Its ranges still cover the log without a gap or a double, each at most
    ``batch_size`` events."""
    append(writer, "sqlranges", 45, 9)  # before it starts: behind the tail
    view = ranges_view(secrets.token_hex(4))
    runner = ViewRunner(database_url, view, batch_size=20, poll_interval=0.2)
    with running([runner]):
        first = log_head(database_url)
        wait_until(lambda: tracked(database_url, view.name) >= first,
                   "the view to catch up with the log written before it", timeout=30)
        append(writer, "sqlranges", 12, 3)  # while it follows: from the tail
        head = log_head(database_url)
        wait_until(lambda: tracked(database_url, view.name) >= head,
                   "the view to follow the tail", timeout=30)
    assert view.handed and set(view.handed) == {0}
    with psycopg.connect(database_url) as conn:
        ranges = conn.execute(f"SELECT upto, events FROM {Tables(view.tables)[view.tables[0]]}"
                              " ORDER BY upto".encode()).fetchall()
        events = int(conn.execute("SELECT count(*) FROM ssot_events").fetchone()[0])
    assert ranges[-1][0] == head and sum(n for _, n in ranges) == events  # no gap or double
    assert all(0 < n <= 20 for _, n in ranges)
    assert len(ranges) >= first // 20  # behind the tail: ranges of at most batch_size
