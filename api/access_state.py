"""What each HTTP worker knows of access: the policies in force and the API tokens, read
from the system namespace ``_access`` and re-read whenever it changed.

Every worker checks ``_access``'s last position every ``access_refresh_seconds`` (0.25 s
by default; one indexed query) and reloads when it moved, so a policy change or a
revocation made through any worker takes effect in every worker within that delay. The
worker that made the change reloads at once.

A worker checks only while it serves requests: every authenticated request calls
``fresh()``, which keeps the checks going (until ``IDLE_SECONDS`` pass without a
request) and, when the last read is older than ``access_refresh_seconds`` (the worker
was idle), reads before the request is decided. An idle worker sends no query, and no
request is ever decided on state older than when it is busy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from nexus_ssot.access.identity import Identity
from nexus_ssot.access.policy import PolicySet
from nexus_ssot.access.tokens import POLICY_KEY_PREFIX, TOKEN_KEY_PREFIX, TokenRecord
from nexus_ssot.ledger.addressing import ACCESS_NAMESPACE
from nexus_ssot.projections import current_state

log = logging.getLogger(__name__)

#: Seconds without a request after which a worker stops checking ``_access``.
IDLE_SECONDS = 2.0
#: Longest a request waits for that read (the store not answering: the last state holds).
FRESH_TIMEOUT_SECONDS = 1.0


class AccessState:
    def __init__(self, pool: AsyncConnectionPool[Any], refresh_seconds: float) -> None:
        self.pool = pool
        self.refresh_seconds = refresh_seconds
        self.policies = PolicySet({})
        self.tokens: dict[str, TokenRecord] = {}
        #: Ids of revoked tokens (their entry deleted): refused as revoked, not unknown.
        self.revoked: set[str] = set()
        #: ``_access``'s last position when last loaded (-1: never loaded).
        self.position = -1
        #: When the last read of ``_access`` began (``time.monotonic()``).
        self.read_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        #: The event loop it follows ``_access`` on, once started.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        #: When a request last asked for fresh state (``time.monotonic()``).
        self.used_at = float("-inf")
        self._stopped = False

    async def refresh(self, unless_read_since: float | None = None) -> bool:
        """Reload when ``_access`` changed since the last load; whether it did. With
        ``unless_read_since`` (a ``time.monotonic()``), nothing is read when a read began
        after that moment: refusals arriving together cost one query, not one each."""
        async with self._lock:
            if unless_read_since is not None and self.read_at >= unless_read_since:
                return False
            self.read_at = time.monotonic()
            async with self.pool.connection() as conn:
                _, _, last = await current_state.namespace_counts(conn, ACCESS_NAMESPACE)
                position = last or 0
                if position == self.position:
                    return False
                rows = await current_state.namespace_documents(conn, ACCESS_NAMESPACE)
            self.load(rows, position)
            return True

    def load(self, rows: list[tuple[str, str | None, bool]], position: int) -> None:
        """Take ``_access``'s entries (key, document as JSON text, deleted) as of
        ``position``: the policies in force, the live tokens, the revoked ids."""
        policies: dict[str, dict[str, Any]] = {}
        tokens: dict[str, TokenRecord] = {}
        revoked: set[str] = set()
        for key, text, deleted in rows:
            if key.startswith(TOKEN_KEY_PREFIX):
                token_id = key[len(TOKEN_KEY_PREFIX):]
                if deleted or text is None:
                    revoked.add(token_id)
                else:
                    tokens[token_id] = TokenRecord.from_document(orjson.loads(text))
            elif key.startswith(POLICY_KEY_PREFIX) and not deleted and text is not None:
                policies[key[len(POLICY_KEY_PREFIX):]] = orjson.loads(text)
        self.policies = PolicySet(policies, position)
        self.tokens = tokens
        self.revoked = revoked
        self.position = position

    def token(self, token_id: str) -> TokenRecord | None:
        return self.tokens.get(token_id)

    def still_valid(self, identity: Identity, now: datetime | None = None) -> bool:
        """Whether ``identity`` (authenticated earlier) would still be: its token not
        revoked, nothing expired. For long requests (the SSE feed)."""
        now = now or datetime.now(UTC)
        if identity.expires_at is not None and now >= identity.expires_at:
            return False
        if identity.method == "token" and identity.token_id is not None:
            record = self.tokens.get(identity.token_id)
            return record is not None and not record.expired(now)
        return True

    def live_tokens(self, now: datetime | None = None) -> list[TokenRecord]:
        now = now or datetime.now(UTC)
        return [t for t in self.tokens.values() if not t.expired(now)]

    @property
    def polling(self) -> bool:
        """Whether the worker is checking ``_access`` (it serves requests)."""
        return self._task is not None

    async def fresh(self) -> None:
        """For each request, before it is decided: state read at most
        ``refresh_seconds`` ago (read now if the worker was idle; kept so while requests
        come). A store that does not answer leaves the last state, as the checks do."""
        now = time.monotonic()
        self.used_at = now
        if self._stopped:
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="access-refresh")
        if now - self.read_at > self.refresh_seconds:
            await self._refresh_or_keep(unless_read_since=now - self.refresh_seconds,
                                        timeout=FRESH_TIMEOUT_SECONDS)

    async def _refresh_or_keep(self, unless_read_since: float | None = None,
                               timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self.refresh(unless_read_since=unless_read_since)
        except Exception:  # the store is down: keep what we know, try again
            log.warning("could not re-read policies and tokens; keeping the last ones",
                        exc_info=True)

    async def _run(self) -> None:
        try:
            while time.monotonic() - self.used_at < IDLE_SECONDS:
                await asyncio.sleep(self.refresh_seconds)
                await self._refresh_or_keep()
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def start(self) -> None:
        """Load once (the first request must not see an empty policy); requests keep it
        fresh from then on (``fresh``)."""
        await self.refresh()
        self.loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
