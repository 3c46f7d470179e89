"""Running an asyncio service until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import uvloop


def run_until_signalled(service: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``service(stop)`` on uvloop; SIGTERM or SIGINT sets ``stop``."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service(stop)

    uvloop.run(main())
