"""A follower's thread runs at the priority it is given, and only it does."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from nexus_ssot.ops.loop_thread import LoopThread, lower_priority


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _nice_on_a_loop_thread(nice: int) -> int:
    seen: list[int] = []

    async def run(stop: asyncio.Event) -> None:
        seen.append(_own_nice())

    thread = LoopThread("test-nice", run, nice=nice)
    thread.start()
    thread.thread.join(10)
    thread.loop.close()
    assert not thread.thread.is_alive()
    return seen[0]


@pytest.mark.parametrize("nice", [0, 3, 10])
def test_the_thread_runs_that_much_lower_and_the_others_do_not(nice: int) -> None:
    before = _own_nice()
    assert _nice_on_a_loop_thread(nice) == min(19, before + nice)
    assert _own_nice() == before  # the calling thread, and the process, keep theirs


def test_the_value_stops_at_19() -> None:
    seen: list[int] = []

    def lowered_twice() -> None:
        lower_priority(15)
        lower_priority(15)
        seen.append(_own_nice())

    thread = threading.Thread(target=lowered_twice)
    thread.start()
    thread.join(10)
    assert seen == [19]


def test_a_refusal_leaves_the_thread_running(monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError("not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    assert _nice_on_a_loop_thread(5) == _own_nice()
    assert "keeps its priority: not permitted" in caplog.text
