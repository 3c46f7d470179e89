"""The worker's LISTEN on the log: held only while a live feed waits (and a while after),
so a worker serving no feed is not woken by every commit."""

from __future__ import annotations

import asyncio
import time

import psycopg

from nexus_ssot.api.log_notifier import LogNotifier


def listeners(database_url: str, channel: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND query = %s", (f"LISTEN {channel}",)).fetchone()
    assert row is not None
    return int(row[0])


async def until(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.02)


def test_it_listens_only_while_a_feed_waits_and_a_linger_after(database_url: str) -> None:
    channel = f"ssot_test_{time.monotonic_ns()}"

    async def scenario() -> None:
        notifier = LogNotifier(database_url, channel=channel, linger=0.3)
        notifier.start()
        try:
            await asyncio.sleep(0.2)
            assert not notifier.listening
            assert listeners(database_url, channel) == 0
            waiting = asyncio.create_task(notifier.wait(60))
            await until(lambda: listeners(database_url, channel) == 1, "LISTEN")
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f"NOTIFY {channel}")
            await asyncio.wait_for(waiting, 20)  # woken by the notification, not the timeout
            await until(lambda: not notifier.listening, "the listener lets go after linger")
            await until(lambda: listeners(database_url, channel) == 0, "UNLISTEN")
            await notifier.wait(0.05)  # the next wait listens again
            assert notifier.listening
        finally:
            await notifier.stop()
        assert not notifier.listening

    asyncio.run(scenario())
