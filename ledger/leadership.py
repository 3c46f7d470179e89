"""One active process per role and database: a session advisory lock, held on its own
connection with TCP keepalives so a vanished host releases it within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg


@contextlib.asynccontextmanager
async def leadership(database_url: str, namespace: int, name: str, stop: asyncio.Event,
                     poll_interval: float) -> AsyncIterator[psycopg.AsyncConnection[Any] | None]:
    """Wait until this process holds the lock ``(namespace, name)`` and yield its
    connection (run ``SELECT 1`` on it now and then to learn the session is still there),
    or yield None if ``stop`` is set first. The lock goes with the connection."""
    async with await psycopg.AsyncConnection.connect(database_url,
                                                     autocommit=True) as lock_conn:
        await lock_conn.execute("SET tcp_keepalives_idle = 5")
        await lock_conn.execute("SET tcp_keepalives_interval = 2")
        await lock_conn.execute("SET tcp_keepalives_count = 3")
        lock_id = namespace ^ zlib.crc32(name.encode())
        while not stop.is_set():
            cur = await lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_id,))
            row = await cur.fetchone()
            if row and row[0]:
                yield lock_conn
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_interval)
        yield None
