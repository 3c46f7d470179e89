"""Waiting for a time or a stop: a wait ends with whichever comes first (its holder, its
timer, the stop), leaves nothing registered behind, and all the waits on one stop event
share one watch of it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from nexus_ssot.ledger import stopping
from nexus_ssot.ledger.stopping import deadline, sleep_unless_stopped, wait_unless_stopped

Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """The followers run on uvloop; the standard loop as well, for the other callers."""
    return asyncio.run if request.param == "asyncio" else uvloop.run


def test_a_sleep_ends_when_its_time_has_passed(run: Run) -> None:
    async def main() -> None:
        # On the loop's clock, which its timers keep: uvloop's counts whole milliseconds
        # from the start of the loop's turn, so by time.monotonic a timer may end up to a
        # millisecond early (a clean clone saw 49.26 ms for 50).
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        started = loop.time()
        await sleep_unless_stopped(stop, 0.05)
        assert loop.time() - started >= 0.05 - 1e-9
        assert not stopping._waiting[stop]  # nothing left waiting on the stop

    run(main())


def test_a_long_sleep_ends_when_the_stop_is_set(run: Run) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        sleeping = asyncio.ensure_future(sleep_unless_stopped(stop, 3600))
        await asyncio.sleep(0)
        assert not sleeping.done()
        stop.set()
        await asyncio.wait_for(sleeping, 30)  # an hour's sleep ended by the stop
        assert stop not in stopping._waiting  # the watch ended with the stop
        await sleep_unless_stopped(stop, 3600)  # stopped: returns at once

    run(main())


def test_a_wait_ends_when_its_holder_resolves_it_and_its_timer_is_cancelled(
        run: Run) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[str] = loop.create_future()
        waiting = asyncio.ensure_future(wait_unless_stopped(waiter, stop, 3600))
        await asyncio.sleep(0)
        waiter.set_result("read")
        await asyncio.wait_for(waiting, 30)
        assert waiter.result() == "read"  # not overwritten by the timer or the stop
        assert not stopping._waiting[stop]
        stop.set()
        await asyncio.sleep(0)
        assert waiter.result() == "read"

    run(main())


def test_a_cancelled_wait_cancels_its_future_and_leaves_nothing_registered(
        run: Run) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(wait_unless_stopped(waiter, stop, 3600))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert waiter.cancelled()
        assert not stopping._waiting[stop]

    run(main())


def test_the_waits_on_one_stop_share_one_watch_of_it(run: Run) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        before = len(asyncio.all_tasks())
        sleepers = [asyncio.ensure_future(sleep_unless_stopped(stop, 3600))
                    for _ in range(50)]
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == before + 50 + 1  # the sleepers and one watch
        assert len(stopping._waiting[stop]) == 50
        stop.set()
        await asyncio.wait_for(asyncio.gather(*sleepers), 30)
        assert stop not in stopping._waiting

    run(main())


def test_a_stop_that_is_never_set_leaves_nothing_when_its_loop_ends(
        run: Run) -> None:
    stop = asyncio.Event()

    async def main() -> None:
        await sleep_unless_stopped(stop, 0.001)
        assert stop in stopping._waiting  # its watch runs until the loop ends

    run(main())  # the runner cancels the watch as it ends
    assert stop not in stopping._waiting


def test_a_deadline_fails_the_first_future_still_pending_and_no_other(run: Run) -> None:
    """The one a caller awaiting them in order waits on: it sees a TimeoutError, and no
    other future carries an exception that no one would retrieve."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[int]] = [loop.create_future() for _ in range(3)]
        futures[0].set_result(1)
        deadline(0.01, futures)
        with pytest.raises(TimeoutError):
            for future in futures:
                await future
        assert futures[0].result() == 1
        assert isinstance(futures[1].exception(), TimeoutError)
        assert not futures[2].done()

    run(main())


def test_a_deadline_cancelled_in_time_fails_nothing(run: Run) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        timer = deadline(0.01, [future])
        loop.call_soon(future.set_result, 7)
        assert await future == 7
        timer.cancel()
        late: asyncio.Future[int] = loop.create_future()
        deadline(0.01, [late]).cancel()
        await asyncio.sleep(0.05)  # the deadline's time has passed: nothing failed
        assert not late.done()

    run(main())


def test_within_answers_what_it_awaited_and_leaves_the_task_uncancelled(run: Run) -> None:
    async def main() -> None:
        async def answer() -> int:
            await asyncio.sleep(0)
            return 7

        assert await stopping.within(5.0, answer()) == 7
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0.02)  # its timer was cancelled: nothing cancels the task later

    run(main())


def test_within_turns_its_own_expiry_into_a_timeout_error(run: Run) -> None:
    async def main() -> None:
        cleaned = []

        async def slow() -> None:
            try:
                await asyncio.sleep(10)
            finally:
                cleaned.append(True)  # what it awaited saw the cancellation

        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await stopping.within(0.02, slow())
        assert time.monotonic() - started < 5
        assert cleaned == [True]
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the count restored
        await asyncio.sleep(0)  # and the task goes on

    run(main())


def test_within_lets_a_cancellation_from_outside_through(run: Run) -> None:
    async def main() -> None:
        inner = asyncio.create_task(stopping.within(5.0, asyncio.sleep(10)))
        await asyncio.sleep(0.01)
        inner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await inner  # a cancellation, not a TimeoutError: the deadline did not pass

    run(main())


def test_within_expiring_under_an_outside_cancellation_lets_that_one_through(
        run: Run) -> None:
    """The task was cancelled from outside as well as by the deadline: the caller's
    cancellation stands (as with ``asyncio.timeout``), not a TimeoutError."""
    async def main() -> None:
        async def body() -> None:
            task = asyncio.current_task()
            assert task is not None

            async def both() -> None:
                task.cancel()  # from outside, while the deadline expires
                await asyncio.sleep(10)

            await stopping.within(0, both())

        inner = asyncio.create_task(body())
        with pytest.raises(asyncio.CancelledError):
            await inner

    run(main())


def test_within_whose_awaitable_finishes_despite_its_expiry_answers_it(run: Run) -> None:
    async def main() -> None:
        async def stubborn() -> str:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                return "finished anyway"
            return "slept"

        assert await stopping.within(0.01, stubborn()) == "finished anyway"
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0

    run(main())
