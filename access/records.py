"""What the access log records: one ``AccessRecord`` per authentication failure (401),
authorisation denial (403, or 404 when the policy hides what exists), refusal by a rate
limit (429) and use of an admin action (allowed), and the summary records that stand in
for the records a flood bound suppressed or a full queue dropped.

A record holds who (``subject``, None when unauthenticated; ``auth_method``), from where
(``source``, the client address), what (``method``, ``path`` — the route template, never
the raw path —, ``action``, ``namespace``, ``key``), what was decided (``decision``,
``status``, ``reason``, and the ``policy`` and ``rule`` that decided it, or "default")
and ``correlation_id``. Never a token, a password or any other secret: there is no member
for one, and the text members are bounded in length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nexus_ssot.ledger.chain import timestamp

DENY = "deny"
ALLOW = "allow"
DECISIONS = (ALLOW, DENY)

#: Why authentication failed (status 401; untrusted_proxy: the 403 of an X-Actor header
#: from a caller that is no trusted proxy).
AUTH_REASONS = ("missing", "duplicate", "unsupported_scheme", "malformed", "expired",
                "not_yet_valid", "bad_signature", "wrong_issuer", "wrong_audience",
                "unknown_key", "algorithm_not_allowed", "jwks_unavailable", "unknown_token",
                "revoked", "untrusted_proxy")
#: A 403 or 404 decided by the policy.
POLICY = "policy"
#: A 429: the caller's rate limit.
RATE_LIMITED = "rate_limited"
#: Records dropped because the queue was full (the reason of their summary).
QUEUE_FULL = "queue_full"

#: Longest text member stored (longer text is cut, marked with "…").
MAX_TEXT = 1024


def now() -> datetime:
    return datetime.now(UTC)


def _text(value: Any) -> str | None:
    """``value`` as text PostgreSQL's jsonb can hold: no NUL, no lone surrogate, bounded."""
    if value is None:
        return None
    text = str(value)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT - 1] + "…"
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


@dataclass(frozen=True)
class AccessRecord:
    """One access decision worth recording (see the module docstring)."""

    #: "deny" or "allow" (an admin action that was allowed).
    decision: str
    #: 401, 403, 404 or 429 for a denial; the answer's status (or None) for an allow.
    status: int | None
    #: For a 401 one of ``AUTH_REASONS``; "policy" for a 403/404; "rate_limited".
    reason: str
    method: str
    #: The route template (``/v1/namespaces/{namespace}/entries/{key}``), not the raw path.
    path: str
    #: The client address.
    source: str | None
    subject: str | None = None
    action: str | None = None
    namespace: str | None = None
    key: str | None = None
    #: The policy and rule that decided; "default" when no rule did.
    policy: str | None = None
    rule: int | str | None = None
    correlation_id: str | None = None
    auth_method: str | None = None
    time: datetime = field(default_factory=now)

    def as_json(self) -> dict[str, Any]:
        """The record as it is stored (its JSON object)."""
        rule = self.rule if isinstance(self.rule, int) and not isinstance(self.rule, bool) \
            else _text(self.rule)
        status = self.status if isinstance(self.status, int) else None
        return {
            "time": timestamp(self.time), "decision": _text(self.decision),
            "status": status, "reason": _text(self.reason), "subject": _text(self.subject),
            "method": _text(self.method), "path": _text(self.path),
            "action": _text(self.action), "namespace": _text(self.namespace),
            "key": _text(self.key), "policy": _text(self.policy), "rule": rule,
            "correlation_id": _text(self.correlation_id), "source": _text(self.source),
            "auth_method": _text(self.auth_method),
        }

    def flood_key(self) -> tuple[str, str | None, str]:
        """What the flood bound counts by: the decision, the client address, the reason."""
        return (self.decision, self.source, self.reason)


def summary(decision: str | None, source: str | None, reason: str, suppressed: int,
            first: datetime, last: datetime) -> dict[str, Any]:
    """The record stored in place of ``suppressed`` records (of ``decision`` from
    ``source`` for ``reason``) made between ``first`` and ``last``."""
    return {"summary": True, "suppressed": suppressed, "decision": _text(decision),
            "source": _text(source), "reason": _text(reason), "from": timestamp(first),
            "to": timestamp(last)}
