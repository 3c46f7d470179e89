"""Running an asyncio service until SIGTERM or SIGINT; noting them while a process starts."""

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


def note_stop_signals() -> list[int]:
    """From now on SIGTERM and SIGINT are only noted, in the list returned, until a
    server's own handlers take over: an HTTP worker still starting when serve is stopped
    (Ctrl-C reaches the whole process group) then exits cleanly, or serves and stops at
    once, instead of raising ``KeyboardInterrupt`` in the middle of its imports or of
    uvicorn's start."""
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    return received
