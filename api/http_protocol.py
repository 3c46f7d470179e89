"""The HTTP/1.1 connections the API is served over: uvicorn's httptools protocol, plus two
things uvicorn leaves out.

- Deadlines for reading a request. uvicorn closes a kept-alive connection that stays
  idle, but waits forever for a request that trickles in: a client that sends its head a
  byte at a time (slowloris), or a body that never ends, holds a socket and a file
  descriptor for as long as it likes. Here a request's head must arrive within
  ``head_timeout`` seconds (from the connection's opening, or from the first byte of a
  kept-alive connection's next request) and its body within ``body_timeout`` seconds of
  its head; else the connection is closed, as uvicorn's keep-alive timer closes it.
- A response's head and its first body part in one write. uvicorn writes the head when
  the app starts its response and the body when it sends it: two ``send`` calls and two
  TCP segments for every response, each a system call on the server and a wake-up of the
  client. Here the head waits for the body's first part, which the app sends in the same
  turn of the event loop, and both leave in one ``writev``; a head the app does not follow
  with a body in that turn (a live feed waiting for its first event) leaves at the end of
  the turn.
- A notice when the server starts to shut down. uvicorn then asks every connection to
  close once its response is complete, and waits; a live feed's response never is, so
  the notice (``on_shutdown``) lets the app end those responses at once.

The app hands the protocol these rules in its lifespan state (under ``STATE_KEY``), so
each uvicorn worker process takes them from the settings it built its app from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

STATE_KEY = "nexus_ssot.connection_rules"


@dataclass(frozen=True)
class ConnectionRules:
    head_timeout: float
    body_timeout: float
    #: Called when the server starts to shut down (once per open connection).
    on_shutdown: Callable[[], None]


class HttpProtocol(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.rules: ConnectionRules = app_state[STATE_KEY]
        self.read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._read_within(self.rules.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._no_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.read_deadline is None:  # a kept-alive connection's next request
            self._read_within(self.rules.head_timeout)

    def on_headers_complete(self) -> None:
        self._no_deadline()
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not before:  # a new request's cycle
            self.cycle.transport = HeldHead(self.transport, self.loop)  # type: ignore[assignment]
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._read_within(self.rules.body_timeout)  # (a WebSocket is no longer ours)

    def on_message_complete(self) -> None:
        self._no_deadline()
        super().on_message_complete()

    def shutdown(self) -> None:
        self.rules.on_shutdown()
        super().shutdown()

    def _read_within(self, seconds: float) -> None:
        self._no_deadline()
        self.read_deadline = self.loop.call_later(seconds, self._too_slow)

    def _no_deadline(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _too_slow(self) -> None:
        # No answer: a request still arriving has no response to carry one, and a request
        # whose body stopped has a route waiting for it, which sees the client disconnect.
        self.read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class HeldHead:
    """A response's transport that holds its first write (the head) until its second (the
    body's first part), and sends both in one ``writelines`` (one ``writev``). A head not
    followed in the same turn of the loop leaves at the end of the turn, or when the
    response closes the connection; every later write goes straight through. The rest of
    a transport's methods are the connection's own."""

    __slots__ = ("_first", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        if self._first:
            self._first = False
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        elif (held := self._held) is not None:
            self._held = None
            self._transport.writelines((held, data))
        else:
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
