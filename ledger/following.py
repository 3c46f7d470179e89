"""What the log's followers of one process share: the log's tail (one LISTEN connection,
one read of each new range) and the role leases (one connection holding every role's
lock). ``ssot serve`` runs its followers on one event loop around one ``Following``; a
follower run on its own (``ssot broadcast``, a test) makes its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .leadership import Leases
from .log_tail import LogTail


class Following:
    def __init__(self, database_url: str, *, poll_interval: float = 5.0,
                 lease_interval: float = 1.0, tail: bool = True,
                 gather: float = 0.0) -> None:
        self.database_url = database_url
        self.tail = LogTail(database_url, poll_interval=poll_interval, gather=gather)
        self.leases = Leases(database_url, interval=lease_interval)
        #: Whether ``run`` keeps the tail (a process whose roles never read the log does
        #: not LISTEN on it).
        self.tailing = tail

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the tail and the leases until ``stop``."""
        await asyncio.gather(self.leases.run(stop),
                             *((self.tail.run(stop),) if self.tailing else ()))


async def followed(database_url: str, role: Callable[[Following], Awaitable[None]],
                   following: Following | None, stop: asyncio.Event,
                   poll_interval: float, *, tail: bool = True, gather: float = 0.0) -> None:
    """Run ``role`` on ``following``, or, when None, on a ``Following`` of its own (whose
    lease requests come every ``poll_interval``, its tail's poll five times slower and
    its gather ``gather``, ``LogTail``; no tail unless ``tail``) run beside it."""
    if following is not None:
        await role(following)
        return
    own = Following(database_url, poll_interval=max(poll_interval, 0.05) * 5,
                    lease_interval=poll_interval, tail=tail, gather=gather)
    await asyncio.gather(own.run(stop), role(own))
