"""The log's followers of ``ssot serve`` on one thread (``ssot-followers``) with one event
loop: the broadcaster, the digester, the views' runners and the idempotency keys' purge
share one log tail (one LISTEN connection, one read of each new range, decoded once) and
one connection holding their role leases (ledger/following.py). Each still keeps and
commits its own position, and each role still has one leader per database: another
``ssot serve`` (or ``ssot broadcast``, ``ssot project``, ``ssot digest``) stands by."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from nexus_ssot.ledger.following import Following
from nexus_ssot.ledger.idempotency_retention import IdempotencyPurger
from nexus_ssot.ledger.settings import Settings

from .broadcast import broadcaster_for
from .console import not_configured
from .digest import digester_for
from .loop_thread import LoopThread
from .project import run_all, runners_for


class FollowersThread(LoopThread):
    """Every follower ``settings`` asks for (``SSOT_BROADCAST``, ``SSOT_DIGESTS``,
    ``SSOT_PROJECTIONS``; the purge always) on one thread of its own, running
    ``SSOT_FOLLOWERS_NICE`` lower than the server's HTTP workers and writer."""

    def __init__(self, settings: Settings) -> None:
        if not settings.database_url:
            not_configured("SSOT_DATABASE_URL")
        self.broadcaster = broadcaster_for(settings) if settings.broadcast else None
        # digests are published on NATS where the events are (SSOT_BROADCAST)
        self.digester = digester_for(settings, publish=settings.broadcast) \
            if settings.digests else None
        self.runners = runners_for(settings) if settings.projections else []
        # The purge alone never reads the log: with the other followers run elsewhere
        # (docs/operations.md), serve does not LISTEN on the log or read each commit.
        self.following = Following(
            settings.database_url, gather=settings.followers_gather_seconds,
            tail=bool(self.broadcaster or self.digester or self.runners))
        self.purger = IdempotencyPurger(
            settings.database_url, retention_seconds=settings.idempotency_retention_seconds,
            every_seconds=settings.idempotency_purge_every_seconds)
        super().__init__("ssot-followers", self._follow, nice=settings.followers_nice)

    async def _follow(self, stop: asyncio.Event) -> None:
        following = self.following
        roles: list[Coroutine[Any, Any, None]] = [following.run(stop),
                                                  self.purger.run(stop, following)]
        if self.broadcaster is not None:
            roles.append(self.broadcaster.run(stop, following))
        if self.digester is not None:
            roles.append(self.digester.run(stop, following))
        if self.runners:
            roles.append(run_all(self.runners, stop, following))
        await asyncio.gather(*roles)
