"""Per-identity rate limiting: a token bucket per caller, ``429`` with ``Retry-After``, and
the ``RateLimit-*`` header fields of draft-ietf-httpapi-ratelimit-headers-06 on every answer.

Who shares a bucket (the bucket key):

- an authenticated caller: ``user:<subject>``. Every token (and every way of signing in) of
  one user shares the user's bucket, so minting more tokens buys no more requests. A policy
  limit naming ``token:<id>`` sets the rate of the requests made with that token, still
  counted against the user's one bucket. A trusted proxy acting for others (``X-Actor``)
  is one caller: give it a policy limit of its own.
- a request without an identity: ``addr:<ip>`` (an IPv6 address by its /64, the block one
  host is usually given). Behind a reverse proxy every such request shares the proxy's
  address. Authentication refuses these requests anyway; it calls ``RateLimiter.check``
  with no identity so that guessing credentials is limited too.
- auth off (the ``anonymous`` method, loopback only): never limited.

The limit: ``limits_for(identity)`` (wired to ``PolicySet.rate_limit``) when it names one,
else the settings' ``rate_limit_per_second`` and ``rate_limit_burst`` (0 per second: no
limit); for addresses ``rate_limit_anonymous_*``. A burst below 1 counts as 1.

Each HTTP worker process keeps its own buckets: with W workers a client whose connections
land on different workers gets up to W times its limit (uvicorn spreads connections, not
requests, so one keep-alive connection stays on one worker). Memory is bounded: at most
``rate_limit_max_keys`` buckets, the least recently used dropped first; a bucket unused
for ``burst / per_second`` seconds is full again, so dropping it forgets nothing.

Header values (integers): ``RateLimit-Limit`` the burst, ``RateLimit-Remaining`` the whole
tokens left, ``RateLimit-Reset`` the seconds until the bucket is full again,
``RateLimit-Policy`` ``<burst>;w=<seconds to refill it from empty>``. A request no limit
applies to carries none of them; ``/v1/health`` and ``/v1/live`` are never counted.

Not thread-safe: the limiter is used from the worker's event loop only.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexus_ssot.access.identity import Identity
from nexus_ssot.access.policy import RateLimit as PolicyLimit
from nexus_ssot.ledger.settings import Settings

from .errors import problem

log = logging.getLogger(__name__)

#: Tolerance for float refill arithmetic (0.7 s at 10/s is 7.000000000000001 tokens).
_EPSILON = 1e-9
#: Paths never counted nor refused.
EXEMPT_PATHS = frozenset({"/v1/health", "/v1/live"})
#: The identity method of every request when auth is off (``access.identity.ANONYMOUS``).
AUTH_OFF_METHOD = "anonymous"

LimitsFor = Callable[[Identity], PolicyLimit | None]
OnLimited = Callable[[Scope, Identity | None, str], None]


class Take(NamedTuple):
    """What one ``TokenBucket.take`` decided."""

    allowed: bool
    #: Whole tokens left after this request.
    remaining: int
    #: Seconds until the bucket is full again.
    reset_seconds: float
    #: Seconds until the next request would be allowed (0 when this one was).
    retry_after_seconds: float


class TokenBucket:
    """``burst`` tokens at most, refilled at ``per_second``; a request takes one. Pure: the
    time is always given. Starts full."""

    __slots__ = ("burst", "per_second", "tokens", "updated")

    def __init__(self, per_second: float, burst: float, now: float | None = None) -> None:
        self._check(per_second, burst)
        self.per_second = float(per_second)
        self.burst = float(burst)
        self.tokens = self.burst
        self.updated = now

    @staticmethod
    def _check(per_second: float, burst: float) -> None:
        if not per_second > 0:
            raise ValueError(f"a token bucket refills at more than 0 per second, not {per_second}")
        if not burst >= 1:
            raise ValueError(f"a token bucket holds at least 1 token, not {burst}")

    def _refill(self, now: float) -> None:
        if self.updated is None or now <= self.updated:
            # First use, or the clock stood still or stepped back: nothing refills.
            self.updated = now if self.updated is None else self.updated
            return
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now

    def retune(self, per_second: float, burst: float, now: float) -> None:
        """A new rate or burst (the policy changed): what has refilled so far at the old
        rate stays, up to the new burst."""
        self._check(per_second, burst)
        self._refill(now)
        self.per_second, self.burst = float(per_second), float(burst)
        self.tokens = min(self.tokens, self.burst)

    def take(self, now: float) -> Take:
        self._refill(now)
        allowed = self.tokens >= 1 - _EPSILON
        if allowed:
            self.tokens = max(0.0, self.tokens - 1)
        retry_after = 0.0 if allowed else (1 - self.tokens) / self.per_second
        return Take(allowed, math.floor(self.tokens + _EPSILON),
                    max(0.0, self.burst - self.tokens) / self.per_second, retry_after)


@dataclass(frozen=True)
class Verdict:
    """What the limiter decided for one request; ``key`` is None when no limit applies."""

    allowed: bool
    key: str | None = None
    per_second: float = 0.0
    #: The header values (integer seconds, whole requests).
    limit: int = 0
    remaining: int = 0
    reset: int = 0
    retry_after: int = 0

    @property
    def limited(self) -> bool:
        """Whether a limit applies at all (and so whether the headers are sent)."""
        return self.key is not None

    @property
    def window(self) -> int:
        """Seconds to refill the whole burst: the ``w`` of ``RateLimit-Policy``."""
        return max(1, math.ceil(self.limit / self.per_second)) if self.per_second else 0

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The ``RateLimit-*`` fields (and ``Retry-After`` when refused); none when no
        limit applies."""
        if not self.limited:
            return []
        fields = [(b"ratelimit-limit", str(self.limit).encode()),
                  (b"ratelimit-remaining", str(self.remaining).encode()),
                  (b"ratelimit-reset", str(self.reset).encode()),
                  (b"ratelimit-policy", f"{self.limit};w={self.window}".encode())]
        if not self.allowed:
            fields.append((b"retry-after", str(self.retry_after).encode()))
        return fields


UNLIMITED = Verdict(allowed=True)


def address_key(source: str | None) -> str:
    """The bucket of requests without an identity from ``source``: ``addr:<ip>``, an IPv6
    address by its /64."""
    if not source:
        return "addr:unknown"
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return f"addr:{source}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"addr:{ip.ipv4_mapped}"
        return f"addr:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"addr:{ip}"


def source_address(scope: Scope) -> str | None:
    """The peer address of the connection (uvicorn's ``--forwarded-allow-ips`` decides
    whether a proxy's ``X-Forwarded-For`` replaces it)."""
    client = scope.get("client")
    return str(client[0]) if client else None


class RateLimiter:
    """Token buckets by caller (see the module's docstring), at most ``max_keys`` of them."""

    def __init__(self, *, per_second: float = 100, burst: float = 200,
                 anonymous_per_second: float = 20, anonymous_burst: float = 40,
                 max_keys: int = 100_000, limits_for: LimitsFor | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys}")
        self.default = _limit(per_second, burst)
        self.anonymous = _limit(anonymous_per_second, anonymous_burst)
        self.max_keys = max_keys
        self.limits_for = limits_for
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings, limits_for: LimitsFor | None = None,
                      clock: Callable[[], float] = time.monotonic) -> RateLimiter:
        return cls(per_second=settings.rate_limit_per_second,
                   burst=settings.rate_limit_burst,
                   anonymous_per_second=settings.rate_limit_anonymous_per_second,
                   anonymous_burst=settings.rate_limit_anonymous_burst,
                   max_keys=settings.rate_limit_max_keys, limits_for=limits_for, clock=clock)

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def rule_for(self, identity: Identity | None, source: str | None
                 ) -> tuple[str, tuple[float, float]] | None:
        """The bucket key and (per second, burst) for a request; None: not limited."""
        if identity is None:
            return None if self.anonymous is None else (address_key(source), self.anonymous)
        if identity.method == AUTH_OFF_METHOD:
            return None
        key = f"user:{identity.subject}"
        given = self.limits_for(identity) if self.limits_for is not None else None
        limit = self.default if given is None else _limit(given.per_second, given.burst)
        return None if limit is None else (key, limit)

    def check(self, identity: Identity | None, source: str | None,
              now: float | None = None) -> Verdict:
        """Count one request of ``identity`` (None: not authenticated, counted by
        ``source``, the peer address) at ``now`` (default: the limiter's clock)."""
        rule = self.rule_for(identity, source)
        if rule is None:
            return UNLIMITED
        key, (per_second, burst) = rule
        now = self.clock() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(per_second, burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            if (bucket.per_second, bucket.burst) != (per_second, burst):
                bucket.retune(per_second, burst, now)
        taken = bucket.take(now)
        return Verdict(taken.allowed, key, per_second, limit=math.floor(burst),
                       remaining=taken.remaining, reset=math.ceil(taken.reset_seconds),
                       retry_after=max(1, math.ceil(taken.retry_after_seconds)))


def _limit(per_second: float, burst: float) -> tuple[float, float] | None:
    if per_second < 0:
        raise ValueError(f"a rate limit is 0 (none) or more per second, not {per_second}")
    return None if per_second == 0 else (float(per_second), max(1.0, float(burst)))


def too_many_requests(scope: Scope, verdict: Verdict) -> Response:
    """The ``429`` problem+json answer to a refused request (an ASGI app: call it with
    ``scope, receive, send``), with ``Retry-After`` and the ``RateLimit-*`` fields."""
    headers = {name.decode(): value.decode() for name, value in verdict.headers()}
    detail = (f"too many requests: {verdict.key} may make {verdict.limit} at once and "
              f"{verdict.per_second:g} per second (counted by each server process); "
              f"retry in {verdict.retry_after} s")
    return problem(Request(scope), 429, "rate_limited", detail, headers=headers)


class RateLimit:
    """ASGI middleware counting each HTTP request against its caller's bucket. It runs
    inside authentication, reading the ``Identity`` at ``scope["state"]["identity"]``
    (absent: counted by source address). Refused: ``429`` and ``on_limited(scope,
    identity, source)`` (for the access log). The verdict is left at
    ``scope["state"]["rate_limit"]``."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, *,
                 on_limited: OnLimited | None = None,
                 exempt_paths: Iterable[str] = EXEMPT_PATHS) -> None:
        self.app = app
        self.limiter = limiter
        self.on_limited = on_limited
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        identity = state.get("identity")
        source = source_address(scope)
        verdict = self.limiter.check(identity, source)
        state["rate_limit"] = verdict
        if not verdict.allowed:
            if self.on_limited is not None:
                try:
                    self.on_limited(scope, identity, source or "")
                except Exception:  # a failing log hook must not turn the 429 into a 500
                    log.exception("the on_limited hook failed")
            await too_many_requests(scope, verdict)(scope, receive, send)
            return
        fields = verdict.headers()
        if not fields:
            await self.app(scope, receive, send)
            return

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *fields]
            await send(message)

        await self.app(scope, receive, send_with_fields)
