"""Waiting for something, a time or a stop, whichever comes first: what the followers of
the log do many times a second (a view lingering after a range, a follower waiting for
the tail's next read), every retry's backoff, and the deadline of each write an HTTP
worker sends to the writer (``within``).

A wait is one future, resolved by whichever comes first: whoever holds it (the tail's
read), a timer (``call_later``), or the stop event. One task per stop event watches it
and resolves every future waiting with it. ``asyncio.timeout`` around ``stop.wait()``
did the same with a timer that cancels the waiting task: the cancellation is raised
through the wait and turned into a ``TimeoutError``, ~14 µs of CPU for a linger that ends
(uvloop, measured in process) against ~5 µs for a timer resolving a future; a view
lingers after every range it folds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

#: The futures waiting on each stop event, for its watch to resolve. A stop event belongs
#: to one event loop; the loops of several threads may each have their own here.
_waiting: dict[asyncio.Event, set[asyncio.Future[Any]]] = {}


def _resolve(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _watched(stop: asyncio.Event) -> set[asyncio.Future[Any]]:
    """The futures ``stop`` resolves when it is set: the first wait on it starts its
    watch, which ends when it is set (or its loop cancels what is left at its end)."""
    waiters = _waiting.get(stop)
    if waiters is None:
        waiters = _waiting[stop] = set()
        watch = asyncio.ensure_future(stop.wait())

        def stopped(_: object) -> None:
            _waiting.pop(stop, None)
            for waiter in list(waiters):
                _resolve(waiter)

        watch.add_done_callback(stopped)
    return waiters


async def wait_unless_stopped(waiter: asyncio.Future[Any], stop: asyncio.Event,
                              seconds: float) -> None:
    """Until ``waiter`` is resolved by whoever holds it, ``seconds`` pass, or ``stop`` is
    set; in the latter two cases ``waiter`` is resolved with None. Cancelling the caller
    cancels ``waiter``."""
    if stop.is_set():
        return
    waiters = _watched(stop)
    waiters.add(waiter)
    timer = asyncio.get_running_loop().call_later(seconds, _resolve, waiter)
    try:
        await waiter
    finally:
        timer.cancel()
        waiters.discard(waiter)


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Until ``stop`` is set or ``seconds`` pass, in the caller's own task."""
    await wait_unless_stopped(asyncio.get_running_loop().create_future(), stop, seconds)


def deadline(seconds: float, futures: Sequence[asyncio.Future[Any]]) -> asyncio.TimerHandle:
    """When ``seconds`` pass, the first of ``futures`` not yet done fails with
    ``TimeoutError``: the one a caller awaiting them in order is waiting on (the
    broadcaster's and the KV mirror's acknowledgements, the tail's answer). Cancel the
    timer once they are done. ``asyncio.timeout`` around the same awaits cost ~9 µs of CPU
    even when it did not expire (a context manager in Python: two coroutines, the task's
    cancel counts, a timer), against ~2.5 µs for a timer and its cancel (uvloop)."""
    return asyncio.get_running_loop().call_later(seconds, _fail_first, futures)


def _fail_first(futures: Sequence[asyncio.Future[Any]]) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(TimeoutError())
            return


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``awaitable`` awaited in the caller's task for at most ``seconds``, else
    ``TimeoutError``: ``asyncio.timeout``'s behaviour (its timer cancels the task, and that
    cancellation, not another, becomes the ``TimeoutError``; the task's cancel count is
    restored), without its context manager's objects and two coroutines. Per await that
    does not time out, on uvloop, side by side: ~3 µs of CPU against ~5.5 µs for
    ``asyncio.timeout``; paid by every write an HTTP worker sends to the writer."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("within() must be awaited in a task")
    cancelling = task.cancelling()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = task.get_loop().call_later(seconds, expire)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if expired:
            expired = False
            if task.uncancel() <= cancelling:
                raise TimeoutError from None
        raise
    finally:
        timer.cancel()
        if expired:  # it fired, and what it awaited finished all the same
            task.uncancel()
