"""OIDC bearer tokens: a JWT signed by the configured identity provider proves who the
caller is (its subject claim) and which groups it is in (its groups claim).

A token is accepted only when, in this order:

1. it is a well-formed JWT whose header ``alg`` is on the allow-list (``oidc_algorithms``:
   asymmetric algorithms only; ``none`` and ``HS*`` are refused before any key is
   looked at, whatever the configuration or the key set says);
2. the issuer's key set (``access/jwks_cache.py``) has a key with the header's ``kid``
   that fits that algorithm (``access/jwks.py``: an RSA key for ``RS*``/``PS*``, an EC
   key on the algorithm's curve for ``ES*``, Ed25519/Ed448 for ``EdDSA``; a symmetric
   ``oct`` key never);
3. its signature verifies with that key (PyJWT, told to accept that one algorithm);
4. ``iss`` is ``oidc_issuer`` exactly and ``aud`` (a string or a list) contains
   ``oidc_audience`` exactly;
5. ``exp`` is present and not past, and ``nbf``/``iat``, when present, are not in the
   future, each with ``oidc_leeway`` seconds of tolerance. Times are compared with the
   authenticator's ``clock`` (PyJWT would read the wall clock itself, so its own time
   checks are off and these are done here);
6. the subject claim is a non-empty printable string and the groups claim, if present, a
   string (one group) or a list of them.

Anything else raises ``AuthenticationFailed`` with a reason (``access/errors.py``) and a
message that never quotes the token.

Calling it from async code: ``authenticate`` does I/O only when the key set must be
fetched (first use, an unknown ``kid``, keys near expiry: see ``access/jwks_cache.py``).
``try_cached`` never fetches and answers None where it would have to, so the event loop
calls ``authenticate`` in a thread only then::

    identity = oidc.try_cached(token)
    if identity is None:
        identity = await asyncio.to_thread(oidc.authenticate, token)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import jwt
from jwt import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)

from nexus_ssot.ledger.settings import DEFAULT_JWT_ALGORITHMS, Settings

from .errors import AuthenticationFailed, Reason
from .identity import Identity
from .jwks import VERIFIABLE_ALGORITHMS, VerificationKey
from .jwks_cache import FetchNeeded, FileKeys, RemoteKeys, http_get
from .oidc_config import oidc_configured

#: Longest token looked at (a JWT carrying a few hundred groups is a few KiB).
MAX_TOKEN_CHARS = 64 * 1024
#: Longest subject or group name accepted.
MAX_NAME_CHARS = 1024
#: The latest time a claim may name (9999-12-31T23:59:59Z): later ones are not times.
LATEST_TIME = 253_402_300_799

#: How PyJWT's refusals map to reasons; the first class the error is an instance of wins
#: (InvalidSignatureError is a DecodeError, so it comes before the catch-all).
_PYJWT_REASONS: tuple[tuple[type[PyJWTError], Reason], ...] = (
    (InvalidAlgorithmError, "algorithm_not_allowed"),
    (InvalidSignatureError, "bad_signature"),
    (ExpiredSignatureError, "expired"),
    (ImmatureSignatureError, "not_yet_valid"),
    (InvalidIssuerError, "wrong_issuer"),
    (InvalidAudienceError, "wrong_audience"),
    (InvalidKeyError, "unknown_key"),
    (PyJWTError, "malformed"),
)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class OidcAuthenticator:
    """Checks OIDC bearer JWTs against one issuer's published keys. Thread-safe."""

    def __init__(self, *, issuer: str, audience: str, jwks_url: str | None = None,
                 jwks_file: Path | None = None, subject_claim: str = "sub",
                 groups_claim: str = "groups",
                 algorithms: Iterable[str] = DEFAULT_JWT_ALGORITHMS, leeway: float = 30.0,
                 jwks_cache_seconds: float = 3600.0, jwks_min_refresh_seconds: float = 10.0,
                 clock: Callable[[], float] = time.time,
                 fetch: Callable[[str], bytes] = http_get) -> None:
        if not issuer or not audience:
            raise ValueError("OIDC needs both SSOT_OIDC_ISSUER and SSOT_OIDC_AUDIENCE")
        if not subject_claim or not groups_claim:
            raise ValueError("SSOT_OIDC_SUBJECT_CLAIM and SSOT_OIDC_GROUPS_CLAIM must name "
                             "claims")
        allowed = frozenset(algorithms)
        if not allowed or not allowed <= VERIFIABLE_ALGORITHMS:
            raise ValueError("SSOT_OIDC_ALGORITHMS must name asymmetric algorithms among "
                             f"{', '.join(sorted(VERIFIABLE_ALGORITHMS))} (never HS* or none)")
        if leeway < 0 or jwks_cache_seconds <= 0 or jwks_min_refresh_seconds < 0:
            raise ValueError("the OIDC leeway and JWKS intervals must not be negative")
        if (jwks_url is None) == (jwks_file is None):
            raise ValueError("OIDC needs exactly one of SSOT_OIDC_JWKS_URL and "
                             "SSOT_OIDC_JWKS_FILE")
        self.issuer = issuer
        self.audience = audience
        self.subject_claim = subject_claim
        self.groups_claim = groups_claim
        self.algorithms = allowed
        self.leeway = leeway
        self._clock = clock
        self._keys: RemoteKeys | FileKeys
        if jwks_url is not None:
            self._keys = RemoteKeys(jwks_url, cache_seconds=jwks_cache_seconds,
                                    min_refresh_seconds=jwks_min_refresh_seconds,
                                    clock=clock, fetch=fetch)
        else:
            assert jwks_file is not None
            self._keys = FileKeys(jwks_file, cache_seconds=jwks_cache_seconds, clock=clock)

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Callable[[], float] = time.time,
                      fetch: Callable[[str], bytes] = http_get) -> OidcAuthenticator | None:
        """The authenticator the settings describe; None when OIDC is off (no issuer).
        A half-done configuration raises ``ValueError`` naming what is missing."""
        if not oidc_configured(settings):
            return None
        assert settings.oidc_issuer is not None and settings.oidc_audience is not None
        return cls(issuer=settings.oidc_issuer, audience=settings.oidc_audience,
                   jwks_url=settings.oidc_jwks_url, jwks_file=settings.oidc_jwks_file,
                   subject_claim=settings.oidc_subject_claim,
                   groups_claim=settings.oidc_groups_claim,
                   algorithms=settings.oidc_algorithms, leeway=settings.oidc_leeway,
                   jwks_cache_seconds=settings.oidc_jwks_cache_seconds,
                   jwks_min_refresh_seconds=settings.oidc_jwks_min_refresh_seconds,
                   clock=clock, fetch=fetch)

    def authenticate(self, token: str) -> Identity:
        """The identity ``token`` proves, or ``AuthenticationFailed``. May fetch the key
        set (blocking, at most ``FETCH_TIMEOUT``): call it off the event loop."""
        return self._verify(token, may_fetch=True)

    def try_cached(self, token: str) -> Identity | None:
        """``authenticate`` without I/O: None when the answer needs a key set fetch."""
        try:
            return self._verify(token, may_fetch=False)
        except FetchNeeded:
            return None

    def _verify(self, token: str, *, may_fetch: bool) -> Identity:
        algorithm, kid = self._header(token)
        key = self._keys.key_for(kid, algorithm, may_fetch=may_fetch)
        claims = self._decode(token, key, algorithm)
        expires = self._check_times(claims)
        return Identity(subject=self._subject(claims), groups=self._groups(claims),
                        method="oidc", issuer=claims["iss"],
                        expires_at=datetime.fromtimestamp(expires, UTC))

    def _header(self, token: str) -> tuple[str, str | None]:
        """The token's algorithm (allowed) and key id."""
        if not isinstance(token, str) or not token:
            raise AuthenticationFailed("missing", "no bearer token was given")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationFailed(
                "malformed", f"the bearer token is longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise AuthenticationFailed(
                "malformed", "the bearer token is not a well-formed JWT "
                "(header.payload.signature, base64url-encoded JSON)") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            shown = repr(algorithm)[:24]
            raise AuthenticationFailed(
                "algorithm_not_allowed", f"the token's algorithm {shown} is not allowed; "
                f"allowed: {', '.join(sorted(self.algorithms))}")
        if "crit" in header:
            raise AuthenticationFailed(
                "malformed", "the token names critical header extensions (crit); none are "
                "supported")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationFailed("malformed", "the token's key id (kid) is not a string")
        return algorithm, kid

    def _decode(self, token: str, key: VerificationKey, algorithm: str) -> dict[str, Any]:
        """The claims, once the signature, ``iss`` and ``aud`` hold."""
        try:
            return jwt.decode(
                token, key=key.key, algorithms=[algorithm], audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud"], "verify_exp": False,
                         "verify_nbf": False, "verify_iat": False,
                         "enforce_minimum_key_length": True})
        except PyJWTError as error:
            raise self._refusal(error) from None

    def _refusal(self, error: PyJWTError) -> AuthenticationFailed:
        if isinstance(error, MissingRequiredClaimError):
            return AuthenticationFailed("malformed", f"the token has no {error.claim!r} claim")
        reason = next(r for kind, r in _PYJWT_REASONS if isinstance(error, kind))
        message = {
            "algorithm_not_allowed": "the token's algorithm is not allowed for its key",
            "bad_signature": "the token's signature does not verify with the identity "
                             "provider's key it names",
            "expired": "the token has expired",
            "not_yet_valid": "the token is not valid yet",
            "wrong_issuer": f"the token was not issued by {self.issuer!r}",
            "wrong_audience": f"the token's audience does not include {self.audience!r}",
            "unknown_key": "the identity provider's key cannot verify this token",
        }.get(reason, "the bearer token is not a well-formed JWT")
        return AuthenticationFailed(reason, message)

    def _check_times(self, claims: dict[str, Any]) -> float:
        """``exp``, once it and ``nbf``/``iat`` hold at ``clock()`` within the leeway."""
        now = self._clock()
        expires = self._time(claims, "exp")
        if expires <= now - self.leeway:
            raise AuthenticationFailed("expired", f"the token expired at {_iso(expires)}")
        if "nbf" in claims and (nbf := self._time(claims, "nbf")) > now + self.leeway:
            raise AuthenticationFailed("not_yet_valid",
                                       f"the token is not valid before {_iso(nbf)}")
        if "iat" in claims and (iat := self._time(claims, "iat")) > now + self.leeway:
            raise AuthenticationFailed(
                "not_yet_valid", f"the token says it was issued at {_iso(iat)}, in the future")
        return expires

    @staticmethod
    def _time(claims: dict[str, Any], name: str) -> float:
        value = claims[name]
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or not 0 <= value <= LATEST_TIME):
            raise AuthenticationFailed(
                "malformed", f"the token's {name!r} claim is not a time (seconds since "
                "1970-01-01T00:00:00Z)")
        return float(value)

    def _subject(self, claims: dict[str, Any]) -> str:
        subject = claims.get(self.subject_claim)
        if not _is_name(subject):
            raise AuthenticationFailed(
                "malformed", f"the token's {self.subject_claim!r} claim (the subject) is not "
                f"a non-empty printable string of at most {MAX_NAME_CHARS} characters")
        return subject

    def _groups(self, claims: dict[str, Any]) -> frozenset[str]:
        groups = claims.get(self.groups_claim)
        if groups is None:
            return frozenset()
        names = [groups] if isinstance(groups, str) else groups
        if not isinstance(names, list) or not all(_is_name(g) for g in names):
            raise AuthenticationFailed(
                "malformed", f"the token's {self.groups_claim!r} claim (the groups) is not a "
                "group name or a list of them")
        return frozenset(names)


def _is_name(value: object) -> TypeGuard[str]:
    return (isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS
            and value.isprintable())
