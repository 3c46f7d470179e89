"""An HTTP process that starts while its database cannot be reached: it serves, not ready.

The lifespan migrates the schema and opens the store before anything is served. When the
database is down at that moment (an HTTP worker respawned while PostgreSQL restarts, a
node starting before its database), the process stays up instead of failing its start
(which stopped the whole ``ssot serve``): it tries again with a backoff of 0.5 s doubling
to 5 s between attempts, logging each failure, while every request but the liveness
probe (``GET /v1/live``) is answered ``503 starting`` with the last error, the readiness
probe (``GET /v1/health``) included. A failure that waiting cannot cure (a role that may
not apply pending migrations) still fails the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg
from eventsourcing.persistence import OperationalError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from nexus_ssot.ledger.redaction import redact_url

from .errors import problem

log = logging.getLogger(__name__)

#: What a start that waits for the database retries on: the database not answering
#: (psycopg's errors, a pool's timeout among them, and the library's).
UNREACHABLE = (psycopg.OperationalError, OperationalError)
FIRST_DELAY, MAX_DELAY = 0.5, 5.0
LIVENESS_PATH = "/v1/live"


class Startup:
    """Whether the service of this process is ready, and if not, why not yet."""

    def __init__(self) -> None:
        self.ready = False
        self.attempts = 0
        self.last_error = "the service is starting"
        self.task: asyncio.Task[None] | None = None

    async def start(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run ``attempt`` (which makes the service) once now; if the database cannot be
        reached, go on trying in the background until it can (``stop`` ends that)."""
        try:
            await self._try(attempt)
        except UNREACHABLE as e:
            self._failed(e, FIRST_DELAY)
            self.task = asyncio.create_task(self._retry(attempt), name="ssot-startup")

    async def _try(self, attempt: Callable[[], Awaitable[None]]) -> None:
        self.attempts += 1
        await attempt()
        self.ready = True
        if self.attempts > 1:
            log.info("the database answers: ready after %d attempts", self.attempts)

    async def _retry(self, attempt: Callable[[], Awaitable[None]]) -> None:
        delay = FIRST_DELAY
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
            try:
                await self._try(attempt)
            except UNREACHABLE as e:
                self._failed(e, delay)
            except Exception as e:
                # Not cured by waiting, and no start left to fail: the process stays
                # unready, its 503s and its log naming why (a background task's error
                # would otherwise be seen by no one).
                self.last_error = redact_url(f"{type(e).__name__}: {e}".strip())
                log.exception("the service cannot start (attempt %d); it stays unready",
                              self.attempts)
                raise
            else:
                return

    def _failed(self, error: Exception, delay: float) -> None:
        self.last_error = redact_url(f"{type(error).__name__}: {error}".strip())
        log.warning("the database cannot be reached (attempt %d: %s); trying again in %gs",
                    self.attempts, self.last_error, delay)

    async def stop(self) -> None:
        """Stop trying (at shutdown)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class NotReadyYet:
    """The middleware: while the service is not ready, every request but the liveness
    probe is answered ``503 starting`` (with ``Retry-After``), naming the last error."""

    def __init__(self, app: ASGIApp, startup: Startup) -> None:
        self.app = app
        self.startup = startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.startup.ready or scope["type"] != "http"
                or scope["path"] == LIVENESS_PATH):
            await self.app(scope, receive, send)
            return
        response = problem(
            Request(scope), 503, "starting",
            f"the service is not ready yet: it cannot reach its database "
            f"({self.startup.last_error}; {self.startup.attempts} attempts); retry",
            headers={"Retry-After": "1"})
        await response(scope, receive, send)
