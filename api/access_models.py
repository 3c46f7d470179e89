"""Response shapes of ``/v1/access``, for the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from .models import HistoryPage


class Token(BaseModel):
    id: str = Field(description="Public id: token:<id> in policies, auth.token_id in events")
    subject: str
    groups: list[str]
    expires_at: str | None = Field(description="RFC 3339; null: it does not expire")
    description: str | None
    created_at: str
    created_by: str
    expired: bool | None = None
    revoked: bool | None = None


class NewToken(Token):
    token: str = Field(description="The token: shown this once, kept only as hashes")


class TokenList(BaseModel):
    items: list[Token]


class PolicyResult(BaseModel):
    name: str
    version: int = Field(description="The policy's version; also its ETag")
    position: int
    policy: dict[str, Any] | None = Field(description="The policy document (null: removed)")
    unchanged: bool | None = Field(
        None, description="true: the policy already was this document, so nothing was "
        "recorded; version and position are those of the version found")


class NamedPolicy(BaseModel):
    name: str
    policy: dict[str, Any]


class PolicyList(BaseModel):
    items: list[NamedPolicy]
    version: int = Field(description="Position of the last change of tokens or policies")


PolicyHistoryPage = HistoryPage


class WhoAmI(BaseModel):
    subject: str
    actor: str = Field(description="What events record as the actor")
    groups: list[str]
    method: str = Field(description="token, oidc, bootstrap or anonymous (auth off)")
    issuer: str | None
    token_id: str | None
    expires_at: str | None
    principals: list[str] = Field(description="The policy subjects this identity answers to")
    policy_version: int
    namespace: str | None = None
    actions: dict[str, Literal["all", "some", "none"]] | None = Field(
        None, description="Per action, on which keys of the namespace it is allowed")


class Explanation(BaseModel):
    subject: str
    groups: list[str]
    action: str
    namespace: str
    key: str | None
    decision: Literal["allow", "deny"]
    by: Literal["allow", "deny", "admins", "default"] = Field(
        description="The rule kind that decided; default: no rule allows it")
    policy: str | None
    rule: int | None = Field(description="Index of the deciding rule in its policy's rules")
    reason: str
    policy_version: int
