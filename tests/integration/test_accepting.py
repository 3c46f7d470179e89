"""Which HTTP worker accepts a connection (ops/accepting.py): one that holds no more
connections than the others accepts at once; one that holds more leaves the connection
to them, and takes it itself when they do not; a worker not accepting counts for
nothing; and the counts are one array across processes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvloop

from nexus_ssot.ops.accepting import NOT_ACCEPTING, UNANSWERED, BalancedListener, ConnectionCounts

Run = Callable[[Coroutine[Any, Any, None]], None]
#: Long enough that a test acting as the other worker always answers within it.
PATIENT = 0.2
#: When the test is the other worker that never answers.
BRIEF = 0.01


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """The workers run on uvloop; the standard loop as well."""
    return asyncio.run if request.param == "asyncio" else uvloop.run


@pytest.fixture()
def counts() -> Iterator[ConnectionCounts]:
    shared = ConnectionCounts.create(2)
    yield shared
    shared.close()


class Protocol:
    """What a connection's protocol offers the listener: uvicorn's graceful ``shutdown``."""

    def __init__(self) -> None:
        self.shut_down = False

    def shutdown(self) -> None:
        self.shut_down = True


class Worker:
    """Slot 0's listener on a loopback socket, holding ``held`` connections already;
    what it accepts is kept (and closed at the end)."""

    def __init__(self, counts: ConnectionCounts, held: int, defer: float) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.protocols: list[Protocol] = []
        #: Cleared: each connection's setting up waits until it is set again.
        self.setting_up = asyncio.Event()
        self.setting_up.set()
        self.listener = BalancedListener(self.sock, counts, 0, self.serve, defer=defer)
        for _ in range(held):
            self.listener.connections.add(object())
        self.clients: list[socket.socket] = []

    async def serve(self, conn: socket.socket) -> tuple[socket.socket, Protocol]:
        self.accepted.append(conn)
        protocol = Protocol()
        self.listener.connections.add(conn)  # (as a protocol adds itself)
        await self.setting_up.wait()  # (a TLS handshake, say)
        self.protocols.append(protocol)
        return conn, protocol

    def connect(self, n: int = 1) -> None:
        """``n`` clients connect (the kernel completes them into the backlog)."""
        for _ in range(n):
            client = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            self.clients.append(client)

    def close(self) -> None:
        self.listener.close()
        for s in [*self.accepted, *self.clients, self.sock]:
            s.close()


@contextmanager
def worker(counts: ConnectionCounts, held: int, defer: float) -> Iterator[Worker]:
    w = Worker(counts, held, defer)
    try:
        w.listener.start(asyncio.get_running_loop(), backlog=64)
        yield w
    finally:
        w.close()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def set_in_a_child(counts: ConnectionCounts, slot: int, count: int) -> None:
    """``count`` written at ``slot`` by another process, handed the counts' fd (as serve
    hands it to each worker)."""
    code = ("import sys; from nexus_ssot.ops.accepting import ConnectionCounts;"
            " ConnectionCounts(int(sys.argv[1])).set(int(sys.argv[2]), int(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, str(counts.fd), str(slot), str(count)],
                   pass_fds=(counts.fd,), check=True, timeout=60)


def test_counts_begin_with_no_worker_accepting_and_are_shared_with_a_child(
        counts: ConnectionCounts) -> None:
    assert [counts.get(s) for s in range(counts.slots)] == [NOT_ACCEPTING, NOT_ACCEPTING]
    assert counts.fewest_elsewhere(0) is None
    set_in_a_child(counts, 1, 7)
    assert counts.get(1) == 7
    assert counts.elsewhere(0) == (7,) and counts.fewest_elsewhere(0) == 7
    assert counts.fewest_elsewhere(1) is None  # slot 0 does not accept


def test_counts_without_a_memfd_are_an_unlinked_file_shared_as_well(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "memfd_create")  # (not Linux)
    shared = ConnectionCounts.create(2)
    try:
        assert not os.get_inheritable(shared.fd)
        set_in_a_child(shared, 0, 3)
        assert (shared.get(0), shared.get(1)) == (3, NOT_ACCEPTING)
    finally:
        shared.close()


def test_a_worker_holding_no_more_than_the_others_accepts_at_once(
        run: Run, counts: ConnectionCounts) -> None:
    async def main() -> None:
        counts.set(1, 3)
        with worker(counts, held=0, defer=PATIENT) as w:
            assert counts.get(0) == 0  # started: it accepts
            w.connect(4)  # 0, 1, 2, 3 held: never more than the other's 3
            await until(lambda: len(w.accepted) == 4)

    run(main())


def test_a_worker_that_is_not_accepting_counts_for_nothing(
        run: Run, counts: ConnectionCounts) -> None:
    async def main() -> None:
        counts.set(1, NOT_ACCEPTING)  # stopped, exited, or not started yet
        with worker(counts, held=50, defer=PATIENT) as w:
            w.connect(2)
            await until(lambda: len(w.accepted) == 2)
        assert counts.get(0) == NOT_ACCEPTING  # closed: it accepts no more

    run(main())


def test_a_worker_holding_more_leaves_the_connection_to_the_others(
        run: Run, counts: ConnectionCounts) -> None:
    async def main() -> None:
        counts.set(1, 0)
        with worker(counts, held=1, defer=PATIENT) as w:
            listener = w.listener
            w.connect()
            await until(lambda: listener._paused is not None)  # it stepped aside
            # the test is the other worker: the connection waited for it to accept
            # (a timeout keeps the shared file non-blocking, as the listener needs it)
            with socket.socket(fileno=os.dup(w.sock.fileno())) as other:
                other.settimeout(5)
                taken, _ = other.accept()
                taken.close()
            counts.set(1, 1)
            await until(lambda: listener._paused is None, timeout=PATIENT * 10)
            assert w.accepted == []  # it chose again, and found nothing waiting
            w.connect()  # 1 held each now: it accepts the next itself
            await until(lambda: len(w.accepted) == 1)

    run(main())


def test_a_worker_takes_what_the_others_leave_waiting(
        run: Run, counts: ConnectionCounts) -> None:
    async def main() -> None:
        counts.set(1, 0)  # an other worker that accepts nothing (busy, stuck)
        with worker(counts, held=1, defer=BRIEF) as w:
            w.connect()
            await until(lambda: len(w.accepted) == 1)  # after stepping aside once
            w.connect(5)
            # one at each unanswered turn, then everything waiting
            await until(lambda: len(w.accepted) == 6)
            assert w.listener._unanswered < UNANSWERED

    run(main())


def test_the_count_follows_the_connections_and_a_closed_listener_stays_out(
        run: Run, counts: ConnectionCounts) -> None:
    async def main() -> None:
        counts.set(1, 9)
        with worker(counts, held=2, defer=PATIENT) as w:
            w.connect()
            await until(lambda: len(w.accepted) == 1)
            await until(lambda: counts.get(0) == 3)  # (once set up: counted once)
            w.listener.connections.discard(w.accepted[0])  # its protocol, on closing
            assert counts.get(0) == 2  # at once: no other worker waits on a stale count
            w.listener.close()
            w.listener.connections.discard(next(iter(w.listener.connections)))
            assert counts.get(0) == NOT_ACCEPTING

    run(main())


def test_a_turn_with_nothing_waiting_is_not_one_the_others_left_unanswered(
        run: Run, counts: ConnectionCounts) -> None:
    """(else turns of bursts long past would add up, and the next burst's first
    connection left to the others would make this worker take everything waiting)"""
    async def main() -> None:
        counts.set(1, 0)
        with worker(counts, held=1, defer=PATIENT) as w:
            for _ in range(UNANSWERED):  # woken, and the connection was taken elsewhere
                w.listener._stepped_aside(counts.elsewhere(0))
                assert w.listener._unanswered == 0
            assert w.accepted == []

    run(main())


def test_a_connection_set_up_after_the_listener_closed_is_asked_to_shut_down(
        run: Run, counts: ConnectionCounts) -> None:
    """The server asks the connections it holds to finish when it begins to shut down;
    one accepted before and set up after would otherwise serve its client's next
    requests for as long as they came, and the worker would wait for them to stop."""
    async def main() -> None:
        counts.set(1, NOT_ACCEPTING)
        with worker(counts, held=0, defer=PATIENT) as w:
            w.connect()
            await until(lambda: len(w.accepted) == 1)  # set up at once, before closing
            w.setting_up.clear()
            w.connect()
            await until(lambda: len(w.accepted) == 2)  # accepted, still being set up
            w.listener.close()
            w.setting_up.set()
            await until(lambda: len(w.protocols) == 2)
            await until(lambda: w.protocols[1].shut_down)
            assert not w.protocols[0].shut_down  # (the server's own shutdown asks it)

    run(main())
