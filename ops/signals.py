"""Running an asyncio service until SIGTERM or SIGINT; noting SIGINT while a process starts."""

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


def note_interrupts() -> list[int]:
    """From now on SIGINT is only noted, in the list returned, until a server's own
    handlers take over: an HTTP worker still starting when serve is stopped with Ctrl-C
    (a terminal sends it to the whole process group) then does not serve, or serves and
    stops at once, instead of raising ``KeyboardInterrupt`` in the middle of its imports
    or of uvicorn's start. SIGTERM keeps ending a starting process at once: it is the
    parent-death signal (children.exit_with_parent) and serve's own stop, and a worker
    holds serve's listening socket until it ends."""
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    return received
