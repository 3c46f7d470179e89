"""Rate limiting (api/rate_limit.py): the token bucket's arithmetic under an injected clock,
the limiter's buckets (per user, per address, bounded, overridden by policy, off at 0), and
the middleware in-process (httpx's ASGITransport opens no socket)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from nexus_ssot.access.identity import ANONYMOUS, Identity
from nexus_ssot.access.policy import PolicySet, check_policy
from nexus_ssot.access.policy import RateLimit as PolicyLimit
from nexus_ssot.api.app import CorrelationId
from nexus_ssot.api.rate_limit import (
    RateLimit,
    RateLimiter,
    TokenBucket,
    Verdict,
    address_key,
)
from nexus_ssot.ledger.settings import Settings

ALICE = Identity("alice", token_id="t1")
ALICE_AGAIN = Identity("alice", token_id="t2", method="token")
BOB = Identity("bob", token_id="t3")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the bucket --------------------------------------------------------------------------


def test_a_bucket_starts_full_and_allows_its_burst_at_once() -> None:
    bucket = TokenBucket(per_second=10, burst=3, now=0.0)
    takes = [bucket.take(0.0) for _ in range(4)]
    assert [t.allowed for t in takes] == [True, True, True, False]
    assert [t.remaining for t in takes] == [2, 1, 0, 0]
    assert takes[0].retry_after_seconds == 0
    assert takes[3].retry_after_seconds == pytest.approx(0.1)  # one token at 10/s
    assert takes[3].reset_seconds == pytest.approx(0.3)  # three tokens to full


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(per_second=2, burst=4, now=0.0)
    for _ in range(4):
        assert bucket.take(0.0).allowed
    assert not bucket.take(0.25).allowed  # half a token
    retry = bucket.take(0.25).retry_after_seconds
    assert retry == pytest.approx(0.25)
    assert bucket.take(0.25 + retry).allowed  # exactly when it said
    assert not bucket.take(0.5).allowed
    after_a_long_pause = bucket.take(100.0)
    assert after_a_long_pause.allowed
    assert after_a_long_pause.remaining == 3  # full (4), less this request
    assert after_a_long_pause.reset_seconds == pytest.approx(0.5)


def test_a_refused_request_takes_no_token() -> None:
    bucket = TokenBucket(per_second=1, burst=1, now=0.0)
    assert bucket.take(0.0).allowed
    for _ in range(10):
        assert not bucket.take(0.5).allowed
    assert bucket.take(1.0).allowed


def test_float_refill_does_not_refuse_a_token_earned_exactly() -> None:
    bucket = TokenBucket(per_second=10, burst=7, now=0.0)
    for _ in range(7):
        bucket.take(0.0)
    assert bucket.take(0.7).remaining == 6  # 7.000000000000001 tokens, one taken
    bucket = TokenBucket(per_second=10, burst=1, now=0.0)
    bucket.take(0.0)
    assert bucket.take(0.1 + 0.2 - 0.2).allowed  # 0.10000000000000003 s: one token


def test_a_clock_stepping_back_refills_nothing() -> None:
    bucket = TokenBucket(per_second=1, burst=2, now=10.0)
    bucket.take(10.0)
    bucket.take(10.0)
    assert not bucket.take(5.0).allowed
    assert not bucket.take(10.5).allowed
    assert bucket.take(11.0).allowed


def test_a_retuned_bucket_keeps_what_it_had_up_to_the_new_burst() -> None:
    bucket = TokenBucket(per_second=1, burst=10, now=0.0)
    bucket.retune(per_second=1, burst=2, now=0.0)
    assert [bucket.take(0.0).allowed for _ in range(3)] == [True, True, False]
    bucket.retune(per_second=100, burst=50, now=0.0)
    assert bucket.take(0.1).remaining == 9  # 10 refilled at the new rate, 1 taken


@pytest.mark.parametrize(("per_second", "burst"), [(0, 10), (-1, 10), (1, 0.5)])
def test_a_bucket_refuses_a_rate_it_cannot_keep(per_second: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(per_second, burst)


# --- the limiter -------------------------------------------------------------------------


def limiter(**kwargs: Any) -> RateLimiter:
    options: dict[str, Any] = {"per_second": 1, "burst": 2, "anonymous_per_second": 1,
                               "anonymous_burst": 1, "clock": Clock()}
    return RateLimiter(**{**options, **kwargs})


def test_each_user_has_a_bucket_of_its_own_shared_by_its_tokens() -> None:
    limits = limiter()
    assert limits.check(ALICE, "10.0.0.1", 0.0).allowed
    assert limits.check(ALICE_AGAIN, "10.0.0.2", 0.0).allowed  # another token, same user
    refused = limits.check(ALICE, "10.0.0.1", 0.0)
    assert not refused.allowed and refused.key == "user:alice"
    bob = limits.check(BOB, "10.0.0.1", 0.0)  # Bob, from Alice's address, is untouched
    assert bob.allowed and bob.key == "user:bob" and bob.remaining == 1
    assert limits.check(ALICE, "10.0.0.1", 1.0).allowed


def test_requests_without_identity_are_counted_by_address() -> None:
    limits = limiter(anonymous_burst=2)
    assert limits.check(None, "192.0.2.1", 0.0).allowed
    assert limits.check(None, "192.0.2.1", 0.0).allowed
    refused = limits.check(None, "192.0.2.1", 0.0)
    assert not refused.allowed and refused.key == "addr:192.0.2.1"
    assert refused.limit == 2 and refused.retry_after == 1
    assert limits.check(None, "192.0.2.2", 0.0).allowed
    assert limits.check(ALICE, "192.0.2.1", 0.0).allowed  # the address is not the user


def test_an_ipv6_host_is_counted_by_its_64_and_a_mapped_ipv4_by_its_ipv4() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == "addr:2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:bbbb::9") == "addr:2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.7") == "addr:192.0.2.7"
    assert address_key("192.0.2.7") == "addr:192.0.2.7"
    assert address_key(None) == "addr:unknown"
    assert address_key("unix-socket") == "addr:unix-socket"


def test_the_limiter_keeps_at_most_max_keys_buckets_dropping_the_least_recent() -> None:
    limits = limiter(max_keys=3, anonymous_burst=1)
    for i in range(3):
        limits.check(None, f"192.0.2.{i}", 0.0)
    limits.check(None, "192.0.2.0", 0.0)  # .0 is used again: .1 is now the oldest
    limits.check(None, "192.0.2.9", 0.0)
    assert len(limits) == 3
    assert "addr:192.0.2.1" not in limits
    assert all(f"addr:192.0.2.{i}" in limits for i in (0, 2, 9))
    assert not limits.check(None, "192.0.2.0", 0.0).allowed  # kept: still empty
    assert limits.check(None, "192.0.2.1", 0.0).allowed  # dropped = full again


def test_a_policy_limit_overrides_the_default_for_its_identity() -> None:
    def limits_for(identity: Identity) -> PolicyLimit | None:
        return PolicyLimit(per_second=5, burst=5) if identity.subject == "alice" else None

    limits = limiter(limits_for=limits_for)
    alice = [limits.check(ALICE, None, 0.0) for _ in range(6)]
    assert [v.allowed for v in alice] == [True] * 5 + [False]
    assert alice[0].limit == 5 and alice[5].retry_after == 1
    bob = [limits.check(BOB, None, 0.0).allowed for _ in range(3)]
    assert bob == [True, True, False]  # the default: a burst of 2


def test_policy_limits_are_wired_from_a_policy_set() -> None:
    document = check_policy({"rules": [], "rate_limits": [
        {"subjects": ["group:ci"], "per_second": 50, "burst": 3},
        {"subjects": ["token:t3"], "per_second": 1, "burst": 0.5}]})
    policies = PolicySet({"limits": document})
    limits = limiter(per_second=0, limits_for=policies.rate_limit)
    ci = Identity("robot", groups=frozenset({"ci"}))
    assert [limits.check(ci, None, 0.0).allowed for _ in range(4)] == [True] * 3 + [False]
    assert limits.check(ALICE, None, 0.0) == Verdict(True)  # no policy, no default
    # A burst below one request counts as one (else the token could never be used).
    assert [limits.check(BOB, None, 0.0).allowed for _ in range(2)] == [True, False]


def test_a_policy_change_retunes_the_bucket() -> None:
    current = {"limit": PolicyLimit(per_second=1, burst=1)}
    limits = limiter(limits_for=lambda _identity: current["limit"])
    assert limits.check(ALICE, None, 0.0).allowed
    assert not limits.check(ALICE, None, 0.0).allowed
    current["limit"] = PolicyLimit(per_second=100, burst=100)
    # Until the change is seen, the old rate refilled: half a token.
    assert not limits.check(ALICE, None, 0.5).allowed
    after = limits.check(ALICE, None, 0.6)  # then 10 more at the new rate
    assert after.allowed and after.remaining == 9 and after.limit == 100


def test_zero_per_second_means_no_limit() -> None:
    limits = limiter(per_second=0, anonymous_per_second=0)
    for _ in range(1000):
        assert limits.check(ALICE, "192.0.2.1", 0.0) == Verdict(True)
        assert limits.check(None, "192.0.2.1", 0.0) == Verdict(True)
    assert len(limits) == 0
    assert Verdict(True).headers() == []


def test_auth_off_is_never_limited() -> None:
    limits = limiter()
    assert all(limits.check(ANONYMOUS, "127.0.0.1", 0.0).allowed for _ in range(100))


def test_the_limiter_reads_its_settings_and_its_clock() -> None:
    settings = Settings(rate_limit_per_second=2, rate_limit_burst=3,
                        rate_limit_anonymous_per_second=0, rate_limit_max_keys=7)
    clock = Clock()
    limits = RateLimiter.from_settings(settings, clock=clock)
    assert (limits.default, limits.anonymous, limits.max_keys) == ((2.0, 3.0), None, 7)
    assert [limits.check(ALICE, None).allowed for _ in range(4)] == [True] * 3 + [False]
    clock.now += 0.5
    assert limits.check(ALICE, None).allowed
    # the declared defaults (Settings() would read the environment, which a test run sets)
    defaults = {name: Settings.model_fields[name].default for name in (
        "rate_limit_per_second", "rate_limit_burst", "rate_limit_anonymous_per_second",
        "rate_limit_anonymous_burst", "rate_limit_max_keys")}
    assert list(defaults.values()) == [100, 200, 20, 40, 100_000]


def test_the_headers_follow_the_draft() -> None:
    limits = limiter(per_second=10, burst=25)
    first = limits.check(ALICE, None, 0.0)
    assert dict(first.headers()) == {b"ratelimit-limit": b"25", b"ratelimit-remaining": b"24",
                                     b"ratelimit-reset": b"1", b"ratelimit-policy": b"25;w=3"}
    for _ in range(24):
        limits.check(ALICE, None, 0.0)
    refused = limits.check(ALICE, None, 0.01)
    assert dict(refused.headers()) == {
        b"ratelimit-limit": b"25", b"ratelimit-remaining": b"0", b"ratelimit-reset": b"3",
        b"ratelimit-policy": b"25;w=3", b"retry-after": b"1"}  # 0.09 s rounds up to 1


# --- the middleware ----------------------------------------------------------------------


class FakeAuthentication:
    """Stands in for the coordinator's authentication: ``X-User`` names the identity."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = dict(scope.get("headers", [])).get(b"x-user")
        if user is not None:
            scope.setdefault("state", {})["identity"] = Identity(user.decode())
        await self.app(scope, receive, send)


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def serve(limits: RateLimiter, denials: list[tuple[str, str | None, str]]) -> Starlette:
    def on_limited(scope: Scope, identity: Identity | None, source: str) -> None:
        denials.append((scope["path"], identity.subject if identity else None, source))

    return Starlette(
        routes=[Route("/v1/health", hello), Route("/v1/things", hello)],
        middleware=[Middleware(CorrelationId), Middleware(FakeAuthentication),
                    Middleware(RateLimit, limiter=limits, on_limited=on_limited)])


def requests(app: Starlette, calls: Sequence[tuple[str, Mapping[str, str]]],
             client: tuple[str, int] = ("192.0.2.1", 4000)) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://ssot") as http:
            return [await http.get(path, headers=headers) for path, headers in calls]

    return asyncio.run(run())


def test_the_middleware_answers_429_with_the_headers_and_a_problem() -> None:
    clock = Clock()
    denials: list[tuple[str, str | None, str]] = []
    app = serve(limiter(per_second=0.5, burst=2, clock=clock), denials)
    alice = {"x-user": "alice", "x-correlation-id": "req-1"}
    ok, ok_too, refused, bob = requests(app, [
        ("/v1/things", alice), ("/v1/things", alice), ("/v1/things", alice),
        ("/v1/things", {"x-user": "bob"})])
    assert (ok.status_code, ok.text) == (200, "hello")
    assert {k: ok.headers[k] for k in ("ratelimit-limit", "ratelimit-remaining",
                                       "ratelimit-reset", "ratelimit-policy")} == {
        "ratelimit-limit": "2", "ratelimit-remaining": "1", "ratelimit-reset": "2",
        "ratelimit-policy": "2;w=4"}
    assert "retry-after" not in ok.headers
    assert ok_too.headers["ratelimit-remaining"] == "0"
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "2"  # a token every 2 s
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-reset"] == "4"
    assert refused.headers["x-correlation-id"] == "req-1"
    body = orjson.loads(refused.content)
    assert body["code"] == "rate_limited" and body["status"] == 429
    assert body["type"] == "https://nexus-ssot.dev/problems/rate_limited"
    assert body["title"] == "Too Many Requests"
    assert body["instance"] == "/v1/things" and body["correlation_id"] == "req-1"
    assert "user:alice" in body["detail"] and "retry in 2 s" in body["detail"]
    assert bob.status_code == 200
    assert denials == [("/v1/things", "alice", "192.0.2.1")]
    clock.now += 2
    (later,) = requests(app, [("/v1/things", alice)])
    assert later.status_code == 200


def test_the_middleware_counts_unauthenticated_requests_by_address() -> None:
    denials: list[tuple[str, str | None, str]] = []
    app = serve(limiter(anonymous_burst=1), denials)
    (ok, refused) = requests(app, [("/v1/things", {}), ("/v1/things", {})])
    assert ok.status_code == 200 and ok.headers["ratelimit-limit"] == "1"
    assert refused.status_code == 429
    (elsewhere,) = requests(app, [("/v1/things", {})], client=("192.0.2.99", 4000))
    assert elsewhere.status_code == 200
    assert denials == [("/v1/things", None, "192.0.2.1")]


def test_health_is_never_limited_nor_counted() -> None:
    limits = limiter(anonymous_burst=1)
    app = serve(limits, [])
    answers = requests(app, [("/v1/health", {})] * 5 + [("/v1/things", {})])
    assert [a.status_code for a in answers] == [200] * 6
    assert "ratelimit-limit" not in answers[0].headers
    assert len(limits) == 1


def test_unlimited_answers_carry_no_rate_limit_headers() -> None:
    app = serve(limiter(per_second=0), [])
    (answer,) = requests(app, [("/v1/things", {"x-user": "alice"})])
    assert answer.status_code == 200
    assert not any(name.startswith("ratelimit-") for name in answer.headers)


def test_a_failing_on_limited_hook_still_answers_429(caplog: pytest.LogCaptureFixture) -> None:
    def hook(scope: Scope, identity: Identity | None, source: str) -> None:
        raise RuntimeError("the access log is down")

    app = Starlette(routes=[Route("/v1/things", hello)], middleware=[
        Middleware(RateLimit, limiter=limiter(anonymous_burst=1), on_limited=hook)])
    answers = requests(app, [("/v1/things", {})] * 2)
    assert [a.status_code for a in answers] == [200, 429]
    assert orjson.loads(answers[1].content)["correlation_id"] is None
    assert "on_limited hook failed" in caplog.text
