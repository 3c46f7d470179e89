"""``/v1/access``: API tokens, the policies, who am I, and why a request is (not) allowed.

Tokens and policies are entries of the system namespace ``_access`` (``tokens/<id>``,
``policies/<name>``), written through the writer like any entry: each change is an event
with its actor, history, hash chain and broadcast. Revoking a token deletes its entry.
The worker that made a change reloads at once; the others within
``access_refresh_seconds``."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from nexus_ssot.access.identity import Identity
from nexus_ssot.access.policy import ACTIONS, check_policy, check_subject
from nexus_ssot.access.tokens import (
    POLICY_KEY_PREFIX,
    TOKEN_KEY_PREFIX,
    TokenRecord,
    check_request,
    issue,
)
from nexus_ssot.ledger.addressing import ACCESS_NAMESPACE
from nexus_ssot.ledger.commands import Delete, Expectation, Put
from nexus_ssot.ledger.errors import NotFound
from nexus_ssot.projections import current_state
from nexus_ssot.projections import entry_history as entry_history_view

from . import access_models as models
from . import http
from .errors import problem_responses
from .guard import Guard, guard_of, require
from .pagination import decode_cursor, page
from .params import JSON, WRITE_ERRORS, Cursor, Limit, service_of
from .writes import WriteRequest, within_write_timeout

router = APIRouter(prefix="/v1/access", tags=["access"])

#: A token a caller makes for itself lives at most this long (an administrator's may be
#: longer, or not expire).
SELF_SERVICE_MAX_SECONDS = 90 * 86400
PolicyName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$",
                                  description="1-63 of a-z, 0-9, '_', '.', '-'")]
TokenId = Annotated[str, Path(pattern="^[0-9a-f]{16}$", description="The token's id")]
_ERRORS = problem_responses(400, 401, 403, 404, 412, 503)
_BODY_ERRORS = problem_responses(400, 401, 403, 404, 412, 413, 415, 503)


async def _write(request: Request, command: Any, body: bytes) -> Any:
    service = service_of(request)
    meta = WriteRequest(request, body)
    outcome = await within_write_timeout(
        service, service.writer.write(command, meta.context(), meta.idempotency))
    await service.access.refresh()
    return outcome


def _may_issue(guard: Guard, subject: str, groups: tuple[str, ...],
               expires_in: int | None) -> bool:
    """A caller may make a token for itself, with groups it has, for at most 90 days and
    never beyond its own expiry (a short-lived credential does not mint a long one)."""
    me: Identity = guard.identity
    if expires_in is None or expires_in > SELF_SERVICE_MAX_SECONDS:
        return False
    if me.expires_at is not None and datetime.now(UTC) + timedelta(
            seconds=expires_in) > me.expires_at:
        return False
    return (subject == me.subject and set(groups) <= set(me.groups)
            and me.on_behalf_of is None)


@router.post("/tokens", summary="Make an API token (its secret is shown once)",
             status_code=201, response_model=models.NewToken, responses=_BODY_ERRORS)
async def create_token(request: Request) -> Response:
    guard = guard_of(request)
    http.require_media_type(request, JSON)
    body = await http.read_body(request, 64 * 1024)
    subject, groups, expires_in, description = check_request(
        http.parse_json(body, field="body"))
    if not _may_issue(guard, subject, groups, expires_in):
        require(request, "admin", ACCESS_NAMESPACE, f"{TOKEN_KEY_PREFIX}{subject}")
    record, token = issue(subject, groups, expires_in, description,
                          created_by=guard.identity.actor)
    await _write(request, Put(ACCESS_NAMESPACE, f"{TOKEN_KEY_PREFIX}{record.id}",
                              Expectation(if_none_match=True), document=record.document()),
                 body)
    return Response(orjson.dumps({**record.public(), "token": token}), status_code=201,
                    media_type=JSON, headers={"Cache-Control": "no-store"})


def _may_manage(guard: Guard, record: TokenRecord) -> bool:
    return record.subject == guard.identity.subject and guard.identity.on_behalf_of is None


@router.get("/tokens", summary="API tokens (never their secrets): yours, or all for admins",
            response_model=models.TokenList, responses=_ERRORS)
async def list_tokens(request: Request) -> Response:
    guard = guard_of(request)
    every = guard.may("admin", ACCESS_NAMESPACE, TOKEN_KEY_PREFIX + "any")
    now = datetime.now(UTC)
    items = [{**t.public(), "expired": t.expired(now)}
             for t in sorted(service_of(request).access.tokens.values(),
                             key=lambda t: (t.created_at, t.id))
             if every or _may_manage(guard, t)]
    return Response(orjson.dumps({"items": items}), media_type=JSON)


@router.delete("/tokens/{token_id}", summary="Revoke an API token (refused everywhere "
               "within access_refresh_seconds)", response_model=models.Token,
               responses=_ERRORS)
async def revoke_token(request: Request, token_id: TokenId
                       ) -> Response:
    guard = guard_of(request)
    record = service_of(request).access.token(token_id)
    if record is None or not (_may_manage(guard, record) or guard.may(
            "admin", ACCESS_NAMESPACE, TOKEN_KEY_PREFIX + token_id)):
        if record is not None:  # refused (and recorded): 403 to one who may read it,
            with contextlib.suppress(NotFound):  # else answered as if it did not exist
                require(request, "admin", ACCESS_NAMESPACE, TOKEN_KEY_PREFIX + token_id)
        raise NotFound(f"token {token_id} does not exist (or was revoked)",
                       code="token_not_found", field="token_id")
    await _write(request, Delete(ACCESS_NAMESPACE, TOKEN_KEY_PREFIX + token_id,
                                 Expectation(must_exist=True)), b"")
    return Response(orjson.dumps({**record.public(), "revoked": True}), media_type=JSON)


@router.put("/policies/{name}", summary="Set a policy (a new version of it)",
            response_model=models.PolicyResult,
            responses={201: {"model": models.PolicyResult, "description": "A new policy"},
                       **WRITE_ERRORS, **problem_responses(401, 403)})
async def put_policy(request: Request, name: PolicyName) -> Response:
    require(request, "admin", ACCESS_NAMESPACE, POLICY_KEY_PREFIX + name)
    http.require_media_type(request, JSON)
    service = service_of(request)
    body = await http.read_body(request, service.settings.max_request_bytes)
    policy = check_policy(http.parse_json(body, field="policy", root=""))
    outcome = await _write(request, Put(ACCESS_NAMESPACE, POLICY_KEY_PREFIX + name,
                                        http.expectation(request), document=policy), body)
    answer = {"name": name, "version": outcome.version, "position": outcome.position,
              "policy": outcome.document}
    if outcome.unchanged:  # the policy it already is: nothing recorded
        answer["unchanged"] = True
    created = outcome.version == 1 and not outcome.unchanged
    return Response(orjson.dumps(answer), status_code=201 if created else 200,
                    media_type=JSON, headers={"ETag": http.etag(outcome.version)})


@router.get("/policies", summary="The policies in force", response_model=models.PolicyList,
            responses=_ERRORS)
async def list_policies(request: Request) -> Response:
    guard = guard_of(request)
    policies = service_of(request).access.policies.policies
    items = [{"name": n, "policy": p} for n, p in sorted(policies.items())
             if guard.may("read", ACCESS_NAMESPACE, POLICY_KEY_PREFIX + n)]
    return Response(orjson.dumps({"items": items, "version": service_of(
        request).access.position}), media_type=JSON)


@router.get("/policies/{name}", summary="A policy (current, or any past version)",
            response_model=models.PolicyResult, responses=_ERRORS)
async def get_policy(request: Request, name: PolicyName,
                     version: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
                     ) -> Response:
    key = POLICY_KEY_PREFIX + name
    require(request, "history" if version is not None else "read", ACCESS_NAMESPACE, key)
    async with service_of(request).pool.connection() as conn:
        if version is not None:
            found = await entry_history_view.entry_version(conn, ACCESS_NAMESPACE, key,
                                                           version)
            body = None if found is None or found[0] == "entry.deleted" else orjson.loads(
                found[1])
        else:
            current = await current_state.current_entry(conn, ACCESS_NAMESPACE, key)
            body = None if current is None or current.deleted else orjson.loads(current.body)
    if body is None:
        raise NotFound(f"policy {name} does not exist" + (
            f" at version {version}" if version else ""), code="policy_not_found",
            field="name")
    return Response(orjson.dumps({"name": name, "version": body["version"],
                                  "position": body["position"], "policy": body["document"]}),
                    media_type=JSON, headers={"ETag": http.etag(body["version"])})


@router.delete("/policies/{name}", summary="Remove a policy (a deleting version)",
               response_model=models.PolicyResult, responses=_ERRORS)
async def delete_policy(request: Request, name: PolicyName) -> Response:
    require(request, "admin", ACCESS_NAMESPACE, POLICY_KEY_PREFIX + name)
    expected = http.expectation(request)
    if expected.if_match is None:
        expected = Expectation(must_exist=True)
        async with service_of(request).pool.connection() as conn:
            current = await current_state.current_entry(conn, ACCESS_NAMESPACE,
                                                        POLICY_KEY_PREFIX + name)
        if current is None or current.deleted:  # said as a policy, not as its entry
            raise NotFound(f"policy {name} does not exist", code="policy_not_found",
                           field="name")
    outcome = await _write(request, Delete(ACCESS_NAMESPACE, POLICY_KEY_PREFIX + name,
                                           expected), b"")
    return Response(orjson.dumps({"name": name, "version": outcome.version,
                                  "position": outcome.position, "policy": None}),
                    media_type=JSON)


@router.get("/policies/{name}/history", summary="Every version of a policy: who, when, why",
            response_model=models.PolicyHistoryPage, responses=_ERRORS)
async def policy_history(request: Request, name: PolicyName,
                         limit: Limit = 100, cursor: Cursor = None) -> Response:
    require(request, "history", ACCESS_NAMESPACE, POLICY_KEY_PREFIX + name)
    state = decode_cursor(cursor, "v")
    async with service_of(request).pool.connection() as conn:
        rows = await entry_history_view.history(
            conn, ACCESS_NAMESPACE, POLICY_KEY_PREFIX + name,
            after_version=state["v"] if state else None, limit=limit + 1)
    return page(rows, limit, lambda r: r[1], lambda r: {"v": r[0]})


@router.get("/whoami", summary="Who this token is, and what it may do in a namespace",
            response_model=models.WhoAmI, responses=_ERRORS)
async def whoami(request: Request, namespace: Annotated[str | None, Query(
        max_length=63, pattern=r"^[a-z0-9_][a-z0-9_-]{0,62}$")] = None) -> Response:
    guard = guard_of(request)
    me = guard.identity
    actor = me.actor
    if me.method == "anonymous":  # auth off: the actor a write of this request records
        settings = service_of(request).settings
        actor = http.actor(request, default=settings.default_actor,
                           trust_header=settings.trust_actor_header)
    body: dict[str, Any] = {
        "subject": me.subject, "actor": actor, "groups": sorted(me.groups),
        "method": me.method, "issuer": me.issuer, "token_id": me.token_id,
        "expires_at": None if me.expires_at is None else http.rfc3339(me.expires_at),
        "principals": list(me.principals), "policy_version": service_of(
            request).access.position}
    if namespace is not None:
        body["namespace"] = namespace
        body["actions"] = guard.policies.actions_in(me, namespace)
    return Response(orjson.dumps(body), media_type=JSON)


@router.get("/explain", summary="The decision on one request, and the rule that made it",
            response_model=models.Explanation, responses=_ERRORS)
async def explain(
    request: Request,
    action: Annotated[str, Query(pattern="^(" + "|".join(ACTIONS) + ")$")],
    namespace: Annotated[str, Query(max_length=63, pattern=r"^[a-z0-9_][a-z0-9_-]{0,62}$")],
    key: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9._/-]+$")] = None,
    subject: Annotated[str | None, Query(max_length=255)] = None,
    groups: Annotated[list[str], Query(max_length=64)] = [],  # noqa: B006 (FastAPI query)
    token_id: Annotated[str | None, Query(pattern="^[0-9a-f]{16}$")] = None,
) -> Response:
    guard = guard_of(request)
    me = guard.identity
    if subject is None and not groups and token_id is None:
        who = me
    else:
        require(request, "admin", ACCESS_NAMESPACE, None)  # another's rights are admin's
        name = subject or me.subject
        check_subject(f"user:{name}", "subject")
        who = Identity(subject=name, groups=frozenset(groups), token_id=token_id)
    decision = guard.policies.decide(who, action, namespace, key)
    return Response(orjson.dumps({
        "subject": who.subject, "groups": sorted(who.groups), "action": action,
        "namespace": namespace, "key": key, **decision.as_json(),
        "policy_version": service_of(request).access.position}), media_type=JSON)
