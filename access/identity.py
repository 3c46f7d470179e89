"""An authenticated caller: who (``subject``), in which groups, how they proved it, until
when. The policy's subjects name it as ``user:<subject>``, ``group:<group>`` and
``token:<token id>``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

#: The group whose members may do everything (the break-glass group, like Vault's root):
#: the bootstrap token and the admin token made on first start are in it.
ADMINS = "admins"


@dataclass(frozen=True)
class Identity:
    subject: str
    groups: frozenset[str] = field(default_factory=frozenset)
    #: How the caller proved it: "token" (an API token), "oidc" (a JWT), "bootstrap",
    #: "mtls", "anonymous" (auth off).
    method: str = "token"
    #: The JWT's issuer (oidc); the token id (token, bootstrap).
    issuer: str | None = None
    token_id: str | None = None
    expires_at: datetime | None = None
    #: Set when a trusted proxy acts for an end user (its ``X-Actor``).
    on_behalf_of: str | None = None

    @cached_property
    def principals(self) -> tuple[str, ...]:
        """The policy subjects this identity answers to (``*`` matches any of them);
        worked out once per identity (it is immutable)."""
        names = [f"user:{self.subject}", *(f"group:{g}" for g in sorted(self.groups))]
        if self.token_id is not None:
            names.append(f"token:{self.token_id}")
        return tuple(names)

    @property
    def is_admin(self) -> bool:
        return ADMINS in self.groups

    def auth_record(self) -> dict[str, Any]:
        """The ``auth`` member of the events this identity appends: how it authenticated,
        never a secret."""
        record: dict[str, Any] = {"method": self.method}
        if self.issuer is not None:
            record["issuer"] = self.issuer
        if self.token_id is not None:
            record["token_id"] = self.token_id
        if self.on_behalf_of is not None:  # the actor is the end user; the proxy is this
            record["proxy"] = self.subject
            record["on_behalf_of"] = self.on_behalf_of
        return record

    @property
    def actor(self) -> str:
        """Who the events record as their actor: the end user a trusted proxy acts for,
        else the subject."""
        return self.on_behalf_of or self.subject


#: The identity of every request when auth is off (only allowed on loopback).
ANONYMOUS = Identity(subject="anonymous", groups=frozenset({ADMINS}), method="anonymous")
