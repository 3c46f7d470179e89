"""A namespace's schema: set it (checked against the namespace's current entries first,
or only checked: ``?dry_run=true``), read it now or in the past, its history, remove it,
and check a document against it. The schema is the entry ``_schemas/namespaces/<ns>``, so
every change is an event with who, when and why (docs/schemas.md)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from nexus_ssot.ledger.addressing import SCHEMAS_NAMESPACE, check_namespace
from nexus_ssot.ledger.commands import Delete, SetSchema
from nexus_ssot.ledger.errors import NotFound, PreconditionFailed, SchemaViolations
from nexus_ssot.ledger.schemas.compatibility import widens
from nexus_ssot.ledger.schemas.compiler import CompiledSchema, check_schema
from nexus_ssot.ledger.schemas.records import SchemaRecord, namespace_key
from nexus_ssot.projections import entry_history as entry_history_view
from nexus_ssot.projections.schema_check import DataReport, check_entries
from nexus_ssot.projections.schema_records import (
    Definitions,
    RecordedSchema,
    current_schema,
    format_asserts,
    recorded,
)

from . import http, models, schema_models
from .cuts import cut_at
from .errors import problem_responses
from .pagination import decode_cursor, encode_cursor, page
from .params import (
    JSON,
    MAX_INT,
    READ_ERRORS,
    WRITE_ERRORS,
    WRITE_HEADERS,
    AsOf,
    Cursor,
    Limit,
    Namespace,
    one_coordinate,
    service_of,
)
from .writes import WriteRequest, within_write_timeout

router = APIRouter(prefix="/v1")

SCHEMA_JSON = "application/schema+json"
#: How often a schema is checked again over the entries written while it was checked.
_ATTEMPTS = 5

SCHEMA_BODY = {"requestBody": {"required": True, "content": {
    SCHEMA_JSON: {"schema": {"type": ["object", "boolean"]}},
    JSON: {"schema": {"type": ["object", "boolean"]}}}}}


async def read_schema_body(request: Request) -> tuple[Any, bytes]:
    """The request body: a JSON Schema (its references checked)."""
    http.require_media_type(request, JSON, SCHEMA_JSON)
    body = await http.read_body(request, service_of(request).settings.max_request_bytes)
    schema = http.parse_json(body, field="schema", root="")
    check_schema(schema)
    return schema, body


def _verdict(old: SchemaRecord, new: Any, pins: dict[str, int]) -> tuple[bool | None, str]:
    """``widens``, unless the shared schemas both refer to are pinned at other versions
    (the same ``$ref`` then means something else: only a sample tells)."""
    compatible, reason = widens(old.schema, new)
    if compatible is True and old.definitions != pins:
        return None, "the shared schemas it refers to are pinned at other versions"
    return compatible, reason


def _compatibility(old: SchemaRecord | None, new: Any, pins: dict[str, int],
                   report: DataReport) -> dict[str, Any]:
    if old is None:
        return {"compatible": True, "decided": True, "reason": "there was no schema before"}
    compatible, reason = _verdict(old, new, pins)
    if compatible is not None:
        return {"compatible": compatible, "decided": compatible is not None, "reason": reason}
    return {"compatible": False if report.broken_count else None, "decided": False,
            "reason": f"{reason}; sampled over the current entries",
            "sampled": report.valid_before, "broken": report.broken}


async def _check(request: Request, ns: str, schema: Any, *, after: str, limit: int
                 ) -> tuple[dict[str, int], CompiledSchema, DataReport, dict[str, Any]]:
    """Compile ``schema`` for ``ns`` and check the namespace's entries against it."""
    async with service_of(request).pool.connection() as conn:
        definitions = await Definitions.read(conn)
        pins = definitions.pins(schema)
        asserts = await format_asserts(conn, ns)
        compiled = definitions.compile(schema, pins, assert_formats=asserts)
        previous = await recorded(conn, namespace_key(ns))
        old = previous.record if previous is not None else None
        sample = old is not None and _verdict(old, schema, pins)[0] is None
        old_compiled = (definitions.compile(old.schema, old.definitions,
                                            assert_formats=asserts)
                        if sample and old is not None else None)
        report = await check_entries(conn, ns, compiled, old=old_compiled, after=after,
                                     limit=limit)
    return pins, compiled, report, _compatibility(old, schema, pins, report)


def _report_json(ns: str, report: DataReport, limit: int, pins: dict[str, int],
                 compatibility: dict[str, Any]) -> dict[str, Any]:
    items = report.items[:limit]
    return {"namespace": ns, "checked_position": report.position, "entries": report.entries,
            "conforming": report.conforming, "violating": report.violating,
            "violations": items,
            "next_cursor": (encode_cursor({"k": items[-1]["key"]})
                            if len(report.items) > limit else None),
            "compatibility": compatibility, "definitions": pins}


@router.put(
    "/namespaces/{namespace}/schema",
    summary="Set a namespace's JSON Schema (draft 2020-12), checked against its entries",
    response_model=schema_models.SchemaResult | schema_models.DataCheck,
    responses={201: {"model": schema_models.SchemaResult, "description": "First schema"},
               **WRITE_ERRORS},
    openapi_extra={**WRITE_HEADERS, **SCHEMA_BODY},
    tags=["schemas"],
)
async def put_schema(
    request: Request, namespace: Namespace,
    dry_run: Annotated[bool, Query(description="Only check: report how the current entries "
                                   "fare, change nothing")] = False,
    allow_existing_violations: Annotated[bool, Query(
        description="Set it even though current entries violate it (recorded)")] = False,
    limit: Limit = 100, cursor: Cursor = None,
) -> Response:
    ns = check_namespace(namespace)
    schema, body = await read_schema_body(request)
    expected = http.expectation(request)  # a dry run checks the request's headers too
    meta = WriteRequest(request, body)
    after = (decode_cursor(cursor, "k") or {}).get("k") or ""
    pins, compiled, report, compatibility = await _check(request, ns, schema, after=after,
                                                         limit=limit)
    answer = _report_json(ns, report, limit, pins, compatibility)
    if dry_run:
        return Response(orjson.dumps(answer), media_type=JSON)
    service = service_of(request)
    record = SchemaRecord(schema, pins, allow_existing_violations).document()
    violating = report.violating
    for _ in range(_ATTEMPTS):
        if violating and not allow_existing_violations:
            raise SchemaViolations(
                f"current entries of namespace {ns} violate this schema ({violating}, as of "
                f"position {answer['checked_position']}); nothing was changed: fix them "
                "first, or set it with ?allow_existing_violations=true (the quality view "
                "then counts them)", field="schema", **answer)
        command = SetSchema(SCHEMAS_NAMESPACE, namespace_key(ns), expected, record=record,
                            checked_position=answer["checked_position"])
        try:
            outcome = await within_write_timeout(service, service.writer.write(
                command, meta.context(), meta.idempotency))
            break
        except PreconditionFailed as e:
            if e.code != "schema_check_stale":
                raise
        # entries changed while they were checked: check those again
        async with service.pool.connection() as conn:
            since = await check_entries(conn, ns, compiled, since=answer["checked_position"],
                                        limit=limit)
        answer["checked_position"] = since.position
        if since.violating:
            violating = since.violating
            answer.update(violating=violating, violations=since.items[:limit],
                          next_cursor=None)
    else:
        raise PreconditionFailed(
            f"namespace {ns} kept changing while its entries were checked against the "
            f"schema ({_ATTEMPTS} times); retry", code="schema_check_stale", field="schema")
    headers = {"ETag": http.etag(outcome.version)}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    result: dict[str, Any] = {
        "namespace": ns, "version": outcome.version, "position": outcome.position,
        "recorded_at": http.rfc3339(outcome.recorded_at), "definitions": pins,
        "allow_existing_violations": allow_existing_violations,
        "check": {key: answer[key] for key in ("checked_position", "entries", "conforming",
                                                 "violating")},
        "compatibility": compatibility}
    if outcome.unchanged:
        result["unchanged"] = True
    created = outcome.event_type == "entry.created"
    return Response(orjson.dumps(result), status_code=201 if created else 200,
                    media_type=JSON, headers=headers)


def schema_body(found: RecordedSchema, **names: str) -> Response:
    body = {**names, **found.json(), "recorded_at": http.rfc3339(found.recorded_at)}
    return Response(orjson.dumps(body), media_type=JSON,
                    headers={"ETag": http.etag(found.version)})


@router.get(
    "/namespaces/{namespace}/schema",
    summary="A namespace's schema: now, at a version, or as of a time",
    response_model=schema_models.RecordedSchema,
    responses=READ_ERRORS,
    tags=["schemas"],
)
async def get_schema(
    request: Request, namespace: Namespace,
    version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None, as_of: AsOf = None,
) -> Response:
    ns = check_namespace(namespace)
    one_coordinate(version=version, as_of=as_of)
    async with service_of(request).pool.connection() as conn:
        position = await cut_at(conn, as_of, None) if as_of is not None else None
        found = await recorded(conn, namespace_key(ns), version=version, position=position)
    when = (f" as of {http.rfc3339(as_of)}" if as_of is not None
            else f" at version {version}" if version is not None else "")
    if found is None:
        raise NotFound(f"namespace {ns} had no schema{when}", code="schema_not_found",
                       field="version" if version is not None else "namespace")
    if found.record is None and version is None:
        raise NotFound(f"namespace {ns} has no schema{when}: version {found.version} "
                       "removed it", code="schema_not_found", field="namespace",
                       removed_version=found.version)
    return schema_body(found, namespace=ns)


@router.get(
    "/namespaces/{namespace}/schema/history",
    summary="Every change of a namespace's schema, with who, when and why",
    response_model=models.HistoryPage,
    responses=READ_ERRORS,
    tags=["schemas"],
)
async def schema_history(request: Request, namespace: Namespace, limit: Limit = 100,
                         cursor: Cursor = None) -> Response:
    return await history_page(request, namespace_key(check_namespace(namespace)), limit,
                              cursor)


async def history_page(request: Request, key: str, limit: int, cursor: str | None
                       ) -> Response:
    """A page of the versions of the schema entry ``key``."""
    state = decode_cursor(cursor, "v")
    async with service_of(request).pool.connection() as conn:
        rows = await entry_history_view.history(conn, SCHEMAS_NAMESPACE, key,
                                                after_version=state["v"] if state else None,
                                                limit=limit + 1)
    return page(rows, limit, lambda r: r[1], lambda r: {"v": r[0]})


@router.delete(
    "/namespaces/{namespace}/schema",
    summary="Remove a namespace's schema (a new version meaning no schema)",
    response_model=schema_models.SchemaResult,
    responses=WRITE_ERRORS,
    openapi_extra=WRITE_HEADERS,
    tags=["schemas"],
)
async def delete_schema(request: Request, namespace: Namespace) -> Response:
    ns = check_namespace(namespace)
    service = service_of(request)
    meta = WriteRequest(request, b"")
    try:
        outcome = await within_write_timeout(service, service.writer.write(
            Delete(SCHEMAS_NAMESPACE, namespace_key(ns), http.expectation(request)),
            meta.context(), meta.idempotency))
    except NotFound as e:
        raise NotFound(f"namespace {ns} has no schema to remove", code="schema_not_found",
                       field="namespace") from e
    return Response(orjson.dumps({
        "namespace": ns, "version": outcome.version, "position": outcome.position,
        "recorded_at": http.rfc3339(outcome.recorded_at), "definitions": {},
        "allow_existing_violations": False}), media_type=JSON,
        headers={"ETag": http.etag(outcome.version)})


@router.post(
    "/namespaces/{namespace}/schema/validate",
    summary="Check a document against the namespace's current schema (nothing is written)",
    response_model=schema_models.DocumentCheck,
    responses={**READ_ERRORS, **problem_responses(413, 415)},
    openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": {}}}}},
    tags=["schemas"],
)
async def validate_document(request: Request, namespace: Namespace) -> Response:
    ns = check_namespace(namespace)
    service = service_of(request)
    http.require_media_type(request, JSON)
    body = await http.read_body(request, service.settings.max_request_bytes)
    document = http.parse_json(body, field="document", root="")
    async with service.pool.connection() as conn:
        version, compiled = await current_schema(conn, ns)
    violations = compiled.violations(document) if compiled is not None else []
    return Response(orjson.dumps({
        "namespace": ns, "schema_version": version if compiled is not None else 0,
        "valid": not violations, "violations": violations}), media_type=JSON)
