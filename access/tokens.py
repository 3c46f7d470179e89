"""API tokens: ``ssot_<id>_<secret>``. The id is public (it names the token in lists, the
policy's ``token:<id>`` and the events' ``auth``); the secret is 256 random bits, shown
once and kept only as hashes:

- ``hash``: SHA-256 of the whole token, compared in constant time on every request (the
  secret is random, so a slow password hash would add nothing but cost);
- ``nats_hash``: bcrypt of the whole token, for the NATS server's authorization block
  (``ssot access nats-config``), where the token is the password of user ``<id>``.

A token's record is an entry of the system namespace ``_access`` keyed ``tokens/<id>``,
so creating and revoking (deleting it) are events with history, audit and broadcast."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import bcrypt

from nexus_ssot.ledger.errors import InvalidInput, capped, quoted

from .identity import Identity

ACCESS_NAMESPACE = "_access"
TOKEN_KEY_PREFIX = "tokens/"
POLICY_KEY_PREFIX = "policies/"

_TOKEN = re.compile(r"^ssot_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,254}$")
MAX_EXPIRES_IN = 10 * 365 * 86400


def new_token() -> tuple[str, str]:
    """A new token's id and the token itself (the only time the secret exists)."""
    token_id = secrets.token_hex(8)
    return token_id, f"ssot_{token_id}_{secrets.token_urlsafe(32)}"


def token_id_of(token: str) -> str | None:
    """The id of a well-formed token; None for anything else."""
    m = _TOKEN.match(token)
    return m.group(1) if m else None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def nats_hash(token: str) -> str:
    return bcrypt.hashpw(token.encode(), bcrypt.gensalt(rounds=10)).decode()


def hash_matches(token: str, stored: str) -> bool:
    return hmac.compare_digest(token_hash(token).encode(), stored.encode())


def check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidInput(f"{field} must be 1-255 characters: letters, digits, '.', '_', "
                           "'@', ':' or '-', starting with a letter or digit",
                           code="invalid_token_request", field=field)
    return value


@dataclass(frozen=True)
class TokenRecord:
    id: str
    subject: str
    groups: tuple[str, ...]
    expires_at: datetime | None
    description: str | None
    created_at: datetime
    created_by: str
    hash: str
    nats_hash: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def expired_by(self, now: float) -> bool:
        """``expired`` at ``now`` in seconds since the epoch (``time.time()``)."""
        return self._expires_ts is not None and now >= self._expires_ts

    @cached_property
    def _expires_ts(self) -> float | None:
        return None if self.expires_at is None else self.expires_at.timestamp()

    def identity(self) -> Identity:
        """The caller this token proves: one object per record (identities are immutable),
        so its principals are worked out once, not on every request."""
        return self._identity

    @cached_property
    def _identity(self) -> Identity:
        return Identity(subject=self.subject, groups=frozenset(self.groups), method="token",
                        token_id=self.id, expires_at=self.expires_at)

    def document(self) -> dict[str, Any]:
        """The entry kept in ``_access`` (hashes, never the secret)."""
        return {"id": self.id, "subject": self.subject, "groups": list(self.groups),
                "expires_at": _time(self.expires_at), "description": self.description,
                "created_at": _time(self.created_at), "created_by": self.created_by,
                "hash": self.hash, "nats_hash": self.nats_hash}

    def public(self) -> dict[str, Any]:
        """What listings show: everything but the hashes."""
        return {k: v for k, v in self.document().items() if k not in ("hash", "nats_hash")}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> TokenRecord:
        return cls(id=document["id"], subject=document["subject"],
                   groups=tuple(document.get("groups") or ()),
                   expires_at=_parse(document.get("expires_at")),
                   description=document.get("description"),
                   created_at=_parse(document["created_at"]) or datetime.now(UTC),
                   created_by=document.get("created_by", ""), hash=document["hash"],
                   nats_hash=document.get("nats_hash"))


def check_request(body: Any) -> tuple[str, tuple[str, ...], int | None, str | None]:
    """``POST /v1/access/tokens``'s body: subject, groups, expires_in (seconds), description."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object with subject, groups, expires_in "
                           "and description", code="invalid_token_request", field="body")
    unknown = sorted(set(body) - {"subject", "groups", "expires_in", "description"})
    if unknown:
        raise InvalidInput(f"unknown member {quoted(unknown[0])}; a token request has "
                           "subject, groups, expires_in and description",
                           code="invalid_token_request", field=capped(unknown[0]))
    subject = check_name(body.get("subject"), "subject")
    groups = body.get("groups", [])
    if not isinstance(groups, list) or len(groups) > 64:
        raise InvalidInput("groups must be a list of at most 64 names",
                           code="invalid_token_request", field="groups")
    names = tuple(sorted({check_name(g, f"groups[{i}]") for i, g in enumerate(groups)}))
    expires_in = body.get("expires_in")
    if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(
            expires_in, int) or not 1 <= expires_in <= MAX_EXPIRES_IN):
        raise InvalidInput(f"expires_in must be whole seconds from 1 to {MAX_EXPIRES_IN}, "
                           "or null (no expiry)", code="invalid_token_request",
                           field="expires_in")
    description = body.get("description")
    if description is not None and (not isinstance(description, str)
                                    or len(description) > 1024 or not description.isprintable()):
        raise InvalidInput("description must be one line of at most 1024 characters",
                           code="invalid_token_request", field="description")
    return subject, names, expires_in, description


def issue(subject: str, groups: tuple[str, ...], expires_in: int | None,
          description: str | None, created_by: str, now: datetime | None = None
          ) -> tuple[TokenRecord, str]:
    """A new token's record and the token."""
    token_id, token = new_token()
    now = now or datetime.now(UTC)
    expires_at = now + timedelta(seconds=expires_in) if expires_in else None
    record = TokenRecord(id=token_id, subject=subject, groups=groups, expires_at=expires_at,
                         description=description, created_at=now, created_by=created_by,
                         hash=token_hash(token), nats_hash=nats_hash(token))
    return record, token


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
