"""An entry's past: every event of it, what changed between two versions or times, and
revert, which brings back the content of a past version as a new one."""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from nexus_ssot.ledger.commands import Restore
from nexus_ssot.ledger.documents import diff
from nexus_ssot.ledger.errors import InvalidInput, NotFound, Unprocessable
from nexus_ssot.projections import entry_at
from nexus_ssot.projections import entry_history as entry_history_view

from . import http, models
from .existence import require_namespace, unless_namespace_missing
from .pagination import decode_cursor, page
from .params import (
    JSON,
    MAX_INT,
    READ_ERRORS,
    WRITE_ERRORS,
    WRITE_HEADERS,
    AsOf,
    Cursor,
    Key,
    Limit,
    Namespace,
    address,
    as_of_member,
    one_coordinate,
    service_of,
)
from .writes import check_reason, write_command

router = APIRouter(prefix="/v1")


@router.post(
    "/namespaces/{namespace}/entries/{key:path}/revert",
    summary="Bring back the content of a past version (appends entry.restored; undeletes)",
    response_model=models.WriteResult,
    responses=WRITE_ERRORS,
    openapi_extra={**WRITE_HEADERS, "requestBody": {"required": True, "content": {JSON: {
        "schema": {
            "type": "object", "additionalProperties": False,
            "oneOf": [{"required": ["to_version"]}, {"required": ["as_of"]}],
            "properties": {
                "to_version": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
                "as_of": {"type": "string", "format": "date-time"},
                "reason": {"type": "string", "minLength": 1, "maxLength": 1024}}}}}}},
    tags=["entries"],
)
async def revert_entry(request: Request, namespace: Namespace, key: Key) -> Response:
    ns, k = address(namespace, key)
    service = service_of(request)
    http.require_media_type(request, JSON)
    body = await http.read_body(request, service.settings.max_request_bytes)
    spec = http.parse_json(body, field="body", root="")
    if not isinstance(spec, dict) or not set(spec) <= {"to_version", "as_of", "reason"}:
        raise InvalidInput('the body is {"to_version": N} or {"as_of": "<time>"}, with an '
                           'optional "reason"', code="invalid_parameter", field="body")
    to_version, as_of, reason = spec.get("to_version"), spec.get("as_of"), spec.get("reason")
    check_reason(reason)
    if (to_version is None) == (as_of is None):
        raise InvalidInput("give to_version or as_of (one of them)",
                           code="invalid_parameter", field="to_version")
    async with service.pool.connection() as conn:
        if as_of is not None:
            moment = as_of_member(as_of)
            found_at = await entry_at.entry_at(conn, ns, k,
                                               await entry_at.position_at(conn, moment))
            if found_at is None:
                raise await unless_namespace_missing(conn, ns, NotFound(
                    f"entry {ns}/{k} did not exist as of {as_of}", code="version_not_found",
                    field="as_of"))
            to_version, event_type, entry_body = found_at
        else:
            if not isinstance(to_version, int) or isinstance(to_version, bool) \
                    or not 1 <= to_version <= MAX_INT:
                raise InvalidInput("to_version must be a version number (1, 2, …)",
                                   code="invalid_parameter", field="to_version")
            found = await entry_history_view.entry_version(conn, ns, k, to_version)
            if found is None:
                raise await unless_namespace_missing(conn, ns, NotFound(
                    f"entry {ns}/{k} has no version {to_version}", code="version_not_found",
                    field="to_version"))
            event_type, entry_body = found
    if event_type == "entry.deleted":
        raise Unprocessable(f"version {to_version} of {ns}/{k} is its deletion: to delete "
                            "it again, DELETE it", code="version_is_deletion",
                            field="to_version")
    document = orjson.loads(entry_body)["document"]
    command = Restore(ns, k, http.expectation(request), from_version=to_version,
                      document=document)
    return await write_command(request, command, body, reason=reason)


@router.get(
    "/namespaces/{namespace}/entries/{key:path}/diff",
    summary="What changed between two versions (or two times): RFC 6902 patch or text",
    responses={200: {"content": {JSON: {}, "text/plain": {}}}, **READ_ERRORS},
    tags=["audit"],
)
async def entry_diff(
    request: Request,
    namespace: Namespace,
    key: Key,
    from_version: Annotated[int | None, Query(alias="from", ge=0, le=MAX_INT)] = None,
    to_version: Annotated[int | None, Query(alias="to", ge=1, le=MAX_INT)] = None,
    from_as_of: AsOf = None,
    to_as_of: AsOf = None,
    format: Annotated[Literal["json", "text"], Query()] = "json",
) -> Response:
    ns, k = address(namespace, key)
    one_coordinate(**{"from": from_version, "from_as_of": from_as_of})
    one_coordinate(**{"to": to_version, "to_as_of": to_as_of})
    service = service_of(request)
    async with service.pool.connection() as conn:
        try:
            before = await _document_at(conn, ns, k, from_version, from_as_of, "from")
            after = await _document_at(conn, ns, k, to_version, to_as_of, "to")
        except NotFound as e:
            raise await unless_namespace_missing(conn, ns, e) from None
        if before[0]["version"] == after[0]["version"] == 0:  # absent on both sides
            await require_namespace(conn, ns)
    if format == "text":
        return Response(text_diff(ns, k, before, after), media_type="text/plain")
    return Response(orjson.dumps({
        "namespace": ns, "key": k, "from": before[0], "to": after[0],
        "patch": diff(before[1], after[1])}), media_type=JSON)


async def _document_at(conn: Any, ns: str, key: str, version: int | None,
                       as_of: datetime | None, side: str) -> tuple[dict[str, Any], Any]:
    """({version, position}, document) of one side of a diff; version 0 is "absent"."""
    if version == 0:
        return {"version": 0, "position": None}, None
    if version is not None:
        found = await entry_history_view.entry_version(conn, ns, key, version)
        if found is None:
            raise NotFound(f"entry {ns}/{key} has no version {version}",
                           code="version_not_found", field=side)
        entry = orjson.loads(found[1])
    elif as_of is not None:
        at = await entry_at.entry_at(conn, ns, key, await entry_at.position_at(conn, as_of))
        if at is None:
            return {"version": 0, "position": None}, None
        entry = orjson.loads(at[2])
    else:
        raise InvalidInput(f"give {side}=<version> or {side}_as_of=<time>",
                           code="invalid_parameter", field=side)
    return {"version": entry["version"], "position": entry["position"]}, entry["document"]


def text_diff(ns: str, key: str, before: tuple[dict[str, Any], Any],
              after: tuple[dict[str, Any], Any]) -> bytes:
    """A unified line diff of the two documents, pretty-printed with sorted keys."""
    def lines(document: Any) -> list[str]:
        if document is None:
            return []
        text = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        return text.decode().splitlines(keepends=True)

    return "".join(difflib.unified_diff(
        lines(before[1]), lines(after[1]),
        fromfile=f"{ns}/{key} v{before[0]['version']}",
        tofile=f"{ns}/{key} v{after[0]['version']}")).encode()


@router.get(
    "/namespaces/{namespace}/entries/{key:path}/history",
    summary="Every event of an entry with its metadata, patch and resulting document",
    response_model=models.HistoryPage,
    responses=READ_ERRORS,
    tags=["entries"],
)
async def entry_history(
    request: Request,
    namespace: Namespace,
    key: Key,
    order: Literal["asc", "desc"] = "asc",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    ns, k = address(namespace, key)
    position = decode_cursor(cursor, "v", o=order)
    after = position["v"] if position else None
    service = service_of(request)
    async with service.pool.connection() as conn:
        rows = await entry_history_view.history(conn, ns, k, after_version=after, limit=limit + 1,
                                           descending=order == "desc")
        if not rows and after is None:
            raise await unless_namespace_missing(conn, ns, NotFound(
                f"entry {ns}/{k} has no history", code="entry_not_found", field="key"))
    return page(rows, limit, lambda r: r[1], lambda r: {"v": r[0], "o": order})
