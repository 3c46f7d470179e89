"""The entries of a namespace: create, replace, patch and delete one entry; read it
(current, or as it was at a version, a time or a position); list a namespace's entries.

The routes come in two routers because their order matters: an entry's sub-resources
(``…/{key}/history``, ``…/diff``, ``…/proof``) are routed before ``reads``, whose
``GET …/entries/{key:path}`` would otherwise take them for keys."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import psycopg
from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from nexus_ssot.ledger.addressing import check_namespace
from nexus_ssot.ledger.commands import Command, Delete, JsonPatch, MergePatch, Put
from nexus_ssot.ledger.documents import check_document, check_json_patch
from nexus_ssot.ledger.errors import EntryGone, NotFound
from nexus_ssot.projections import current_state, entry_at
from nexus_ssot.projections import entry_history as entry_history_view

from . import http, models
from .cuts import cut_at
from .errors import problem_responses
from .existence import require_namespace, unless_namespace_missing
from .guard import guard_of
from .pagination import decode_cursor, page
from .params import (
    ENTRY_ERRORS,
    JSON,
    JSON_PATCH,
    MERGE_PATCH,
    READ_ERRORS,
    WRITE_HEADERS,
    AsOf,
    AtPosition,
    Cursor,
    Key,
    KeyPrefix,
    Limit,
    Namespace,
    PastVersion,
    WrittenPosition,
    address,
    one_coordinate,
    service_of,
)
from .read_replica import read_connection
from .service import Service
from .visible import scan_prefix, visible_rows
from .writes import write_command

#: Create, replace, patch and delete one entry.
writes = APIRouter(prefix="/v1")
#: Read one entry, list a namespace's entries.
reads = APIRouter(prefix="/v1")


#: The sub-resources of an entry's URL and the method each answers.
_SUB_RESOURCES = {"history": "GET", "diff": "GET", "proof": "GET", "revert": "POST"}


def _entry_address(request: Request, namespace: str, key: str) -> tuple[str, str]:
    """The entry a ``{key:path}`` route names; a method that a sub-resource of an entry
    does not answer (``PUT …/k/history``) is a 405, not a key with a reserved segment."""
    entry, _, last = key.rpartition("/")
    allowed = _SUB_RESOURCES.get(last)
    if entry and allowed is not None and request.method != allowed:
        raise StarletteHTTPException(
            405, f"{last} of an entry answers {allowed} only, not {request.method}",
            headers={"Allow": allowed})
    return address(namespace, key)


@writes.put(
    "/namespaces/{namespace}/entries/{key:path}",
    summary="Create or replace an entry",
    status_code=201,
    response_model=models.WriteResult,
    responses={200: {"model": models.WriteResult,
                     "description": "Replaced, or unchanged (the same document again)"},
               **ENTRY_ERRORS},
    openapi_extra={
        **WRITE_HEADERS,
        "requestBody": {"required": True, "content": {JSON: {"schema": {
            "type": "object", "description": "The document (any JSON value in the "
            "namespaces of SSOT_SCALAR_NAMESPACES)"}}}},
    },
    tags=["entries"],
)
async def put_entry(request: Request, namespace: Namespace, key: Key) -> Response:
    ns, k = _entry_address(request, namespace, key)
    settings = service_of(request).settings
    http.require_media_type(request, JSON)
    body = await http.read_body(request, settings.max_request_bytes)
    document = http.parse_json(body, field="document")
    if not isinstance(document, dict):  # refused before any precondition is looked at
        check_document(document, settings.limits(ns))
    return await write_command(
        request, Put(ns, k, http.expectation(request), document=document), body)


@writes.patch(
    "/namespaces/{namespace}/entries/{key:path}",
    summary="Patch an entry (RFC 7386 merge patch or RFC 6902 JSON Patch)",
    response_model=models.WriteResult,
    responses=ENTRY_ERRORS,
    openapi_extra={
        **WRITE_HEADERS,
        "requestBody": {"required": True, "content": {
            MERGE_PATCH: {"schema": {"type": "object"}},
            JSON_PATCH: {"schema": {"type": "array", "items": {"type": "object"}}},
        }},
    },
    tags=["entries"],
)
async def patch_entry(request: Request, namespace: Namespace, key: Key) -> Response:
    ns, k = _entry_address(request, namespace, key)
    settings = service_of(request).settings
    mt = http.require_media_type(request, MERGE_PATCH, JSON_PATCH)
    body = await http.read_body(request, settings.max_request_bytes)
    patch = http.parse_json(body, field="patch")
    expected = http.expectation(request)
    command: Command
    if mt == MERGE_PATCH:
        if not isinstance(patch, dict):  # it replaces the whole document (RFC 7386)
            check_document(patch, settings.limits(ns))
        command = MergePatch(ns, k, expected, patch=patch)
    else:
        command = JsonPatch(ns, k, expected, operations=check_json_patch(patch))
    return await write_command(request, command, body)


@writes.delete(
    "/namespaces/{namespace}/entries/{key:path}",
    summary="Delete an entry (appends a tombstone event)",
    response_model=models.WriteResult,
    responses=ENTRY_ERRORS,
    openapi_extra=WRITE_HEADERS,
    tags=["entries"],
)
async def delete_entry(request: Request, namespace: Namespace, key: Key) -> Response:
    ns, k = _entry_address(request, namespace, key)
    return await write_command(request, Delete(ns, k, http.expectation(request)), b"")


@reads.get(
    "/namespaces/{namespace}/entries/{key:path}",
    summary="Read an entry (current, or any past version)",
    response_model=models.Entry,
    responses={304: {"description": "Not modified (If-None-Match)"}, **READ_ERRORS,
               **problem_responses(405)},
    tags=["entries"],
)
async def get_entry(
    request: Request,
    namespace: Namespace,
    key: Key,
    version: PastVersion = None,
    as_of: AsOf = None,
    position: AtPosition = None,
    min_position: WrittenPosition = None,
) -> Response:
    ns, k = _entry_address(request, namespace, key)
    service = service_of(request)
    one_coordinate(version=version, as_of=as_of, position=position)
    if of_the_current_state(service, version, as_of, position, min_position):
        return _current(request, ns, k, await read_current(service, ns, k, min_position))
    async with _reading(service, version, as_of, position, min_position) as conn:
        if as_of is not None or position is not None:
            if as_of is not None:
                cut, found_at = await entry_at.entry_as_of(conn, ns, k, as_of)
            else:  # the connection holds the position: _reading checked it against the head
                assert position is not None
                cut = position
                found_at = await entry_at.entry_at(conn, ns, k, cut)
            when = _when(as_of, cut)
            if found_at is None:
                raise await unless_namespace_missing(conn, ns, NotFound(
                    f"entry {ns}/{k} did not exist yet {when}", code="entry_not_found",
                    field="key", position=cut), cut=cut, when=when)
            at_version, event_type, body = found_at
            if event_type == "entry.deleted":
                raise EntryGone(f"entry {ns}/{k} was deleted (version {at_version}) {when}",
                                field="key", deleted_version=at_version, position=cut)
            return Response(body, media_type=JSON, headers={"ETag": http.etag(at_version)})
        if version is not None:
            found = await entry_history_view.entry_version(conn, ns, k, version)
            if found is None:
                current = await current_state.current_entry(conn, ns, k)
                if current is None:
                    raise await unless_namespace_missing(conn, ns, _absent(ns, k))
                raise NotFound(
                    f"entry {ns}/{k} has no version {version} (its latest is "
                    f"{current.version})",
                    code="version_not_found", field="version", latest_version=current.version,
                )
            event_type, body = found
            if event_type == "entry.deleted":
                raise _deleted(ns, k, version)
            return Response(body, media_type=JSON, headers={"ETag": http.etag(version)})
        current = await current_state.current_entry(conn, ns, k)
        if current is None:
            raise await unless_namespace_missing(conn, ns, _absent(ns, k))
    return _current(request, ns, k, current)


def of_the_current_state(service: Service, version: int | None = None,
                         as_of: datetime | None = None, position: int | None = None,
                         min_position: int | None = None) -> bool:
    """Whether a read of one entry at these coordinates is a read of its current state
    (``read_current``): none of them, or only a ``min_position`` the primary's log is known
    to hold (``service.log_head``)."""
    return version is None and as_of is None and position is None and (
        min_position is None or service.log_head.holds(min_position))


async def read_current(service: Service, ns: str, k: str, needs: int | None = None
                       ) -> current_state.CurrentEntry:
    """The entry's current state, deleted or not; NotFound (for the entry, or for its
    namespace when that does not exist) when it was never written. ``needs``: a position
    the state must include (``min_position``), one the primary's log is known to hold
    (``service.log_head``): with a read replica, read there once it holds it, else on the
    primary (``read_replica.read_connection``), gathered with other such reads."""
    reads = service.current_reads
    if needs is not None and service.written_reads is not None:
        reads = service.written_reads
    current = await reads.current(ns, k, needs)
    if current is None:
        async with _reading(service, None, None, None, needs) as conn:
            raise await unless_namespace_missing(conn, ns, _absent(ns, k))
    return current


def current_answer(if_none_match: str | None, ns: str, k: str,
                   current: current_state.CurrentEntry) -> tuple[int, str, bytes]:
    """The status (200, or 304 for an ``If-None-Match`` naming it), ETag and body of a read
    of the entry's current state; EntryGone when it is deleted."""
    if current.deleted:
        raise _deleted(ns, k, current.version)
    tag = http.etag(current.version)
    if http.none_match(if_none_match, tag):
        return 304, tag, b""
    return 200, tag, current.body


def _current(request: Request, ns: str, k: str, current: current_state.CurrentEntry
             ) -> Response:
    """The answer of a read of the entry's current state."""
    status, tag, body = current_answer(request.headers.get("if-none-match"), ns, k, current)
    if status == 304:
        return Response(status_code=304, headers={"ETag": tag})
    return Response(body, media_type=JSON, headers={"ETag": tag})


def _absent(ns: str, key: str) -> NotFound:
    return NotFound(f"entry {ns}/{key} does not exist", code="entry_not_found", field="key")


def _deleted(ns: str, key: str, version: int) -> EntryGone:
    return EntryGone(f"entry {ns}/{key} was deleted in version {version}", field="key",
                        deleted_version=version)


@reads.get(
    "/namespaces/{namespace}/entries",
    summary="List the live entries of a namespace in key order",
    response_model=models.EntryPage,
    responses=READ_ERRORS,
    tags=["entries"],
)
async def list_entries(
    request: Request,
    namespace: Namespace,
    prefix: KeyPrefix = "",
    limit: Limit = 100,
    cursor: Cursor = None,
    as_of: AsOf = None,
    position: AtPosition = None,
    min_position: WrittenPosition = None,
) -> Response:
    ns = check_namespace(namespace)
    one_coordinate(as_of=as_of, position=position)
    state = decode_cursor(cursor, "k", p=prefix)
    after = state["k"] if state else ""
    service = service_of(request)
    keys = guard_of(request).keys("read", ns)
    scan = scan_prefix(keys, prefix)
    at = state["at"] if state is not None and "at" in state else position
    async with _reading(service, None, as_of, at, min_position) as conn:
        if state is not None and "at" in state:  # follow-up pages stay on the first's cut
            cut: int | None = state["at"]
        elif as_of is not None:
            cut = await cut_at(conn, as_of, None)
        elif position is not None:  # _reading checked it against the connection's head
            cut = position
        else:
            cut = None

        async def fetch(start: str, n: int) -> list[tuple[str, bytes]]:
            if scan is None:
                return []
            if cut is None:
                return await current_state.list_entries(conn, ns, prefix=scan, after=start,
                                                        limit=n)
            return await entry_at.namespace_at(conn, ns, cut, prefix=scan, after=start,
                                               limit=n)

        rows = await visible_rows(fetch, lambda r: r[0], keys, after, limit)
        if not rows:  # nothing there, or no such namespace (then)?
            await require_namespace(conn, ns, cut=cut, when=_when(as_of, cut))
    return page(rows, limit, lambda r: r[1],
                lambda r: {"k": r[0], "p": prefix, **({"at": cut} if cut is not None else {})},
                extra={"position": cut} if cut is not None else None)


def _reading(service: Service, version: int | None, as_of: datetime | None,
             position: int | None, min_position: int | None
             ) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
    """The connection a read of entries runs on: the read replica when it can serve it
    (read_replica.py), which reads at a version or a time never ask. A ``position`` is
    checked here, against the head of the connection's log (``read_connection``: on the
    primary, one beyond the head is refused; a replica is taken only once it holds it),
    so that the read need not ask the head again."""
    if version is not None or as_of is not None:
        return service.pool.connection()
    if position is not None and (min_position is None or position >= min_position):
        return read_connection(service, position, "position")
    return read_connection(service, min_position)


def _when(as_of: datetime | None, cut: int | None) -> str | None:
    """How a read's past point is worded (None: now)."""
    if as_of is not None:
        return f"as of {as_of.isoformat()}"
    return None if cut is None else f"at position {cut}"

