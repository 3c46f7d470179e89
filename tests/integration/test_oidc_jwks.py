"""OIDC keys fetched over real HTTP (access/jwks_cache.py's default fetch) from a JWKS
endpoint on loopback: a token verifies, a rotated key is picked up, and when the endpoint
goes away the cached keys keep working until the cache time is up, then fail closed.
The clock is injected; the network is real."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from nexus_ssot.access.errors import AuthenticationFailed
from nexus_ssot.access.oidc import OidcAuthenticator
from tests.unit.jwt_issuer import AUDIENCE, ISSUER, NOW, Clock, claims, ec_key, rsa_key

CACHE = 600.0
MIN_REFRESH = 5.0


class JwksServer:
    """``GET /jwks`` answers ``keys`` as a JWKS (or ``status`` with no body, if set)."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.status = 200
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = json.dumps({"keys": server.keys}).encode()
                if self.path != "/jwks" or server.status != 200:
                    self.send_response(404 if self.path != "/jwks" else server.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=10)


@pytest.fixture
def server() -> Iterator[JwksServer]:
    running = JwksServer()
    yield running
    running.stop()


def authenticator(url: str, clock: Clock) -> OidcAuthenticator:
    return OidcAuthenticator(issuer=ISSUER, audience=AUDIENCE, jwks_url=url, clock=clock,
                             jwks_cache_seconds=CACHE, jwks_min_refresh_seconds=MIN_REFRESH)


def reason(oidc: OidcAuthenticator, token: str) -> str:
    with pytest.raises(AuthenticationFailed) as caught:
        oidc.authenticate(token)
    return caught.value.reason


def test_keys_fetched_over_http_verify_and_rotate(server: JwksServer) -> None:
    first, second = rsa_key("http-rsa-1"), ec_key("http-ec-2")
    server.keys = [first.jwk()]
    clock = Clock()
    oidc = authenticator(server.url, clock)
    assert oidc.try_cached(first.sign(claims())) is None  # nothing cached: a fetch is due
    assert server.requests == []
    identity = oidc.authenticate(first.sign(claims(groups="ops")))
    assert (identity.subject, identity.groups) == ("alice", frozenset({"ops"}))
    assert server.requests == ["/jwks"]
    assert oidc.try_cached(first.sign(claims())) is not None

    server.keys = [first.jwk(), second.jwk()]  # the provider publishes its next key
    clock.advance(MIN_REFRESH)
    assert oidc.authenticate(second.sign(claims(sub="bob"))).subject == "bob"
    assert server.requests == ["/jwks", "/jwks"]


def test_cached_keys_outlive_the_endpoint_then_fail_closed(server: JwksServer) -> None:
    key = rsa_key("http-rsa-1")
    server.keys = [key.jwk()]
    clock = Clock()
    oidc = authenticator(server.url, clock)
    token = key.sign(claims(exp=int(NOW + 2 * CACHE)))
    assert oidc.authenticate(token).subject == "alice"

    server.stop()  # connections to its port are now refused
    clock.advance(CACHE / 2)  # due for a refresh, which fails: the cached key still serves
    assert oidc.authenticate(token).subject == "alice"
    clock.advance(CACHE / 2 - 1)
    assert oidc.authenticate(token).subject == "alice"
    # An unknown kid cannot be looked up while the endpoint is down.
    assert reason(oidc, rsa_key("http-rsa-2").sign(claims())) == "unknown_key"
    clock.advance(1)  # the cache time after the last successful fetch: fail closed
    assert reason(oidc, token) == "jwks_unavailable"
    clock.advance(MIN_REFRESH)  # a retry, refused again
    assert reason(oidc, token) == "jwks_unavailable"
    assert server.requests == ["/jwks"]


def test_an_error_status_is_an_unreachable_key_set(server: JwksServer) -> None:
    key = rsa_key("http-rsa-1")
    server.keys, server.status = [key.jwk()], 503
    clock = Clock()
    oidc = authenticator(server.url, clock)
    assert reason(oidc, key.sign(claims())) == "jwks_unavailable"
    server.status = 200
    clock.advance(MIN_REFRESH)
    assert oidc.authenticate(key.sign(claims())).subject == "alice"
    assert server.requests == ["/jwks", "/jwks"]


def test_an_oversized_key_set_is_not_read(server: JwksServer) -> None:
    key = rsa_key("http-rsa-1")
    server.keys = [key.jwk(), *({"kty": "oct", "k": "x" * 1000} for _ in range(1100))]
    oidc = authenticator(server.url, Clock())
    assert reason(oidc, key.sign(claims())) == "jwks_unavailable"
