"""The composition root of the HTTP process: ``create_app(settings)``.

Nothing connects at import time. The lifespan migrates the schema, opens the event store
application, starts the group-commit writer and the read pool, hands the HTTP protocol its
rules (``http_protocol.py``), and on shutdown (after uvicorn has drained in-flight
requests) lets the writer finish what it holds. If the database cannot be reached at
start, the process serves anyway, not ready, and keeps trying (``starting.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexus_ssot.access.identity import Identity
from nexus_ssot.access.log import AccessLog
from nexus_ssot.access.policy import RateLimit as RateLimitSetting
from nexus_ssot.ledger.errors import LedgerError, SchemaViolation
from nexus_ssot.ledger.metrics import NamespaceLabels, record_commit
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.telemetry import tracer_provider as make_tracer_provider
from nexus_ssot.ledger.writer import GroupCommitWriter
from nexus_ssot.ledger.writer_service import LocalWriter, RemoteWriter, Writer

from . import (
    access_audit,
    access_routes,
    audit,
    batch,
    consistency,
    console_pages,
    digests,
    docs_pages,
    entries,
    errors,
    events,
    health,
    history,
    metrics,
    namespaces,
    negotiation,
    quality,
    restore,
    schema_definitions,
    schemas,
    search,
    status,
    verify,
    views,
)
from . import openapi as openapi_document
from .access_state import AccessState
from .authentication import Authenticate, Authenticator, oidc_authenticator
from .current_reads import CurrentReads
from .entry_fast_path import EntryFastPath
from .guard import authorize
from .http_protocol import STATE_KEY, ConnectionRules
from .log_notifier import LogNotifier
from .query_values import plain_query
from .rate_limit import RateLimit, RateLimiter
from .read_replica import read_connection
from .service import AppState, Service
from .starting import NotReadyYet, Startup

_CORRELATION_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")


class CorrelationId:
    """Takes ``X-Correlation-Id`` from the request (or makes one) and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-correlation-id"), None)
        value = given if given is not None and _CORRELATION_ID.match(given) else None
        if value is None:
            value = str(uuid.uuid4()).encode()
        scope.setdefault("state", {})["correlation_id"] = value.decode()
        header = (b"x-correlation-id", value)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


#: Every route, in the order the app matches them, which is also the order of the served
#: OpenAPI document's paths (kept as it was first published).
ROUTERS: list[APIRouter] = [
    digests.router,  # first: its …/{key:path}/proof wins over an entry's routes
    entries.writes,
    history.router,  # before entries.reads, whose GET …/{key:path} would take …/history
    entries.reads,
    namespaces.listing,
    events.router,
    audit.router,
    health.router,
    namespaces.router,
    batch.router,
    restore.router,
    views.router,
    consistency.router,
    verify.router,
    access_routes.router,
    access_audit.router,
    schemas.router,
    schema_definitions.router,
    quality.router,
    search.router,
    status.router,
    metrics.router,
]


def create_app(settings: Settings) -> FastAPI:
    if not settings.database_url:
        raise ValueError("create_app needs settings.database_url (ssot serve resolves it)")
    database_url = settings.database_url
    tracer_provider = make_tracer_provider(settings)
    tracer = tracer_provider.get_tracer("nexus_ssot.api")

    startup = Startup()

    async def open_service(app: FastAPI, stack: contextlib.AsyncExitStack) -> None:
        """Migrate, open the store and its pools, and make the app's ``Service``; what
        it opened is closed with ``stack`` (or at once, if it fails half way)."""
        async with contextlib.AsyncExitStack() as opened:
            await asyncio.to_thread(migrate, database_url)
            writer: Writer
            if settings.writer_socket:
                remote = RemoteWriter(settings.writer_socket)
                opened.push_async_callback(remote.close)
                writer = remote
            else:
                application = await asyncio.to_thread(open_application, database_url,
                                                       pool_size=2)
                opened.push_async_callback(asyncio.to_thread, application.close)
                local = GroupCommitWriter(
                    application, settings.limits, max_batch=settings.max_batch,
                    cache_size=settings.state_cache_size,
                    on_commit=record_commit,
                    hash_chain=settings.hash_chain,
                    implicit_namespaces=settings.implicit_namespaces,
                    tracer_provider=tracer_provider,
                )
                local.start()
                opened.push_async_callback(asyncio.to_thread, local.stop)
                writer = LocalWriter(local)
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                database_url,
                min_size=min(2, settings.pool_size),
                max_size=settings.pool_size,
                kwargs={"autocommit": True},
                open=False,
            )
            await pool.open(wait=True, timeout=30)
            opened.push_async_callback(pool.close)
            read_pool: AsyncConnectionPool[Any] | None = None
            if settings.read_database_url:  # opened in the background: it may be down
                read_pool = AsyncConnectionPool(
                    settings.read_database_url, min_size=1, max_size=settings.pool_size,
                    kwargs={"autocommit": True}, open=False)
                await read_pool.open(wait=False)
                opened.push_async_callback(read_pool.close)
            notifier = LogNotifier(database_url)
            notifier.start()
            opened.push_async_callback(notifier.stop)
            access = AccessState(pool, settings.access_refresh_seconds)
            await access.start()
            opened.push_async_callback(access.stop)
            access_log = AccessLog.from_settings(pool, settings)
            await access_log.start()
            opened.push_async_callback(access_log.stop)  # before the pool closes
            app.state.service = Service(
                settings, writer, pool, tracer_provider, tracer, notifier, access,
                Authenticator(settings, access, oidc_authenticator(settings)),
                access_log, NamespaceLabels(settings.metrics_namespace_labels,
                                            settings.metrics_namespace_limit),
                read_pool)
            service = app.state.service
            # (with a read replica, reads go where read_connection sends them)
            service.current_reads = CurrentReads(lambda _: read_connection(service, None),
                                                 pool if read_pool is None else None)
            opened.push_async_callback(service.current_reads.close)  # before the pool closes
            if read_pool is not None:
                service.written_reads = CurrentReads(
                    lambda needs: read_connection(service, needs))
            stack.push_async_callback(opened.pop_all().aclose)

    def end_feeds() -> None:
        service: Service | None = getattr(app.state, "service", None)
        if service is not None:
            service.notifier.end_feeds()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            await startup.start(lambda: open_service(app, stack))
            metrics.warm(settings.metrics_dir)
            try:
                yield {STATE_KEY: ConnectionRules(
                    head_timeout=settings.http_header_timeout_seconds,
                    body_timeout=settings.http_body_timeout_seconds,
                    on_shutdown=end_feeds)}
            finally:
                await startup.stop()  # before what it opened closes
                tracer_provider.shutdown()
                metrics.process_exiting(settings.metrics_dir)

    app = FastAPI(
        title="NEXUS SSOT Ledger",
        version="1",
        description=(
            "Event-sourced single source of truth for JSON records. Every change is an "
            "immutable event; every error is application/problem+json with a stable `code`."
        ),
        lifespan=lifespan,
        dependencies=[Depends(negotiation.acceptable), Depends(authorize),
                      Depends(plain_query)],
        docs_url=None, redoc_url=None,  # docs_pages serves them, with their assets
        # The service traces and counts requests itself (docs/tracing.md, docs/metrics.md):
        # FastAPI's own telemetry would add a second span and second metrics for each once
        # a global OpenTelemetry provider is set, and asks the environment whether one is
        # at every request even when none is.
        telemetry={"tracing": False, "metrics": False, "logs": False,
                   "operation_spans": False, "auto_configure": False},
    )
    app.state = AppState()  # the service read as a plain attribute (api/service.py)
    for router in ROUTERS:
        app.include_router(router)
    docs_pages.mount(app)
    console_pages.mount(app)
    app.add_exception_handler(LedgerError, errors.ledger_error_handler)
    app.add_exception_handler(SchemaViolation, quality.schema_violation_handler)
    app.add_exception_handler(RequestValidationError, errors.validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, errors.http_error_handler)
    app.add_exception_handler(psycopg.OperationalError, errors.store_unreachable_handler)
    app.add_exception_handler(ClientDisconnect, errors.client_disconnect_handler)
    app.add_exception_handler(Exception, errors.unexpected_error_handler)
    def limits_for(identity: Identity) -> RateLimitSetting | None:
        return app.state.service.access.policies.rate_limit(identity)  # type: ignore[no-any-return]

    def on_limited(scope: Scope, identity: Identity | None, source: str) -> None:
        app.state.service.refused(scope, 429, "rate_limited", identity)

    limiter = RateLimiter.from_settings(settings, limits_for=limits_for)
    app.add_middleware(EntryFastPath)  # innermost: after identity and rate limit
    app.add_middleware(RateLimit, limiter=limiter, on_limited=on_limited)  # after identity
    app.add_middleware(Authenticate, limiter=limiter)
    app.add_middleware(NotReadyYet, startup=startup)  # no service yet: 503, but liveness
    app.add_middleware(CorrelationId)  # every answer, a 401 too, carries the id
    app.add_middleware(metrics.RequestMetrics)  # outermost: counts every answer

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document.complete(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
