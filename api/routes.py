"""The HTTP command/query API, version 1."""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import difflib
import io
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
import psycopg
from fastapi import APIRouter, Path, Query, Request
from pydantic import BeforeValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse

from nexus_ssot.ledger.addressing import (
    MAX_KEY_LENGTH,
    NAMESPACE_PATTERN,
    check_key,
    check_namespace,
)
from nexus_ssot.ledger.commands import (
    Command,
    Context,
    Delete,
    JsonPatch,
    MergePatch,
    Put,
    Restore,
)
from nexus_ssot.ledger.documents import check_json_patch, diff
from nexus_ssot.ledger.errors import (
    EntryGone,
    InvalidInput,
    NotFound,
    Unavailable,
    Unprocessable,
)
from nexus_ssot.ledger.events import EVENT_TYPE_NAMES
from nexus_ssot.ledger.writer import Idempotency, Outcome
from nexus_ssot.projections import audit_trail, current_state, entry_at, event_feed
from nexus_ssot.projections import entry_history as entry_history_view
from nexus_ssot.projections.views import VIEW_NAMES

from . import http, models
from .errors import problem, problem_responses
from .service import Service

router = APIRouter(prefix="/v1")
T = TypeVar("T")

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

#: The largest position, version or sequence number (PostgreSQL bigint): a greater one in
#: a query is refused as invalid, not carried to the database.
MAX_INT = 2**63 - 1

KEY_PATTERN = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"

# The patterns are documented here and checked by check_namespace / check_key, whose
# errors (invalid_namespace, invalid_key) are more precise than the framework's.
Namespace = Annotated[str, Path(
    description="Namespace, e.g. `config`", examples=["config"],
    json_schema_extra={"pattern": NAMESPACE_PATTERN.pattern, "maxLength": 63})]
Key = Annotated[str, Path(
    description="Key: `/`-separated segments of letters, digits, `.`, `_` and `-` (no `.` "
    "or `..` segment; the last not history, diff, proof, revert or restore), e.g. "
    "`services/payments/db.url`",
    json_schema_extra={"pattern": KEY_PATTERN, "maxLength": MAX_KEY_LENGTH})]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page",
                                      json_schema_extra={"minLength": 1})]


def _rfc3339_only(value: Any) -> Any:
    """Query times are RFC 3339 text: pydantic would also take a number as Unix time."""
    if isinstance(value, str) and not _RFC3339_START.match(value):
        raise ValueError("must be an RFC 3339 time with a time zone, e.g. 2026-11-01T12:00:00Z")
    return value


_POSITION = re.compile(r"^[0-9]{1,19}$")
_RFC3339_START = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
AsOf = Annotated[datetime | None, BeforeValidator(_rfc3339_only), Query(
    description="RFC 3339 time: the state as of the last event committed at or before it")]
AtPosition = Annotated[int | None, Query(
    ge=0, le=MAX_INT, description="Global position: the state after the event at this position")]

#: Query text reaches SQL: a control character (NUL above all, which PostgreSQL's text
#: refuses) is a 400 here, and a prefix holds only what keys are made of.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
KeyPrefix = Annotated[str, Query(max_length=MAX_KEY_LENGTH, pattern=r"^[A-Za-z0-9._/-]*$",
                                 description="Only keys starting with this")]

#: What a write can answer besides its success, and what a read can.
_ERRORS = problem_responses(400, 404, 409, 412, 413, 415, 422, 503)
#: The routes of ``…/entries/{key:path}`` also answer 405 for an entry's sub-resources.
_ENTRY_ERRORS = {**_ERRORS, **problem_responses(405)}
_READ_ERRORS = problem_responses(400, 404, 503)

_WRITE_HEADERS = {
    "parameters": [
        {"name": "If-Match", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": r'^\s*(\*|(W/)?"[0-9]{1,18}")\s*$'},
         "description": 'Expected current version, e.g. "2", or * (it exists); not with '
         "If-None-Match"},
        {"name": "If-None-Match", "in": "header", "required": False,
         "schema": {"type": "string", "enum": ["*"]}, "description": "Create only"},
        {"name": "Idempotency-Key", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
         "description": "Retries return the first response"},
        {"name": "X-Reason", "in": "header", "required": False,
         "schema": {"type": "string", "pattern": r"^[^\x00-\x08\x0a-\x1f\x7f]{1,1024}$"}},
        {"name": "X-Correlation-Id", "in": "header", "required": False,
         "schema": {"type": "string"},
         "description": "Echoed back; one is made when absent or not 1-128 visible ASCII"},
    ]
}


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


# --- cursors ------------------------------------------------------------------------


def encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


#: The members a cursor may carry, and their types (a position or version is a bigint).
_CURSOR_MEMBERS: dict[str, tuple[type, ...]] = {
    "k": (str, type(None)), "p": (str,), "n": (str,), "o": (str,), "ns": (str, type(None)),
    "after": (int,), "v": (int,), "at": (int,)}


def _cursor_member(name: str, value: Any) -> bool:
    types = _CURSOR_MEMBERS.get(name)
    if types is None or not isinstance(value, types) or isinstance(value, bool):
        return False
    return not isinstance(value, int) or 0 <= value <= MAX_INT


def decode_cursor(cursor: str | None, *required: str, **expected: Any) -> dict[str, Any] | None:
    """The members of a ``next_cursor`` (``required`` ones present, ``expected`` ones equal
    to this query's); a cursor made up or altered by a client is a 400, not a crash."""
    if cursor is None:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict) or any(data.get(k) != v for k, v in expected.items()) \
                or not set(required) <= set(data) \
                or not all(_cursor_member(k, v) for k, v in data.items()):
            raise ValueError
        return data
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidInput(
            "cursor is not a next_cursor returned for this same query",
            code="invalid_cursor", field="cursor",
        ) from None


def page(
    rows: Sequence[T], limit: int, body: Callable[[T], bytes],
    cursor_after: Callable[[T], dict[str, Any]], extra: dict[str, Any] | None = None,
) -> Response:
    """A page of at most ``limit`` items from ``rows`` (fetched with one extra to learn
    whether more follow), with ``extra`` members after ``next_cursor``."""
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(cursor_after(rows[-1])) if more else None
    tail = b"".join(b"," + orjson.dumps(k) + b":" + orjson.dumps(v)
                    for k, v in (extra or {}).items())
    return Response(
        b'{"items":[' + b",".join(body(r) for r in rows) + b'],"next_cursor":'
        + orjson.dumps(next_cursor) + tail + b"}",
        media_type=JSON,
    )


# --- writes -------------------------------------------------------------------------


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """The body of a write's answer: the entry it made, and how a stale If-Match was
    resolved (``merged``, ``base_version``, ``rebased_over``; ``resolution`` in full)."""
    body: dict[str, Any] = {
        "namespace": outcome.namespace,
        "key": outcome.key,
        "version": outcome.version,
        "position": outcome.position,
        "recorded_at": http.rfc3339(outcome.recorded_at),
        "document": outcome.document,
    }
    resolution = outcome.resolution
    if resolution is not None:
        if resolution.get("policy") == "merge":
            body.update(merged=True, base_version=resolution["base_version"],
                        rebased_over=resolution["rebased_over"])
        body["resolution"] = resolution
    return body


class WriteRequest:
    """Who, why and which retry a write request is: the metadata every event it appends
    carries, and its idempotency key scoped by actor."""

    def __init__(self, request: Request, body: bytes, reason: str | None = None) -> None:
        settings = _service(request).settings
        self.idempotency_key = http.idempotency_key(request)
        self.actor = http.actor(request, default=settings.default_actor,
                                trust_header=settings.trust_actor_header)
        header_reason = http.reason(request)  # checked even when the body gives one
        self.reason = reason if reason is not None else header_reason
        self.correlation_id: str = request.state.correlation_id
        self.timestamp = http.utc_now()
        self.idempotency = (
            Idempotency(self.actor, self.idempotency_key, http.request_hash(request, body))
            if self.idempotency_key else None
        )

    def context(self) -> Context:
        """The context of one more event of this request (each has its own id)."""
        return Context(
            event_id=uuid.uuid4(),
            timestamp=self.timestamp,
            actor=self.actor,
            correlation_id=self.correlation_id,
            reason=self.reason,
            idempotency_key=self.idempotency_key,
        )


async def within_write_timeout(service: Service, write: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(write, service.settings.write_timeout)
    except TimeoutError:
        raise Unavailable(
            f"the write did not complete within {service.settings.write_timeout}s; it may "
            "still commit: retry with the same Idempotency-Key to learn its outcome"
        ) from None


async def _write(request: Request, command: Command, body: bytes,
                 reason: str | None = None) -> Response:
    service = _service(request)
    meta = WriteRequest(request, body, reason)
    with service.tracer.start_as_current_span("ledger.write") as span:
        span.set_attribute("ssot.namespace", command.namespace)
        span.set_attribute("ssot.key", command.key)
        span.set_attribute("ssot.command", type(command).__name__)
        outcome = await within_write_timeout(
            service, service.writer.write(command, meta.context(), meta.idempotency))
        span.set_attribute("ssot.version", outcome.version)
        span.set_attribute("ssot.position", outcome.position)
        if outcome.resolution is not None:
            span.set_attribute("ssot.resolution", outcome.resolution["policy"])
    service.writes.add(1, {"event_type": outcome.event_type})
    status = 201 if outcome.event_type == "entry.created" else 200
    headers = {"ETag": http.etag(outcome.version)}
    if status == 201:
        headers["Location"] = str(request.url.path)
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(orjson.dumps(outcome_json(outcome)), status_code=status, media_type=JSON,
                    headers=headers)


def _address(namespace: str, key: str) -> tuple[str, str]:
    return check_namespace(namespace), check_key(key)


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
    return _address(namespace, key)


@router.put(
    "/namespaces/{namespace}/entries/{key:path}",
    summary="Create or replace an entry",
    status_code=201,
    response_model=models.Entry,
    responses={200: {"model": models.Entry, "description": "Replaced"}, **_ENTRY_ERRORS},
    openapi_extra={
        **_WRITE_HEADERS,
        "requestBody": {"required": True, "content": {JSON: {"schema": {
            "type": "object", "description": "The document (any JSON value in the "
            "namespaces of SSOT_SCALAR_NAMESPACES)"}}}},
    },
    tags=["entries"],
)
async def put_entry(request: Request, namespace: Namespace, key: Key) -> Response:
    ns, k = _entry_address(request, namespace, key)
    settings = _service(request).settings
    http.require_media_type(request, JSON)
    body = await http.read_body(request, settings.max_request_bytes)
    document = http.parse_json(body, field="document")
    return await _write(request, Put(ns, k, http.expectation(request), document=document), body)


@router.patch(
    "/namespaces/{namespace}/entries/{key:path}",
    summary="Patch an entry (RFC 7386 merge patch or RFC 6902 JSON Patch)",
    response_model=models.Entry,
    responses=_ENTRY_ERRORS,
    openapi_extra={
        **_WRITE_HEADERS,
        "requestBody": {"required": True, "content": {
            MERGE_PATCH: {"schema": {"type": "object"}},
            JSON_PATCH: {"schema": {"type": "array", "items": {"type": "object"}}},
        }},
    },
    tags=["entries"],
)
async def patch_entry(request: Request, namespace: Namespace, key: Key) -> Response:
    ns, k = _entry_address(request, namespace, key)
    settings = _service(request).settings
    mt = http.require_media_type(request, MERGE_PATCH, JSON_PATCH)
    body = await http.read_body(request, settings.max_request_bytes)
    patch = http.parse_json(body, field="patch")
    expected = http.expectation(request)
    command: Command
    if mt == MERGE_PATCH:
        command = MergePatch(ns, k, expected, patch=patch)
    else:
        command = JsonPatch(ns, k, expected, operations=check_json_patch(patch))
    return await _write(request, command, body)


@router.delete(
    "/namespaces/{namespace}/entries/{key:path}",
    summary="Delete an entry (appends a tombstone event)",
    response_model=models.Entry,
    responses=_ENTRY_ERRORS,
    openapi_extra=_WRITE_HEADERS,
    tags=["entries"],
)
async def delete_entry(request: Request, namespace: Namespace, key: Key) -> Response:
    ns, k = _entry_address(request, namespace, key)
    return await _write(request, Delete(ns, k, http.expectation(request)), b"")


@router.post(
    "/namespaces/{namespace}/entries/{key:path}/revert",
    summary="Bring back the content of a past version (appends entry.restored; undeletes)",
    response_model=models.Entry,
    responses=_ERRORS,
    openapi_extra={**_WRITE_HEADERS, "requestBody": {"required": True, "content": {JSON: {
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
    ns, k = _address(namespace, key)
    service = _service(request)
    http.require_media_type(request, JSON)
    body = await http.read_body(request, service.settings.max_request_bytes)
    spec = http.parse_json(body, field="body", root="")
    if not isinstance(spec, dict) or not set(spec) <= {"to_version", "as_of", "reason"}:
        raise InvalidInput('the body is {"to_version": N} or {"as_of": "<time>"}, with an '
                           'optional "reason"', code="invalid_parameter", field="body")
    to_version, as_of, reason = spec.get("to_version"), spec.get("as_of"), spec.get("reason")
    if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= 1024):
        raise InvalidInput("reason must be 1-1024 characters of text", code="invalid_reason",
                           field="reason")
    if (to_version is None) == (as_of is None):
        raise InvalidInput("give to_version or as_of (one of them)",
                           code="invalid_parameter", field="to_version")
    async with service.pool.connection() as conn:
        if as_of is not None:
            try:
                moment = datetime.fromisoformat(str(as_of).replace("Z", "+00:00"))
            except ValueError:
                raise InvalidInput(f"as_of {as_of!r} is not an RFC 3339 time",
                                   code="invalid_parameter", field="as_of") from None
            _one_coordinate(as_of=moment)
            found_at = await entry_at.entry_at(conn, ns, k,
                                               await entry_at.position_at(conn, moment))
            if found_at is None:
                raise NotFound(f"entry {ns}/{k} did not exist as of {as_of}",
                               code="version_not_found", field="as_of")
            to_version, event_type, entry_body = found_at
        else:
            if not isinstance(to_version, int) or isinstance(to_version, bool) \
                    or not 1 <= to_version <= MAX_INT:
                raise InvalidInput("to_version must be a version number (1, 2, …)",
                                   code="invalid_parameter", field="to_version")
            found = await entry_history_view.entry_version(conn, ns, k, to_version)
            if found is None:
                raise NotFound(f"entry {ns}/{k} has no version {to_version}",
                               code="version_not_found", field="to_version")
            event_type, entry_body = found
    if event_type == "entry.deleted":
        raise Unprocessable(f"version {to_version} of {ns}/{k} is its deletion: to delete "
                            "it again, DELETE it", code="version_is_deletion",
                            field="to_version")
    document = orjson.loads(entry_body)["document"]
    command = Restore(ns, k, http.expectation(request), from_version=to_version,
                      document=document)
    return await _write(request, command, body, reason=reason)


# --- reads --------------------------------------------------------------------------


@router.get(
    "/namespaces/{namespace}/entries/{key:path}/diff",
    summary="What changed between two versions (or two times): RFC 6902 patch or text",
    responses={200: {"content": {JSON: {}, "text/plain": {}}}, **_READ_ERRORS},
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
    ns, k = _address(namespace, key)
    _one_coordinate(**{"from": from_version, "from_as_of": from_as_of})
    _one_coordinate(**{"to": to_version, "to_as_of": to_as_of})
    service = _service(request)
    async with service.pool.connection() as conn:
        before = await _document_at(conn, ns, k, from_version, from_as_of, "from")
        after = await _document_at(conn, ns, k, to_version, to_as_of, "to")
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
    responses=_READ_ERRORS,
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
    ns, k = _address(namespace, key)
    position = decode_cursor(cursor, "v", o=order)
    after = position["v"] if position else None
    service = _service(request)
    async with service.pool.connection() as conn:
        rows = await entry_history_view.history(conn, ns, k, after_version=after, limit=limit + 1,
                                           descending=order == "desc")
    if not rows and after is None:
        raise NotFound(f"entry {ns}/{k} has no history", code="entry_not_found", field="key")
    return page(rows, limit, lambda r: r[1], lambda r: {"v": r[0], "o": order})


@router.get(
    "/namespaces/{namespace}/entries/{key:path}",
    summary="Read an entry (current, or any past version)",
    response_model=models.Entry,
    responses={304: {"description": "Not modified (If-None-Match)"}, **_READ_ERRORS,
               **problem_responses(405)},
    tags=["entries"],
)
async def get_entry(
    request: Request,
    namespace: Namespace,
    key: Key,
    version: Annotated[int | None, Query(ge=1, le=MAX_INT, description="A past version")] = None,
    as_of: AsOf = None,
    position: AtPosition = None,
) -> Response:
    ns, k = _entry_address(request, namespace, key)
    service = _service(request)
    _one_coordinate(version=version, as_of=as_of, position=position)
    async with service.pool.connection() as conn:
        if as_of is not None or position is not None:
            cut = await _cut(conn, as_of, position)
            found_at = await entry_at.entry_at(conn, ns, k, cut)
            when = f"as of {as_of.isoformat()}" if as_of is not None else f"at position {cut}"
            if found_at is None:
                raise NotFound(f"entry {ns}/{k} did not exist yet {when}",
                               code="entry_not_found", field="key", position=cut)
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
                    raise _absent(ns, k)
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
        raise _absent(ns, k)
    if current.deleted:
        raise _deleted(ns, k, current.version)
    tag = http.etag(current.version)
    if request.headers.get("if-none-match") == tag:
        return Response(status_code=304, headers={"ETag": tag})
    return Response(current.body, media_type=JSON, headers={"ETag": tag})


def _absent(ns: str, key: str) -> NotFound:
    return NotFound(f"entry {ns}/{key} does not exist", code="entry_not_found", field="key")


def _deleted(ns: str, key: str, version: int) -> EntryGone:
    return EntryGone(f"entry {ns}/{key} was deleted in version {version}", field="key",
                        deleted_version=version)


@router.get(
    "/namespaces/{namespace}/entries",
    summary="List the live entries of a namespace in key order",
    response_model=models.EntryPage,
    responses=_READ_ERRORS,
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
) -> Response:
    ns = check_namespace(namespace)
    _one_coordinate(as_of=as_of, position=position)
    state = decode_cursor(cursor, "k", p=prefix)
    after = state["k"] if state else ""
    service = _service(request)
    async with service.pool.connection() as conn:
        if state is not None and "at" in state:  # follow-up pages stay on the first's cut
            cut: int | None = state["at"]
        elif as_of is not None or position is not None:
            cut = await _cut(conn, as_of, position)
        else:
            cut = None
        if cut is None:
            rows = await current_state.list_entries(conn, ns, prefix=prefix, after=after,
                                                    limit=limit + 1)
        else:
            rows = await entry_at.namespace_at(conn, ns, cut, prefix=prefix, after=after,
                                               limit=limit + 1)
    return page(rows, limit, lambda r: r[1],
                lambda r: {"k": r[0], "p": prefix, **({"at": cut} if cut is not None else {})},
                extra={"position": cut} if cut is not None else None)


def _one_coordinate(**coordinates: Any) -> None:
    given = [name for name, value in coordinates.items() if value is not None]
    if len(given) > 1:
        raise InvalidInput(f"give one of {', '.join(coordinates)}, not {' and '.join(given)}",
                           code="conflicting_parameters", field=given[1])
    for name, value in coordinates.items():
        if isinstance(value, datetime) and value.tzinfo is None:
            raise InvalidInput(f"{name} needs a time zone (e.g. 2026-11-01T12:00:00Z)",
                               code="invalid_parameter", field=name)


async def _cut(conn: Any, as_of: datetime | None, position: int | None) -> int:
    if position is not None:
        return position
    assert as_of is not None
    cut: int = await entry_at.position_at(conn, as_of)
    return cut


@router.get(
    "/namespaces",
    summary="Namespaces with their entry counts",
    response_model=models.NamespacePage,
    responses=_READ_ERRORS,
    tags=["namespaces"],
)
async def list_namespaces(request: Request, limit: Limit = 100, cursor: Cursor = None) -> Response:
    position = decode_cursor(cursor, "n")
    after = position["n"] if position else ""
    service = _service(request)
    async with service.pool.connection() as conn:
        rows = await current_state.list_namespaces(conn, after=after, limit=limit + 1)
    return page(rows, limit, lambda r: orjson.dumps(r.__dict__), lambda r: {"n": r.namespace})


@router.get(
    "/events",
    summary="Catch-up: the CloudEvents of the log after a position",
    response_model=models.EventPage,
    responses=_READ_ERRORS,
    tags=["events"],
)
async def list_events(
    request: Request,
    after: Annotated[int, Query(ge=0, le=MAX_INT,
                                description="Global position to start after")] = 0,
    namespace: Annotated[str | None, Query(description="Only this namespace")] = None,
    key: Annotated[str | None, Query(description="Only this key (with namespace)")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    ns, k = _feed_filter(namespace, key)
    position = decode_cursor(cursor, "after", ns=ns, k=k)
    start = position["after"] if position else after
    service = _service(request)
    async with service.pool.connection() as conn:
        rows = await event_feed.events_after(conn, start, limit=limit + 1, namespace=ns,
                                             key=k)
    return page(rows, limit, lambda r: r[1], lambda r: {"after": r[0], "ns": ns, "k": k})


@router.get(
    "/events/stream",
    summary="Live feed: the log's CloudEvents as Server-Sent Events (resumable)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **_READ_ERRORS},
    tags=["events"],
)
async def stream_events(
    request: Request,
    after: Annotated[int | None, Query(ge=0, le=MAX_INT, description="Start after this position "
                                       "(default: the head, i.e. new events only)")] = None,
    namespace: Annotated[str | None, Query(description="Only this namespace")] = None,
    key: Annotated[str | None, Query(description="Only this key (with namespace)")] = None,
) -> Response:
    ns, k = _feed_filter(namespace, key)
    service = _service(request)
    last_event_id = request.headers.get("last-event-id")
    if last_event_id is not None:
        if not _POSITION.match(last_event_id) or int(last_event_id) > MAX_INT:
            raise InvalidInput("Last-Event-ID must be a position (a whole number)",
                               code="invalid_last_event_id", field="Last-Event-ID")
        start = int(last_event_id)
    elif after is not None:
        start = after
    else:
        async with service.pool.connection() as conn:
            start = await event_feed.head_position(conn)

    async def events() -> AsyncIterator[bytes]:
        position, quiet_since = start, time.monotonic()
        yield b": nexus-ssot event stream\n\n"
        while not await request.is_disconnected():
            try:
                async with service.pool.connection() as conn:
                    rows = await event_feed.events_after(conn, position, limit=500,
                                                         namespace=ns, key=k)
            except psycopg.OperationalError:
                # The store is restarting: keep the stream (and the client's place in the
                # log) and ask again; the comment keeps proxies from timing it out.
                yield b": the event store is unavailable; retrying\n\n"
                await asyncio.sleep(SSE_RETRY_SECONDS)
                continue
            for position, body in rows:
                yield b"id: %d\ndata: %s\n\n" % (position, body)
            if rows:
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since > SSE_KEEPALIVE_SECONDS:
                yield b": keepalive\n\n"
                quiet_since = time.monotonic()
            await service.notifier.wait(1.0)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


SSE_KEEPALIVE_SECONDS = 15.0
SSE_RETRY_SECONDS = 0.5


def _feed_filter(namespace: str | None, key: str | None) -> tuple[str | None, str | None]:
    if key is not None and namespace is None:
        raise InvalidInput("key needs namespace", code="invalid_parameter", field="key")
    return (check_namespace(namespace) if namespace is not None else None,
            check_key(key) if key is not None else None)


@router.get(
    "/audit",
    summary="The audit trail: events with their metadata, filtered, in log order",
    response_model=models.HistoryPage,
    responses={200: {"content": {JSON: {}, "text/csv": {}, "application/x-ndjson": {}}},
               **_READ_ERRORS},
    tags=["audit"],
)
async def audit(
    request: Request,
    namespace: Annotated[str | None, Query()] = None,
    key_prefix: KeyPrefix | None = None,
    actor: Annotated[str | None, Query(max_length=255, pattern=_NO_CONTROL)] = None,
    since: AsOf = None,
    until: AsOf = None,
    correlation_id: Annotated[str | None, Query(max_length=128, pattern=_NO_CONTROL)] = None,
    type: Annotated[str | None, Query(description="e.g. entry.deleted")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """``Accept: text/csv`` or ``application/x-ndjson`` streams the whole trail."""
    _one_coordinate(since=since)
    _one_coordinate(until=until)
    if key_prefix and namespace is None:
        raise InvalidInput("key_prefix needs namespace", code="invalid_parameter",
                           field="key_prefix")
    event_type = type.removeprefix("io.nexus.ssot.") if type else None
    if event_type is not None and event_type not in EVENT_TYPE_NAMES.values():
        raise InvalidInput(f"type must be one of {', '.join(EVENT_TYPE_NAMES.values())}",
                           code="invalid_parameter", field="type")
    service = _service(request)
    async with service.pool.connection() as conn:
        after = await entry_at.position_at(conn, since) if since else 0
        upto = await entry_at.position_at(conn, until) if until else None
    state = decode_cursor(cursor, "after")
    where = audit_trail.AuditFilter(
        after=state["after"] if state else after, until=upto,
        namespace=check_namespace(namespace) if namespace else None, key_prefix=key_prefix,
        actor=actor, correlation_id=correlation_id, event_type=event_type)
    accept = request.headers.get("accept", "")
    if "text/csv" in accept or "application/x-ndjson" in accept:
        csv_out = "text/csv" in accept
        return StreamingResponse(
            _export(service, where, csv_out),
            media_type="text/csv" if csv_out else "application/x-ndjson",
            headers={"Content-Disposition": "attachment; filename=audit."
                     + ("csv" if csv_out else "ndjson")} if csv_out else None)
    async with service.pool.connection() as conn:
        rows = await audit_trail.audit_page(conn, where, limit + 1)
    return page(rows, limit, lambda r: r[1], lambda r: {"after": r[0]})


async def _export(service: Service, where: audit_trail.AuditFilter,
                  csv_out: bool) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if csv_out:
        writer.writerow(audit_trail.CSV_COLUMNS)
        yield buffer.getvalue().encode()
    async with service.pool.connection() as conn:
        async for row in audit_trail.audit_rows(conn, where):
            if csv_out:
                buffer.seek(0)
                buffer.truncate()
                writer.writerow(row.values())
                yield buffer.getvalue().encode()
            else:
                row["patch"] = orjson.Fragment(row["patch"])
                yield orjson.dumps(row) + b"\n"


@router.get("/health", summary="Liveness and store reachability",
            responses=problem_responses(503), tags=["operations"])
async def health(request: Request) -> Response:
    service = _service(request)
    try:
        async with service.pool.connection(timeout=2.0) as conn:
            cur = await conn.execute(_HEALTH, (service.settings.broadcaster_name,),
                                     prepare=True)
            row = await cur.fetchone()
            cur = await conn.execute(_VIEWS_HEALTH, (list(VIEW_NAMES),), prepare=True)
            views = await cur.fetchall()
    except Exception as e:  # any failure to reach the store is "unavailable"
        return problem(request, 503, "store_unavailable", f"the event store is unreachable: {e}")
    assert row is not None
    head, position, oldest_unpublished, now = row
    body: dict[str, Any] = {"status": "ok", "head_position": head or 0, "broadcaster": None}
    body["views"] = {
        name: {"position": view_position, "lag_events": max(0, (head or 0) - view_position),
               "lag_seconds": round((now - oldest).total_seconds(), 3)
               if oldest is not None else 0.0}
        for name, view_position, oldest in views
    }
    if position is not None:
        body["broadcaster"] = {
            "name": service.settings.broadcaster_name,
            "position": position,
            "lag_events": max(0, (head or 0) - position),
            "lag_seconds": round((now - oldest_unpublished).total_seconds(), 3)
            if oldest_unpublished is not None else 0.0,
        }
    return Response(orjson.dumps(body), media_type=JSON)


_HEALTH = (
    "SELECT (SELECT max(notification_id) FROM ssot_events), b.position,"
    " (SELECT min(recorded_at) FROM entry_history WHERE position > b.position),"
    " clock_timestamp()"
    " FROM (SELECT 1) AS one LEFT JOIN broadcaster_positions b ON b.name = %s"
)

# Each asynchronous view's position and the commit time of the oldest event it has not
# applied yet (its lag in seconds).
_VIEWS_HEALTH = (
    "SELECT t.application_name, t.notification_id, (SELECT recorded_at FROM ssot_events"
    "  WHERE notification_id > t.notification_id ORDER BY notification_id LIMIT 1)"
    " FROM projection_tracking t WHERE t.application_name = ANY(%s)"
    " ORDER BY t.application_name"
)
