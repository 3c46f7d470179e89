"""What may this caller do here: the one table from each route to the action it takes,
the dependency that enforces it before the route runs, and the checks routes that touch
many entries (listings, feeds, batches, restores) make per entry.

A read the policy refuses answers ``404`` as if the entry did not exist: the caller may
not even know it exists. A write refused to a caller who may read the entry answers
``403 forbidden`` naming the action; to one who may not read it, ``404``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from nexus_ssot.access.identity import Identity
from nexus_ssot.access.policy import Decision, KeyFilter, PolicySet
from nexus_ssot.ledger.addressing import ACCESS_NAMESPACE, SCHEMAS_NAMESPACE
from nexus_ssot.ledger.commands import Command, Delete, Restore
from nexus_ssot.ledger.errors import Forbidden, NotFound, Unauthenticated
from nexus_ssot.ledger.namespace_settings import SETTINGS_NAMESPACE

from .params import request_state, service_of

#: The namespace system-wide operations are checked against (verify, consistency).
SYSTEM = "_system"

#: How a route's action applies: to one entry ("key"), to a whole namespace
#: ("namespace"), to a namespace the caller may see some of ("some"), to the system
#: ("system"), or per entry inside the route ("filtered"; the route checks each one).
KEY, NAMESPACE, SOME, SYSTEM_WIDE, FILTERED = "key", "namespace", "some", "system", "filtered"

#: The route template of one entry.
ENTRY_TEMPLATE = "/v1/namespaces/{namespace}/entries/{key:path}"
_ENTRY = ENTRY_TEMPLATE
_NS = "/v1/namespaces/{namespace}"

#: (method, route template) → (action, how it applies). A route missing here is refused:
#: a new route must say what it needs.
ROUTES: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", _ENTRY): ("read", KEY),
    ("PUT", _ENTRY): ("write", KEY),
    ("PATCH", _ENTRY): ("write", KEY),
    ("DELETE", _ENTRY): ("delete", KEY),
    ("GET", _ENTRY + "/history"): ("history", KEY),
    ("GET", _ENTRY + "/diff"): ("history", KEY),
    ("POST", _ENTRY + "/revert"): ("restore", KEY),
    ("GET", _ENTRY + "/proof"): ("read", KEY),
    ("GET", _NS + "/entries"): ("read", SOME),
    ("GET", _NS + "/search"): ("read", SOME),
    ("GET", "/v1/namespaces"): ("read", FILTERED),
    ("GET", _NS): ("read", SOME),
    ("PUT", _NS): ("admin", NAMESPACE),
    ("GET", _NS + "/settings/history"): ("history", SOME),
    ("GET", _NS + "/stats"): ("read", NAMESPACE),
    ("POST", _NS + "/restore"): ("restore", SOME),
    ("POST", "/v1/batch"): ("write", FILTERED),
    ("GET", "/v1/events"): ("read", FILTERED),
    ("GET", "/v1/events/stream"): ("read", FILTERED),
    ("GET", "/v1/audit"): ("history", FILTERED),
    ("GET", "/v1/audit/access"): ("history", FILTERED),
    ("GET", "/v1/health/consistency"): ("operate", SYSTEM_WIDE),
    ("GET", "/v1/integrity/verify"): ("operate", SYSTEM_WIDE),
    ("GET", "/v1/integrity/digests"): ("history", SYSTEM_WIDE),
    ("GET", "/v1/integrity/digests/{seq}"): ("history", SYSTEM_WIDE),
    # A namespace's schema is changed like its settings; shared schemas, which any
    # namespace may refer to, by an admin of the system; any caller may read them.
    ("PUT", _NS + "/schema"): ("admin", NAMESPACE),
    ("DELETE", _NS + "/schema"): ("admin", NAMESPACE),
    ("GET", _NS + "/schema"): ("read", SOME),
    ("GET", _NS + "/schema/history"): ("history", SOME),
    ("POST", _NS + "/schema/validate"): ("read", SOME),
    ("GET", _NS + "/quality"): ("read", NAMESPACE),
    ("PUT", "/v1/schemas/{name}"): ("admin", SYSTEM_WIDE),
    ("GET", "/v1/schemas/{name}"): ("read", FILTERED),
    ("GET", "/v1/schemas/{name}/history"): ("history", FILTERED),
    ("GET", "/metrics"): ("metrics", SYSTEM_WIDE),
    ("GET", "/v1/status"): ("metrics", SYSTEM_WIDE),
}

#: Routes of /v1/access/…: each decides itself (a caller manages its own tokens).
ACCESS_ROUTES_PREFIX = "/v1/access/"


@dataclass(frozen=True)
class Guard:
    """The caller and the policies, for the checks a route makes itself."""

    identity: Identity
    policies: PolicySet

    def decide(self, action: str, namespace: str, key: str | None = None) -> Decision:
        return self.policies.decide(self.identity, action, namespace, key)

    def keys(self, action: str, namespace: str) -> KeyFilter:
        return self.policies.key_filter(self.identity, action, namespace)

    def may(self, action: str, namespace: str, key: str | None = None) -> bool:
        return self.decide(action, namespace, key).allowed


class EventVisibility:
    """Whether the caller may see an event of (namespace, key) for ``action``; a
    namespace's settings (``_namespaces``/<ns>) and schema (``_schemas``/namespaces/<ns>)
    are seen by whoever sees some of it, a shared schema by everyone.
    Remembers each namespace's key filter for the request."""

    def __init__(self, guard: Guard, action: str) -> None:
        self.guard = guard
        self.action = action
        self._filters: dict[str, KeyFilter] = {}

    def _keys(self, namespace: str) -> KeyFilter:
        found = self._filters.get(namespace)
        if found is None:
            found = self._filters[namespace] = self.guard.keys(self.action, namespace)
        return found

    def __call__(self, namespace: str, key: str) -> bool:
        if namespace == SETTINGS_NAMESPACE:
            return not self._keys(key).nothing
        if namespace == SCHEMAS_NAMESPACE:
            owner = key.partition("/")[2]
            return key.startswith("definitions/") or not self._keys(owner).nothing
        return self._keys(namespace).allows(key)


def command_action(command: Command) -> str:
    """The action a write command takes."""
    if isinstance(command, Delete):
        return "delete"
    if isinstance(command, Restore):
        return "restore"
    return "write"


def guard_of(request: Request) -> Guard:
    identity = request_state(request).get("identity")
    if identity is None:
        raise Unauthenticated("this request needs a bearer token", reason="missing")
    return Guard(identity, service_of(request).access.policies)


def refuse(request: Request, guard: Guard, action: str, namespace: str,
           key: str | None, decision: Decision, *, hidden_as: str | None = None) -> Exception:
    """The error for a refused ``action`` (and the access log's record of it, with the
    same status): 404 when the caller may not read what it asked about, else 403 naming
    the action. With ``hidden_as``, what the caller may not read is refused 403 too, named
    ``hidden_as`` instead (a restore: the caller asked about its plan, not about a key)."""
    may_read = (guard.may("read", namespace, key) if key is not None
                else guard.policies.may_see_namespace(guard.identity, "read", namespace))
    hidden = action in ("read", "history") or not may_read
    service_of(request).denied(request, 404 if hidden and hidden_as is None else 403,
                               guard.identity, action, namespace, key, decision)
    if hidden and hidden_as is not None:
        return Forbidden(f"{guard.identity.subject} may not {action} {hidden_as}",
                         action=action)
    if hidden:
        if key is not None:
            return NotFound(f"entry {namespace}/{key} does not exist", code="entry_not_found",
                            field="key")
        return NotFound(f"namespace {namespace} does not exist", code="namespace_not_found",
                        field="namespace")
    target = f"entry {namespace}/{key}" if key is not None else f"namespace {namespace}"
    return Forbidden(f"{guard.identity.subject} may not {action} {target} ({decision.reason})",
                     action=action)


def require(request: Request, action: str, namespace: str, key: str | None = None) -> Guard:
    """The caller's guard, once ``action`` on (namespace, key) is allowed."""
    guard = guard_of(request)
    decision = guard.decide(action, namespace, key)
    if not decision.allowed:
        raise refuse(request, guard, action, namespace, key, decision)
    if action == "admin":
        service_of(request).admin_used(request, guard.identity, namespace, key, decision)
    return guard


def require_some(request: Request, action: str, namespace: str) -> Guard:
    """The caller's guard, once it may ``action`` some key of ``namespace``."""
    guard = guard_of(request)
    if guard.keys(action, namespace).nothing:
        decision = guard.decide(action, namespace, None)
        raise refuse(request, guard, action, namespace, None, decision)
    return guard


async def authorize(request: Request) -> None:
    """The app-wide dependency: the route's action, checked before the route runs."""
    asked_at = time.monotonic()
    if request_state(request).get("identity") is None:
        return  # a public route (authentication let it through without a token)
    route: Any = request.scope.get("route")
    template = getattr(route, "path", "")
    if template.startswith(ACCESS_ROUTES_PREFIX):
        return
    rule = ROUTES.get((request.method, template))
    if rule is None:
        raise Forbidden(f"{request.method} {template} is not open to callers",
                        action="unknown")
    action, scope = rule
    params = request.path_params
    if _allowed(guard_of(request), action, scope, template, params):
        if action != "admin":
            return  # decided once; an admin action goes on to be recorded below
    else:
        # This worker re-reads the policies every access_refresh_seconds: one changed
        # through another worker a moment ago may not be here yet. A refusal is decided
        # on fresh ones (one indexed query, only when refusing).
        await service_of(request).access.refresh(unless_read_since=asked_at)
    if scope == KEY:
        require(request, action, params["namespace"], params["key"])
    elif scope == NAMESPACE:
        require(request, action, params["namespace"])
    elif scope == SOME:
        require_some(request, action, params["namespace"])
    elif scope == SYSTEM_WIDE:
        require(request, action, SYSTEM)
    elif template == "/v1/audit/access":
        require(request, "history", ACCESS_NAMESPACE)


def passes(identity: Identity, policies: PolicySet, method: str, template: str,
           params: dict[str, Any]) -> bool:
    """Whether ``authorize`` lets a request through at once, refusing nothing and
    recording nothing: a non-admin action of a route in ``ROUTES`` that the policies
    allow. (False says only that ``authorize`` itself must decide.)"""
    rule = ROUTES.get((method, template))
    if rule is None or rule[0] == "admin":
        return False
    return _allowed(Guard(identity, policies), rule[0], rule[1], template, params)


def _allowed(guard: Guard, action: str, scope: str, template: str,
             params: dict[str, Any]) -> bool:
    """Whether ``authorize`` lets the request through (what it checks, without refusing)."""
    if scope == KEY:
        return guard.may(action, params["namespace"], params["key"])
    if scope == NAMESPACE:
        return guard.may(action, params["namespace"])
    if scope == SOME:
        return not guard.keys(action, params["namespace"]).nothing
    if scope == SYSTEM_WIDE:
        return guard.may(action, SYSTEM)
    if template == "/v1/audit/access":
        return guard.may("history", ACCESS_NAMESPACE)
    return True
