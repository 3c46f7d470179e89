"""Why a caller could not be authenticated: one exception with a machine-readable
``reason`` (for logs, metrics and the 401 body) and a human ``message``. Neither ever
holds the credential itself: a message names what was wrong with it, not what it was."""

from __future__ import annotations

from typing import Literal, get_args

Reason = Literal[
    "missing",                # no credential at all
    "malformed",              # not a well-formed token, or a required claim is missing/bad
    "expired",                # exp has passed (beyond the leeway)
    "not_yet_valid",          # nbf or iat is in the future (beyond the leeway)
    "bad_signature",          # the signature does not verify with the key it names
    "wrong_issuer",           # iss is not the configured issuer
    "wrong_audience",         # aud does not contain the configured audience
    "unknown_key",            # no usable key for the token's kid and alg
    "algorithm_not_allowed",  # alg outside the allow-list (none and HS* always)
    "jwks_unavailable",       # the issuer's keys could not be fetched and none are usable
    "unknown_token",          # an API token nobody issued
    "revoked",                # an API token since revoked
    "duplicate",              # more than one Authorization header
    "unsupported_scheme",     # not the Bearer scheme
]

REASONS: frozenset[str] = frozenset(get_args(Reason))


class AuthenticationFailed(Exception):
    """The credential does not identify anyone: answer 401 with ``reason``."""

    def __init__(self, reason: Reason, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown authentication failure reason {reason!r}")
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"AuthenticationFailed({self.reason!r}, {self.message!r})"
