"""The HTTP/1.1 connections the API is served over: uvicorn's httptools protocol, plus two
things uvicorn leaves out.

- Deadlines for reading a request. uvicorn closes a kept-alive connection that stays
  idle, but waits forever for a request that trickles in: a client that sends its head a
  byte at a time (slowloris), or a body that never ends, holds a socket and a file
  descriptor for as long as it likes. Here a request's head must arrive within
  ``head_timeout`` seconds (from the connection's opening, or from the first byte of a
  kept-alive connection's next request) and its body within ``body_timeout`` seconds of
  its head; else the connection is closed, as uvicorn's keep-alive timer closes it.
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
        super().on_headers_complete()
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
