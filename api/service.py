"""What the routes need, built once per process by the composition root (``app.py``)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Tracer
from psycopg_pool import AsyncConnectionPool
from starlette.datastructures import State
from starlette.types import Scope

from nexus_ssot.access.errors import AuthenticationFailed
from nexus_ssot.access.identity import Identity
from nexus_ssot.access.log import AccessLog, AccessRecord
from nexus_ssot.access.policy import Decision
from nexus_ssot.ledger import telemetry
from nexus_ssot.ledger.metrics import NamespaceLabels, metrics
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ledger.writer_service import Writer

from .access_state import AccessState
from .authentication import Authenticator
from .current_reads import CurrentReads
from .log_head import LogHead
from .log_notifier import LogNotifier


@dataclass
class Service:
    settings: Settings
    writer: Writer
    pool: AsyncConnectionPool[Any]
    tracer_provider: TracerProvider
    tracer: Tracer
    notifier: LogNotifier
    access: AccessState
    authenticator: Authenticator
    #: The access log writer: ``access_log.record(AccessRecord(...))`` for every 401,
    #: 403, 404 by policy, 429 and admin action (never blocks, never raises).
    access_log: AccessLog
    #: The namespace label of the per-namespace metrics (when they are on).
    namespace_labels: NamespaceLabels
    #: The read replica's pool (``SSOT_READ_DATABASE_URL``), or None: see read_replica.py.
    read_pool: AsyncConnectionPool[Any] | None = None
    #: The furthest log position this process has seen committed on the primary.
    log_head: LogHead = field(default_factory=LogHead)
    #: With a read replica, reads of one entry's current state that name a position it
    #: must hold (``min_position``), gathered apart from ``current_reads`` so that those
    #: never wait for the replica to catch up (set by the app; None without a replica).
    written_reads: CurrentReads | None = None
    #: Reads of one entry's current state, gathered under load (set by the app: it reads
    #: where ``read_replica.read_connection`` says).
    current_reads: CurrentReads = field(init=False)

    def span(self, name: str, *, context: Context | None = None,
             kind: SpanKind = SpanKind.INTERNAL) -> AbstractContextManager[Span]:
        """A span of this service's tracer, a child of ``context`` when given (one that
        does nothing while no exporter or processor is there to receive it)."""
        made: AbstractContextManager[Span] = telemetry.span(
            self.tracer_provider, self.tracer, name, context=context, kind=kind)
        return made

    async def authenticate(self, token: str) -> Identity:
        """The identity a bearer token proves (raises ``AuthenticationFailed``). A JWT may
        need its issuer's keys fetched: that happens off the event loop."""
        try:
            identity = self.authenticator.authenticate_without_io(token)
        except AuthenticationFailed as e:
            # A token made through another worker is known here within
            # access_refresh_seconds; one refused as unknown is looked up on fresh state
            # before the caller is told so (one indexed query, only on a refusal), unless
            # a read began after it was refused.
            if e.reason != "unknown_token":
                raise
            await self.access.refresh(unless_read_since=time.monotonic())
            identity = self.authenticator.authenticate_without_io(token)
        if identity is None:
            return await asyncio.to_thread(self.authenticator.authenticate, token)
        return identity

    def refused(self, scope: Scope, status: int, reason: str,
                identity: Identity | None) -> None:
        """Record a request refused before any route ran (401, untrusted proxy)."""
        self._record(scope, "deny", status, reason, identity)

    def denied(self, request: Request, status: int, identity: Identity, action: str,
               namespace: str, key: str | None, decision: Decision) -> None:
        """Record a request the policy refused."""
        self._record(request.scope, "deny", status, "policy", identity, action=action,
                     namespace=namespace, key=key, rule=decision)

    def admin_used(self, request: Request, identity: Identity, namespace: str,
                   key: str | None, decision: Decision) -> None:
        """Record a use of an admin action."""
        self._record(request.scope, "allow", 200, "admin", identity, action="admin",
                     namespace=namespace, key=key, rule=decision)

    def _record(self, scope: Scope, outcome: str, status: int, reason: str,
                identity: Identity | None, *, action: str | None = None,
                namespace: str | None = None, key: str | None = None,
                rule: Decision | None = None) -> None:
        """One record of the access log (never the token; a 401 has no route yet)."""
        client = scope.get("client")
        if outcome == "deny":
            metrics().auth_denials.labels(reason).inc()
        self.access_log.record(AccessRecord(
            decision=outcome, status=status, reason=reason, method=scope.get("method", ""),
            path=getattr(scope.get("route"), "path", None) or "unmatched",
            source=client[0] if client else None,
            subject=identity.subject if identity else None, action=action,
            namespace=namespace, key=key, policy=rule.policy if rule else None,
            rule=(rule.rule if rule.rule is not None else rule.by) if rule else None,
            correlation_id=scope.get("state", {}).get("correlation_id"),
            auth_method=identity.method if identity else None))


class AppState(State):
    """The app's ``app.state``, holding the ``Service`` (``service``, None until the
    lifespan has opened it) as a plain attribute. Starlette's ``State`` keeps what is set
    on it in a dict of its own, found only once the ordinary lookup has failed: every read
    made and dropped an AttributeError first (~3K instructions), and the middlewares and
    routes read the service several times a request. Anything else set on it stays in
    that dict."""

    service: Service | None

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "service", None)

    def __setattr__(self, key: Any, value: Any) -> None:
        if key == "service":
            object.__setattr__(self, key, value)
        else:
            super().__setattr__(key, value)
