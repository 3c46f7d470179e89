"""The log as a live feed for HTTP clients: one LISTEN per worker wakes every waiting
stream; each stream also polls, so a lost notification only delays it by a second. When
the server starts to shut down, it wakes them all a last time to end (``end_feeds``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from psycopg import AsyncConnection

log = logging.getLogger(__name__)


class LogNotifier:
    def __init__(self, database_url: str, channel: str = "ssot_events") -> None:
        self.database_url = database_url
        self.channel = channel
        self._news = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: The server is stopping: feeds end now, and their clients resume after the
        #: restart (or on another worker) from the last position they saw.
        self.ending = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="ssot-log-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def end_feeds(self) -> None:
        """Wake every waiting feed to end (the server is stopping)."""
        self.ending = True
        self._wake()

    async def wait(self, timeout: float) -> None:
        """Until the log may have grown, or ``timeout`` seconds, or the feeds end."""
        if self.ending:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._news.wait(), timeout)

    def _wake(self) -> None:
        news, self._news = self._news, asyncio.Event()
        news.set()

    async def _listen(self) -> None:
        while True:
            try:
                async with await AsyncConnection.connect(self.database_url,
                                                         autocommit=True) as conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    async for _ in conn.notifies():
                        self._wake()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database went away: streams keep polling
                log.warning("log notifier: %s; listening again in 1 s", e)
                await asyncio.sleep(1.0)
