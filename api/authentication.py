"""Who is calling: the ASGI middleware that turns ``Authorization: Bearer …`` into an
``Identity`` (``scope["state"]["identity"]``) or answers ``401`` before any route runs.

Bearer tokens, in the order they are tried:

1. the bootstrap admin token (its SHA-256 given by ``SSOT_BOOTSTRAP_TOKEN_SHA256``; ``ssot
   serve`` hands over the one it keeps in the data dir);
2. an API token ``ssot_<id>_<secret>``: its id finds its record, the secret's hash is
   compared in constant time, then revocation and expiry are checked;
3. a JWT (three dot-separated parts) when OIDC is configured.

``X-Actor`` is honoured only from an identity named in ``trusted_proxies``; the identity
then acts ``on_behalf_of`` that end user. Anyone else sending it is refused (403).

Public, without a token: health, the OpenAPI document and its pages, the web console's
pages (``/ui``) and the digests' public key. With ``SSOT_AUTH=off`` every request is the
anonymous administrator."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from starlette.types import ASGIApp, Receive, Scope, Send

from nexus_ssot.access.errors import AuthenticationFailed, Reason
from nexus_ssot.access.identity import ADMINS, ANONYMOUS, Identity
from nexus_ssot.access.oidc_config import oidc_configured
from nexus_ssot.access.tokens import TokenRecord, token_id_of
from nexus_ssot.ledger.redaction import redact_url
from nexus_ssot.ledger.settings import Settings

from .console_pages import is_console
from .docs_pages import ASSETS, DOCS, OAUTH2_REDIRECT, REDOC
from .errors import PROBLEM_JSON, PROBLEM_TYPE_BASE, instance_of
from .rate_limit import RateLimiter, source_address, too_many_requests

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from nexus_ssot.access.oidc import OidcAuthenticator

PUBLIC_PATHS = frozenset({"/v1/health", "/v1/live", "/openapi.json", DOCS, OAUTH2_REDIRECT, REDOC,
                          "/v1/integrity/public-key"})


def is_public(path: str) -> bool:
    """Whether ``path`` answers without a token: the public paths, the assets of the
    docs pages (under ASSETS, a mount that answers files and nothing else) and the web
    console's pages and assets (they hold no data: the console signs in to the API)."""
    return path in PUBLIC_PATHS or path.startswith(ASSETS + "/") or is_console(path)

#: The most proven tokens an ``Authenticator`` remembers (then it starts afresh).
MAX_PROVEN_TOKENS = 10_000

_TEXT = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")

#: What a client is told for each reason (the access log keeps the precise reason).
_DETAIL = {
    "missing": "this request needs a bearer token: Authorization: Bearer <token>",
    "duplicate": "give one Authorization header, not several",
    "unsupported_scheme": "use the Bearer scheme: Authorization: Bearer <token>",
    "malformed": "the bearer token is malformed",
    "unknown_token": "the bearer token is not valid",
    "revoked": "the bearer token was revoked",
    "expired": "the bearer token has expired",
}


def failed(reason: Reason) -> AuthenticationFailed:
    return AuthenticationFailed(reason, _DETAIL.get(reason, "the bearer token is not valid"))


def bootstrap_identity(token_hash: str) -> Identity:
    return Identity(subject="admin", groups=frozenset({ADMINS}), method="bootstrap",
                    token_id=f"bootstrap-{token_hash[:12]}")


def oidc_authenticator(settings: Settings) -> OidcAuthenticator | None:
    """The OIDC authenticator the settings describe; None when OIDC is off (no issuer),
    and then PyJWT is never loaded (access/oidc_config.py)."""
    if not oidc_configured(settings):
        return None
    from nexus_ssot.access.oidc import OidcAuthenticator

    return OidcAuthenticator.from_settings(settings)


class Authenticator:
    """Bearer token → Identity, from the settings, the worker's access state and (when
    configured) a JWT authenticator ``jwt(token) -> Identity``."""

    def __init__(self, settings: Settings, state: Any,
                 jwt: OidcAuthenticator | None = None) -> None:
        self.settings = settings
        self.state = state
        self.jwt = jwt
        self.bootstrap = settings.bootstrap_token_sha256
        #: One identity for every request of the bootstrap token (identities are immutable).
        self.bootstrap_identity = (None if self.bootstrap is None
                                   else bootstrap_identity(self.bootstrap))
        #: The API tokens proven since the access state's tokens were last loaded, by the
        #: SHA-256 of the token (as their records keep it, never the token itself): the
        #: record each matched. A token seen again is its record at once, without being
        #: parsed, looked up and compared again; its expiry is still checked every time,
        #: and a reload (a revocation, a new token) starts afresh.
        self._proven: dict[str, TokenRecord] = {}
        self._proven_of: object = None

    def _known(self, token: str) -> tuple[str, TokenRecord | None]:
        """The token's SHA-256, and the record it proved since the tokens were last
        loaded (a reload forgets them all)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        tokens = self.state.tokens
        if self._proven_of is not tokens:
            self._proven, self._proven_of = {}, tokens
        return digest, self._proven.get(digest)

    def authenticate(self, token: str, now: datetime | None = None) -> Identity:
        digest, record = self._known(token)
        if record is None:
            if self.bootstrap is not None and hmac.compare_digest(digest, self.bootstrap):
                return self.bootstrap_identity or bootstrap_identity(self.bootstrap)
            token_id = token_id_of(token)
            if token_id is None:
                if self.jwt is not None and token.count(".") == 2:
                    return self.from_provider(self.jwt.authenticate(token))
                raise failed("malformed")
            record = self.state.token(token_id)
            if record is None:
                raise failed("revoked" if token_id in self.state.revoked else "unknown_token")
            if not hmac.compare_digest(digest, record.hash):
                raise failed("unknown_token")
            if len(self._proven) >= MAX_PROVEN_TOKENS:
                self._proven.clear()
            self._proven[digest] = record
        if record.expired(now) if now is not None else record.expired_by(time.time()):
            raise failed("expired")
        identity: Identity = record.identity()
        return identity

    def proven(self, token: str) -> Identity | None:
        """The identity of an API token proven since the tokens were last loaded, when it
        has not expired: what nearly every request carries, decided without a coroutine.
        None: ``authenticate`` decides (and says why when it refuses)."""
        _, record = self._known(token)
        if record is None or record.expired_by(time.time()):
            return None
        return record.identity()

    def from_provider(self, identity: Identity) -> Identity:
        """An OIDC identity with the provider's groups as the ledger reads them: its
        ``admins`` group means nothing; the configured admin group means ``admins``."""
        groups = set(identity.groups) - {ADMINS}
        if self.settings.oidc_admin_group in identity.groups:
            groups.add(ADMINS)
        return dataclasses.replace(identity, groups=frozenset(groups))

    def authenticate_without_io(self, token: str) -> Identity | None:
        """``authenticate``, or None when a JWT's keys must be fetched first."""
        if self.jwt is not None and token.count(".") == 2 and token_id_of(token) is None:
            identity = self.jwt.try_cached(token)
            return None if identity is None else self.from_provider(identity)
        return self.authenticate(token)


class Authenticate:
    """The middleware: sets ``scope["state"]["identity"]`` or answers 401/403.

    ``service`` is looked up per request (``app.state.service``, made by the lifespan);
    ``on_refused(scope, status, reason, identity)`` records what it refused."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter | None = None) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = getattr(scope["app"].state, "service", None)
        state = scope.setdefault("state", {})
        if service is None or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        await service.access.fresh()  # policies and tokens as of now, not of when idle
        if service.settings.auth == "off":
            state["identity"] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        authorization: list[bytes] = []
        actor: list[bytes] = []
        for name, value in scope["headers"]:  # one pass for both: this runs for every request
            if name == b"authorization":
                authorization.append(value)
            elif name == b"x-actor":
                actor.append(value)
        try:
            token = bearer_token(authorization)
            identity = (service.authenticator.proven(token)
                        or await service.authenticate(token))
        except psycopg.OperationalError as e:
            # a token not known here is looked up in the store, which did not answer (its
            # pool timed out, the server is restarting): not a refusal, and not a fault of
            # ours; as every other request that needs the store then, 503 and retry
            # (the store's error is logged, not told: the caller is not authenticated)
            log.warning("a token could not be checked, the store did not answer: %s",
                        redact_url(f"{type(e).__name__}: {e}"))
            await _answer(scope, send, 503, "store_unavailable",
                          "the event store is unreachable, so the token could not be"
                          " checked; retry", [(b"retry-after", b"1")])
            return
        except AuthenticationFailed as failure:
            if self.limiter is not None:  # guessing tokens: limited per source address
                verdict = self.limiter.check(None, source_address(scope))
                if not verdict.allowed:
                    service.refused(scope, 429, "rate_limited", None)
                    await too_many_requests(scope, verdict)(scope, receive, send)
                    return
            service.refused(scope, 401, failure.reason, None)
            await _answer(scope, send, 401, "unauthenticated", failure.message,
                          [(b"www-authenticate",
                            b'Bearer realm="nexus-ssot", error="invalid_token"'
                            if failure.reason != "missing" else b'Bearer realm="nexus-ssot"')])
            return
        if actor:
            if not service.settings.trusted_proxies.intersection(identity.principals):
                service.refused(scope, 403, "untrusted_proxy", identity)
                await _answer(scope, send, 403, "untrusted_actor_header",
                              "X-Actor is accepted only from a trusted proxy (trusted_proxies);"
                              " this identity is not one", [], field="X-Actor")
                return
            value = actor[0].decode("latin-1")
            if len(actor) > 1 or not _TEXT.match(value):
                await _answer(scope, send, 400, "invalid_actor",
                              "X-Actor must be given once, 1-255 characters of text", [],
                              field="X-Actor")
                return
            identity = dataclasses.replace(identity, on_behalf_of=value)
        state["identity"] = identity
        await self.app(scope, receive, send)


def bearer_token(authorization: list[bytes]) -> str:
    """The token of the request's ``Authorization`` headers (raises
    ``AuthenticationFailed`` when they hold no single bearer token)."""
    if not authorization:
        raise failed("missing")
    if len(authorization) > 1:
        raise failed("duplicate")
    scheme, _, token = authorization[0].decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        raise failed("unsupported_scheme")
    token = token.strip()
    if not token or len(token) > 65536:
        raise failed("malformed")
    return token


async def _answer(scope: Scope, send: Send, status: int, code: str, detail: str,
                  headers: list[tuple[bytes, bytes]], field: str | None = None) -> None:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": {401: "Unauthorized", 403: "Forbidden", 400: "Bad Request",
                  503: "Service Unavailable"}[status],
        "status": status, "detail": detail, "code": code}
    if field is not None:
        body["field"] = field
    if (instance := instance_of(scope["path"])) is not None:
        body["instance"] = instance
    body["correlation_id"] = scope.get("state", {}).get("correlation_id")
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})
