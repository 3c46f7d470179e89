"""The log as a live feed for HTTP clients: one LISTEN per worker wakes every waiting
stream; each stream also polls, so a lost notification only delays it by a second. When
the server starts to shut down, it wakes them all a last time to end (``end_feeds``).

The worker listens only while some stream waits, and ``linger`` seconds after the last
one did: the log notifies every commit, and a worker serving no stream has no use for
the notifications (taking each one costs its event loop a wake-up per write). The first
wait of a stream starts the listener; whatever was committed before it listens, the
stream's own poll finds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from psycopg import AsyncConnection

log = logging.getLogger(__name__)

#: Seconds the listener stays after the last stream stopped waiting (a stream waits
#: between its reads of the log: the listener must outlive those gaps).
LINGER_SECONDS = 30.0


class LogNotifier:
    def __init__(self, database_url: str, channel: str = "ssot_events",
                 linger: float = LINGER_SECONDS) -> None:
        self.database_url = database_url
        self.channel = channel
        self.linger = linger
        self._news = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Streams waiting now, and when the last one began or ended its wait.
        self._waiting = 0
        self._wanted_at = float("-inf")
        #: The server is stopping: feeds end now, and their clients resume after the
        #: restart (or on another worker) from the last position they saw.
        self.ending = False

    @property
    def listening(self) -> bool:
        """Whether a listener is running (or about to: it connects first)."""
        return self._task is not None

    def start(self) -> None:
        """Nothing to do until a stream waits (kept for the app's lifespan)."""

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def end_feeds(self) -> None:
        """Wake every waiting feed to end (the server is stopping)."""
        self.ending = True
        self._wake()

    async def wait(self, timeout: float) -> None:
        """Until the log may have grown, or ``timeout`` seconds, or the feeds end."""
        if self.ending:
            return
        self._waiting += 1
        self._wanted_at = time.monotonic()
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="ssot-log-notifier")
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), timeout)
        finally:
            self._waiting -= 1
            self._wanted_at = time.monotonic()

    def _wanted(self) -> bool:
        return self._waiting > 0 or time.monotonic() - self._wanted_at < self.linger

    def _wake(self) -> None:
        news, self._news = self._news, asyncio.Event()
        news.set()

    async def _listen(self) -> None:
        me = asyncio.current_task()
        try:
            while True:
                try:
                    async with await AsyncConnection.connect(self.database_url,
                                                             autocommit=True) as conn:
                        await conn.execute(f"LISTEN {self.channel}")
                        while True:
                            async for _ in conn.notifies(timeout=self.linger):
                                self._wake()
                            if not self._wanted():
                                self._let_go(me)  # before closing: a new wait starts anew
                                return
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the database went away: streams keep polling
                    log.warning("log notifier: %s; listening again in 1 s", e)
                    await asyncio.sleep(1.0)
                    if not self._wanted():
                        return
        finally:
            self._let_go(me)

    def _let_go(self, task: asyncio.Task[None] | None) -> None:
        if self._task is task:
            self._task = None
