"""Namespaces: the list of them with their entry counts, and one namespace's settings
(recorded as ``namespace.configured`` events, with their history) and counts.

The routes come in two routers only to keep the served OpenAPI document's order of paths:
``listing`` is routed before the events, audit and health routes, ``router`` after them."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from nexus_ssot.ledger.addressing import check_namespace
from nexus_ssot.ledger.events import EntryState as _State
from nexus_ssot.ledger.namespace_settings import (
    SETTINGS_NAMESPACE,
    check_settings,
    configure,
    settings_of,
)
from nexus_ssot.projections import current_state
from nexus_ssot.projections import entry_history as entry_history_view

from . import http, models
from .existence import require_namespace
from .guard import guard_of
from .pagination import decode_cursor, page
from .params import (
    JSON,
    READ_ERRORS,
    WRITE_ERRORS,
    WRITE_HEADERS,
    Cursor,
    Limit,
    Namespace,
    service_of,
)
from .writes import WriteRequest, within_write_timeout

#: The list of namespaces.
listing = APIRouter(prefix="/v1")
#: One namespace: its settings and counts.
router = APIRouter(prefix="/v1")


@listing.get(
    "/namespaces",
    summary="Namespaces with their entry counts",
    response_model=models.NamespacePage,
    responses=READ_ERRORS,
    tags=["namespaces"],
)
async def list_namespaces(request: Request, limit: Limit = 100, cursor: Cursor = None) -> Response:
    position = decode_cursor(cursor, "n")
    after = position["n"] if position else ""
    service = service_of(request)
    guard = guard_of(request)

    def shown(row: current_state.NamespaceCount) -> dict[str, Any] | None:
        keys = guard.keys("read", row.namespace)
        if keys.everything:
            at = row.last_recorded_at
            return {**row.__dict__, "last_recorded_at": http.rfc3339(at) if at else None}
        if keys.nothing:
            return None
        return {"namespace": row.namespace, "entries": None, "deleted": None,
                "last_position": None, "last_recorded_at": None}

    async with service.pool.connection() as conn:
        rows: list[dict[str, Any]] = []
        while len(rows) <= limit:
            batch = await current_state.list_namespaces(conn, after=after, limit=limit + 1)
            rows += [r for r in map(shown, batch) if r is not None]
            if len(batch) < limit + 1:
                break
            after = batch[-1].namespace
    return page(rows[:limit + 1], limit, orjson.dumps, lambda r: {"n": r["namespace"]})


async def _settings_state(conn: Any, ns: str) -> tuple[int, dict[str, Any]]:
    current = await current_state.current_entry(conn, SETTINGS_NAMESPACE, ns)
    if current is None:
        return 0, settings_of(None)
    document = orjson.loads(current.body)["document"]
    return current.version, settings_of(_State(SETTINGS_NAMESPACE, ns, current.version,
                                               document, current.deleted))


@router.get(
    "/namespaces/{namespace}",
    summary="A namespace: its settings and entry counts",
    response_model=models.Namespace,
    responses=READ_ERRORS,
    tags=["namespaces"],
)
async def get_namespace(request: Request, namespace: Namespace) -> Response:
    ns = check_namespace(namespace)
    service = service_of(request)
    entries: int | None
    deleted: int | None
    last_position: int | None
    async with service.pool.connection() as conn:
        version, settings = await _settings_state(conn, ns)
        if guard_of(request).keys("read", ns).everything:
            entries, deleted, last_position = await current_state.namespace_counts(conn, ns)
        else:  # counts would tell of keys the caller may not read
            entries = deleted = last_position = None
        if version == 0 and not (entries or deleted):  # no settings; entries?
            await require_namespace(conn, ns)
    return Response(orjson.dumps({
        "namespace": ns, "settings": settings, "settings_version": version,
        "entries": entries, "deleted": deleted, "last_position": last_position,
    }), media_type=JSON, headers={"ETag": http.etag(version)})


@router.put(
    "/namespaces/{namespace}",
    summary="Set a namespace's settings (recorded as a namespace.configured event)",
    response_model=models.SettingsResult,
    status_code=200,
    responses={201: {"model": models.SettingsResult, "description": "First settings"},
               **WRITE_ERRORS},
    openapi_extra={**WRITE_HEADERS, "requestBody": {"required": True, "content": {
        JSON: {"schema": {**models.NamespaceSettings.model_json_schema(),
                          "additionalProperties": False}}}}},
    tags=["namespaces"],
)
async def put_namespace(request: Request, namespace: Namespace) -> Response:
    ns = check_namespace(namespace)
    service = service_of(request)
    http.require_media_type(request, JSON)
    body = await http.read_body(request, service.settings.max_request_bytes)
    settings = check_settings(http.parse_json(body, field="settings", root=""))
    meta = WriteRequest(request, body)
    outcome = await within_write_timeout(service, service.writer.write(
        configure(ns, settings, http.expectation(request)), meta.context(), meta.idempotency))
    headers = {"ETag": http.etag(outcome.version)}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    answer = {"namespace": ns, "settings": outcome.document,
              "settings_version": outcome.version, "position": outcome.position,
              "recorded_at": http.rfc3339(outcome.recorded_at)}
    if outcome.unchanged:  # the same settings again: nothing recorded
        answer["unchanged"] = True
    created = outcome.version == 1 and not outcome.unchanged
    return Response(orjson.dumps(answer), status_code=201 if created else 200, media_type=JSON,
                    headers=headers)


@router.get(
    "/namespaces/{namespace}/settings/history",
    summary="Every change of a namespace's settings, with who, when and why",
    response_model=models.HistoryPage,
    responses=READ_ERRORS,
    tags=["namespaces"],
)
async def namespace_settings_history(
    request: Request, namespace: Namespace, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    ns = check_namespace(namespace)
    state = decode_cursor(cursor, "v")
    after = state["v"] if state else None
    async with service_of(request).pool.connection() as conn:
        rows = await entry_history_view.history(conn, SETTINGS_NAMESPACE, ns,
                                                after_version=after, limit=limit + 1)
        if not rows:  # never configured: does it exist at all?
            await require_namespace(conn, ns)
    return page(rows, limit, lambda r: r[1], lambda r: {"v": r[0]})
