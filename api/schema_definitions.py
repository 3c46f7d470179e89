"""Shared definitions: schemas registered by name (``PUT /v1/schemas/{name}``) that a
namespace's schema refers to as ``urn:ssot:schemas:<name>``. A schema that refers to one
is pinned to its version at the time it is set, so changing a definition changes no
namespace's schema until that schema is set again (docs/schemas.md)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from nexus_ssot.ledger.addressing import SCHEMAS_NAMESPACE
from nexus_ssot.ledger.commands import SetSchema
from nexus_ssot.ledger.errors import NotFound
from nexus_ssot.ledger.schemas.records import SchemaRecord, definition_key
from nexus_ssot.projections.schema_records import Definitions, recorded

from . import http, models, schema_models
from .params import (
    JSON,
    MAX_INT,
    READ_ERRORS,
    WRITE_ERRORS,
    WRITE_HEADERS,
    Cursor,
    Limit,
    service_of,
)
from .schemas import SCHEMA_BODY, history_page, read_schema_body, schema_body
from .writes import WriteRequest, within_write_timeout

router = APIRouter(prefix="/v1")

Name = Annotated[str, Path(description="The shared schema's name (urn:ssot:schemas:<name>)",
                           pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


@router.put(
    "/schemas/{name}",
    summary="Register or change a shared schema that namespace schemas can $ref",
    response_model=schema_models.SchemaResult,
    responses={201: {"model": schema_models.SchemaResult, "description": "First version"},
               **WRITE_ERRORS},
    openapi_extra={**WRITE_HEADERS, **SCHEMA_BODY},
    tags=["schemas"],
)
async def put_definition(request: Request, name: Name) -> Response:
    key = definition_key(name)
    schema, body = await read_schema_body(request)
    service = service_of(request)
    async with service.pool.connection() as conn:
        definitions = await Definitions.read(conn)
    pins = definitions.pins(schema)
    definitions.compile(schema, pins, assert_formats=False)  # it must compile
    meta = WriteRequest(request, body)
    outcome = await within_write_timeout(service, service.writer.write(
        SetSchema(SCHEMAS_NAMESPACE, key, http.expectation(request),
                  record=SchemaRecord(schema, pins).document()),
        meta.context(), meta.idempotency))
    answer = {"name": name, "version": outcome.version, "position": outcome.position,
              "recorded_at": http.rfc3339(outcome.recorded_at), "definitions": pins,
              "allow_existing_violations": False}
    if outcome.unchanged:
        answer["unchanged"] = True
    return Response(orjson.dumps(answer),
                    status_code=201 if outcome.event_type == "entry.created" else 200,
                    media_type=JSON, headers={"ETag": http.etag(outcome.version)})


@router.get(
    "/schemas/{name}",
    summary="A shared schema, now or at a version",
    response_model=schema_models.RecordedSchema,
    responses=READ_ERRORS,
    tags=["schemas"],
)
async def get_definition(request: Request, name: Name,
                         version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None
                         ) -> Response:
    key = definition_key(name)
    async with service_of(request).pool.connection() as conn:
        found = await recorded(conn, key, version=version)
    if found is None or found.record is None:
        at = f" at version {version}" if version is not None else ""
        raise NotFound(f"there is no shared schema {name}{at}", code="schema_not_found",
                       field="version" if version is not None else "name")
    return schema_body(found, name=name)


@router.get(
    "/schemas/{name}/history",
    summary="Every version of a shared schema, with who, when and why",
    response_model=models.HistoryPage,
    responses=READ_ERRORS,
    tags=["schemas"],
)
async def definition_history(request: Request, name: Name, limit: Limit = 100,
                             cursor: Cursor = None) -> Response:
    return await history_page(request, definition_key(name), limit, cursor)
