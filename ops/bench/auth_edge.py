"""Step (p), in process: the HTTP edge of one request with auth off and on, without a
network or a database. The server's own middlewares (``CorrelationId``, ``Authenticate``,
``RateLimit``) and its app-wide ``authorize`` dependency, as ``app.py`` stacks them,
around an endpoint that only answers 200: a GET of one entry of the bench's namespace by
the HTTP step's caller (``auth_micro.BENCH_SUBJECT``, its token, the ``POLICY_RULES``
rules), three ways:

- ``off``: ``SSOT_AUTH=off`` (every request the anonymous administrator);
- ``on``: auth on, rate limiting off (``SSOT_RATE_LIMIT_PER_SECOND=0``);
- ``on_limited``: auth on, rate limiting on at a limit never reached (its bucket and
  ``RateLimit-*`` headers on every answer, as by default).

What the difference costs a request, free of what a busy machine does to an HTTP
measurement. The three take turns in blocks of ``BLOCK`` calls; each call is timed on
the wall clock and the thread's CPU clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, Literal, cast

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from nexus_ssot.api.access_state import AccessState
from nexus_ssot.api.app import CorrelationId
from nexus_ssot.api.authentication import Authenticate, Authenticator
from nexus_ssot.api.guard import authorize
from nexus_ssot.api.rate_limit import RateLimit, RateLimiter
from nexus_ssot.api.service import Service
from nexus_ssot.ledger.settings import Settings

from .auth_micro import BENCH_SUBJECT, access_rows, make_tokens, policy_documents, quantiles_us
from .measuring import NAMESPACE

EDGE_TOKENS = 100
WARMUP = 2000
BLOCK = 500  # calls per turn
_ROUTE = SimpleNamespace(path="/v1/namespaces/{namespace}/entries/{key:path}")
_SIDES: dict[str, tuple[Literal["on", "off"], float]] = {
    "off": ("off", 0.0), "on": ("on", 0.0), "on_limited": ("on", 1_000_000.0)}


async def _endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    await authorize(Request(scope, receive))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"etag", b'"7"')]})
    await send({"type": "http.response.body", "body": b"{}"})


class _Side:
    """One way of running the edge: its app, its request headers, what it answered."""

    def __init__(self, auth: Literal["on", "off"], per_second: float, rows: list[Any],
                 token: str) -> None:
        settings = Settings(auth=auth, rate_limit_per_second=per_second,
                            rate_limit_burst=max(1.0, per_second))
        # Loaded once, here; never re-read (there is no store behind it: a re-read would
        # fail, log its traceback and land on the request that asked for it).
        state = AccessState(cast(Any, None), refresh_seconds=3600.0)
        state.load(rows, position=1)
        state.read_at = time.monotonic()  # as read now
        # What the edge uses of the service; the rest (writer, pool, …) stays None.
        given: dict[str, Any] = {"settings": settings, "access": state,
                 "authenticator": Authenticator(settings, state)}
        fields: dict[str, Any] = {f.name: given.get(f.name)
                                  for f in dataclasses.fields(Service) if f.init}
        service = Service(**fields)
        limiter = RateLimiter.from_settings(settings, limits_for=state.policies.rate_limit)
        self.app = CorrelationId(Authenticate(RateLimit(_endpoint, limiter), limiter))
        self.holder = SimpleNamespace(state=SimpleNamespace(service=service))
        self.headers = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"bench")]
        if auth == "on":
            self.headers.append((b"authorization", f"Bearer {token}".encode()))
        self.statuses: dict[int, int] = {}
        self.wall: list[int] = []
        self.cpu: list[int] = []

    async def receive(self) -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.statuses[message["status"]] = self.statuses.get(message["status"], 0) + 1

    def scope(self, n: int) -> Scope:
        key = f"k-{n % 16}"
        return {"type": "http", "method": "GET", "path": f"/v1/namespaces/{NAMESPACE}/"
                f"entries/{key}", "raw_path": b"", "query_string": b"",
                "headers": self.headers, "app": self.holder, "client": ("127.0.0.1", 40000),
                "route": _ROUTE, "path_params": {"namespace": NAMESPACE, "key": key}}

    async def run(self, first: int, calls: int, timed: bool = True) -> None:
        wall_clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
        for n in range(first, first + calls):
            request = self.scope(n)
            start, start_cpu = wall_clock(), cpu_clock()
            await self.app(request, self.receive, self.send)
            if timed:
                self.cpu.append(cpu_clock() - start_cpu)
                self.wall.append(wall_clock() - start)


async def _measure(requests: int) -> dict[str, Any]:
    records, tokens = make_tokens(random.Random(5), EDGE_TOKENS, datetime.now(UTC))
    token = next(t for r, t in zip(records, tokens, strict=True) if r.subject == BENCH_SUBJECT)
    rows = access_rows(policy_documents(), records)
    sides = {name: _Side(auth, per_second, rows, token)
             for name, (auth, per_second) in _SIDES.items()}
    for side in sides.values():
        await side.run(0, WARMUP, timed=False)
    # Blocks of BLOCK calls, the sides taking turns in the order A B C, C B A, …: a drift
    # of the machine's load falls on all of them alike.
    order = list(sides.values())
    for block, first in enumerate(range(0, requests, BLOCK)):
        for side in order if block % 2 == 0 else order[::-1]:
            await side.run(first, min(BLOCK, requests - first))
    return {name: {**quantiles_us(side.wall, side.cpu),
                   "statuses": {str(k): v for k, v in side.statuses.items()}}
            for name, side in sides.items()}


def run_edge(requests: int) -> dict[str, Any]:
    """The three sides (see the module's docstring), ``requests`` calls each."""
    return asyncio.run(_measure(requests))
