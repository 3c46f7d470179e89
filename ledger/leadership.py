"""One active process per role and database: a session advisory lock, held on its own
connection with TCP keepalives so a vanished host releases it within seconds; and the
loop pieces every follower of the log shares (the broadcaster, the digester, the view
runners): waiting for the log's NOTIFY with a polling fallback, sleeping until stopped,
and retrying a role with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg

from .redaction import redact_url


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


async def wait_for_news(stop: asyncio.Event, listen_conn: psycopg.AsyncConnection[Any],
                        timeout: float) -> None:
    """Until a NOTIFY arrives on ``listen_conn``, ``timeout`` passes (the polling
    fallback: a lost notification never stalls a follower) or ``stop`` is set."""
    if stop.is_set():
        return

    async def news() -> None:
        async for _ in listen_conn.notifies(timeout=timeout, stop_after=1):
            pass

    # Raced against ``stop``: a stopping server should not wait out the polling interval
    # of each follower in turn (psycopg's wait for a notification is safe to cancel).
    waiting, stopped = asyncio.ensure_future(news()), asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((waiting, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not waiting.done():
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
    if not waiting.cancelled():
        waiting.result()  # a lost connection raises, for the caller's retry


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def retrying(role: str, lead: Callable[[asyncio.Event], Awaitable[None]],
                   stop: asyncio.Event, on_error: Callable[[str], None],
                   log: logging.Logger) -> None:
    """Run ``lead(stop)`` until ``stop`` is set; a failure (NATS or PostgreSQL away) is
    reported to ``on_error``, logged, and retried after a backoff of 0.2 s doubling to 5 s."""
    backoff = 0.2
    while not stop.is_set():
        try:
            await lead(stop)
            backoff = 0.2
        except Exception as e:
            error = redact_url(f"{type(e).__name__}: {e}")
            on_error(error)
            log.warning("%s: %s; retrying in %.1fs", role, error, backoff)
            await sleep_unless_stopped(stop, backoff)
            backoff = min(backoff * 2, 5.0)
