"""The API's HTTP connections: a request must arrive within its deadlines, and a server
that starts to shut down tells the app. Driven byte by byte on a hand-made loop and
transport, so the deadlines are checked without waiting for them."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from nexus_ssot.api.http_protocol import STATE_KEY, ConnectionRules, HttpProtocol

HEAD = b"GET /v1/health HTTP/1.1\r\nHost: ledger\r\n\r\n"


class Timer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay, self.callback, self.cancelled = delay, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """The part of an event loop the protocol uses: timers are kept, not run."""

    def __init__(self) -> None:
        self.timers: list[Timer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        self.timers.append(Timer(delay, callback))
        return self.timers[-1]

    def create_task(self, coroutine: Coroutine[Any, Any, None]) -> Any:
        coroutine.close()  # the app is not what these tests are about

        class Task:
            def add_done_callback(self, callback: Callable[[Any], None]) -> None:
                pass
        return Task()

    def pending(self) -> list[float]:
        """The delays of the timers armed and not cancelled."""
        return [t.delay for t in self.timers if not t.cancelled]

    def expire(self) -> None:
        for timer in [t for t in self.timers if not t.cancelled]:
            timer.cancelled = True
            timer.callback()


class Transport:
    def __init__(self) -> None:
        self.closed = False
        self.written = b""

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write(self, data: bytes) -> None:
        self.written += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    pass


Connection = tuple[HttpProtocol, Loop, Transport, list[str]]


@pytest.fixture()
def connection() -> Connection:
    """A protocol whose connection was just made; the notices the app was given."""
    loop, transport, notices = Loop(), Transport(), []
    rules = ConnectionRules(head_timeout=10, body_timeout=60,
                            on_shutdown=lambda: notices.append("stopping"))
    protocol = HttpProtocol(Config(app, http="httptools", ws="none", log_level="warning"),
                            ServerState(), {STATE_KEY: rules}, _loop=loop)
    protocol.connection_made(transport)
    return protocol, loop, transport, notices


def cut_off_after(seconds: float, loop: Loop, transport: Transport) -> bool:
    """Whether the one deadline pending is ``seconds`` away and closes the connection."""
    if loop.pending() != [seconds]:
        return False
    loop.expire()
    return transport.closed


def test_a_new_connection_has_the_head_timeout_to_send_its_head(connection: Connection) -> None:
    protocol, loop, transport, _ = connection
    assert loop.pending() == [10]
    protocol.data_received(b"GET /v1/health HT")  # the first byte does not reset the clock
    assert cut_off_after(10, loop, transport)


def test_a_complete_request_without_a_body_leaves_no_deadline(connection: Connection) -> None:
    protocol, loop, transport, _ = connection
    protocol.data_received(HEAD)
    assert loop.pending() == []
    assert not transport.closed


def test_a_body_has_the_body_timeout_once_the_head_is_in(connection: Connection) -> None:
    protocol, loop, transport, _ = connection
    protocol.data_received(b"PUT /v1/namespaces/n/entries/k HTTP/1.1\r\nHost: ledger\r\n"
                           b"Content-Length: 10\r\n\r\n{")
    assert loop.pending() == [60]
    protocol.data_received(b'"a": 1} ')
    assert loop.pending() == [60]
    protocol.data_received(b"\n")
    assert loop.pending() == []
    assert not transport.closed


def test_a_kept_alive_connections_next_request_gets_a_new_head_deadline(
        connection: Connection) -> None:
    protocol, loop, transport, _ = connection
    protocol.data_received(HEAD)
    protocol.data_received(b"GET /v1/hea")
    assert cut_off_after(10, loop, transport)


def test_a_lost_connection_leaves_no_deadline(connection: Connection) -> None:
    protocol, loop, _, _ = connection
    protocol.connection_lost(None)
    assert loop.pending() == []


def test_shutting_down_tells_the_app(connection: Connection) -> None:
    protocol, _, transport, notices = connection
    protocol.shutdown()
    assert notices == ["stopping"]
    assert transport.closed  # idle: uvicorn closes it at once
