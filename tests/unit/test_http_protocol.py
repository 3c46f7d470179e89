"""The API's HTTP connections: a request must arrive within its deadlines, a server that
starts to shut down tells the app, and a response's head and body leave in one write.
Driven byte by byte on a hand-made loop and transport, so the deadlines are checked
without waiting for them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from nexus_ssot.api.http_protocol import STATE_KEY, ConnectionRules, HeldHead, HttpProtocol

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
        #: What each call to write or writelines sent (each a system call on a socket).
        self.sends: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write(self, data: bytes) -> None:
        self.written += data
        self.sends.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        joined = b"".join(parts)
        self.written += joined
        self.sends.append(joined)

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


class Turns:
    """``call_soon`` of a loop: the callbacks of the turn, run by ``end_turn``."""

    def __init__(self) -> None:
        self.soon: list[Callable[[], None]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.soon.append(callback)

    def end_turn(self) -> None:
        soon, self.soon = self.soon, []
        for callback in soon:
            callback()


def test_a_head_and_its_body_leave_in_one_write() -> None:
    transport, turns = Transport(), Turns()
    held = HeldHead(transport, turns)  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert transport.sends == []
    held.write(b"{}")
    assert transport.sends == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    turns.end_turn()
    assert len(transport.sends) == 1


def test_a_head_without_a_body_in_its_turn_leaves_at_the_end_of_the_turn() -> None:
    transport, turns = Transport(), Turns()
    held = HeldHead(transport, turns)  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    turns.end_turn()  # a live feed waiting for its first event
    assert transport.sends == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    held.write(b"5\r\nhello\r\n")  # only the head is held: the rest goes as it comes
    held.write(b"0\r\n\r\n")
    assert transport.sends[1:] == [b"5\r\nhello\r\n", b"0\r\n\r\n"]


def test_what_is_held_leaves_before_the_connection_closes() -> None:
    transport, turns = Transport(), Turns()
    held = HeldHead(transport, turns)  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    held.close()
    assert transport.sends == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"]
    assert transport.closed and held.is_closing()
    turns.end_turn()
    assert len(transport.sends) == 1


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


def test_a_response_leaves_the_protocol_in_one_write() -> None:
    async def exchange() -> list[bytes]:
        transport = Transport()
        rules = ConnectionRules(head_timeout=10, body_timeout=60, on_shutdown=lambda: None)
        protocol = HttpProtocol(Config(hello, http="httptools", ws="none", log_level="warning",
                                       access_log=False),
                                ServerState(), {STATE_KEY: rules})
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(HEAD + HEAD)  # two requests, pipelined
        for _ in range(100):  # turns of the loop, not time
            if transport.written.count(b"hello") == 2:
                break
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport.sends

    sends = asyncio.run(exchange())
    assert len(sends) == 2
    for sent in sends:
        assert sent.startswith(b"HTTP/1.1 200 OK\r\n") and sent.endswith(b"\r\n\r\nhello")
