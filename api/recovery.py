"""Namespace settings (recorded as events), atomic batches, and point-in-time restore."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from nexus_ssot.ledger.addressing import (
    MAX_KEY_LENGTH,
    NAMESPACE_PATTERN,
    check_key,
    check_namespace,
)
from nexus_ssot.ledger.commands import (
    Command,
    Delete,
    Expectation,
    JsonPatch,
    MergePatch,
    Put,
    Restore,
)
from nexus_ssot.ledger.documents import check_json_patch, diff
from nexus_ssot.ledger.errors import (
    InvalidInput,
    LedgerError,
    PreconditionFailed,
    Unprocessable,
)
from nexus_ssot.ledger.events import EntryState as _State
from nexus_ssot.ledger.namespace_settings import (
    SETTINGS_NAMESPACE,
    check_settings,
    configure,
    settings_of,
)
from nexus_ssot.ledger.writer import Outcome
from nexus_ssot.projections import current_state, entry_at, restore_plan
from nexus_ssot.projections import entry_history as entry_history_view

from . import http, models
from .routes import (
    _ERRORS,
    _READ_ERRORS,
    _WRITE_HEADERS,
    JSON,
    KEY_PATTERN,
    MAX_INT,
    Cursor,
    Limit,
    Namespace,
    WriteRequest,
    _one_coordinate,
    _service,
    decode_cursor,
    outcome_json,
    page,
    within_write_timeout,
)

router = APIRouter(prefix="/v1")

_RESTORE_ATTEMPTS = 3


# --- namespace settings ---------------------------------------------------------------


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
    responses=_READ_ERRORS,
    tags=["namespaces"],
)
async def get_namespace(request: Request, namespace: Namespace) -> Response:
    ns = check_namespace(namespace)
    service = _service(request)
    async with service.pool.connection() as conn:
        version, settings = await _settings_state(conn, ns)
        entries, deleted, last_position = await current_state.namespace_counts(conn, ns)
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
               **_ERRORS},
    openapi_extra={**_WRITE_HEADERS, "requestBody": {"required": True, "content": {
        JSON: {"schema": {**models.NamespaceSettings.model_json_schema(),
                          "additionalProperties": False}}}}},
    tags=["namespaces"],
)
async def put_namespace(request: Request, namespace: Namespace) -> Response:
    ns = check_namespace(namespace)
    service = _service(request)
    http.require_media_type(request, JSON)
    body = await http.read_body(request, service.settings.max_request_bytes)
    settings = check_settings(http.parse_json(body, field="settings", root=""))
    meta = WriteRequest(request, body)
    outcome = await within_write_timeout(service, service.writer.write(
        configure(ns, settings, http.expectation(request)), meta.context(), meta.idempotency))
    headers = {"ETag": http.etag(outcome.version)}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(orjson.dumps({
        "namespace": ns, "settings": outcome.document, "settings_version": outcome.version,
        "position": outcome.position, "recorded_at": http.rfc3339(outcome.recorded_at),
    }), status_code=201 if outcome.version == 1 else 200, media_type=JSON, headers=headers)


@router.get(
    "/namespaces/{namespace}/settings/history",
    summary="Every change of a namespace's settings, with who, when and why",
    response_model=models.HistoryPage,
    responses=_READ_ERRORS,
    tags=["namespaces"],
)
async def namespace_settings_history(
    request: Request, namespace: Namespace, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    ns = check_namespace(namespace)
    state = decode_cursor(cursor, "v")
    after = state["v"] if state else None
    async with _service(request).pool.connection() as conn:
        rows = await entry_history_view.history(conn, SETTINGS_NAMESPACE, ns,
                                                after_version=after, limit=limit + 1)
    return page(rows, limit, lambda r: r[1], lambda r: {"v": r[0]})


# --- atomic batch ---------------------------------------------------------------------

_OP_MEMBERS = {
    "put": {"op", "namespace", "key", "document", "if_match", "if_none_match"},
    "patch": {"op", "namespace", "key", "patch", "patch_type", "if_match"},
    "delete": {"op", "namespace", "key", "if_match"},
}
_HEADER_FIELDS = {"If-Match": "if_match", "If-None-Match": "if_none_match"}


#: One operation of a batch, as _batch_command reads it.
_OPERATION: dict[str, Any] = {
    "type": "object", "required": ["op", "namespace", "key"], "additionalProperties": False,
    "properties": {
        "op": {"enum": ["put", "patch", "delete"]},
        "namespace": {"type": "string", "pattern": NAMESPACE_PATTERN.pattern},
        "key": {"type": "string", "pattern": KEY_PATTERN, "maxLength": MAX_KEY_LENGTH},
        "document": {"description": "put: the document"},
        "patch": {"description": "patch: a merge patch (object) or a JSON Patch (array)"},
        "patch_type": {"enum": ["merge", "json"]},
        "if_match": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": MAX_INT},
                               {"const": "*"}, {"type": "null"}]},
        "if_none_match": {"type": "boolean"}},
    # (as prose, not if/then: generators of test data filter "not" schemas slowly)
    "description": "put needs document (and may give if_none_match); patch needs patch "
    "(and may give patch_type); delete gives neither; if_match and a true if_none_match "
    "exclude each other",
}


def _batch_command(index: int, op: Any) -> Command:
    at = f"operations[{index}]"
    if not isinstance(op, dict):
        raise InvalidInput(f"{at} must be an object", code="invalid_operation", field=at)
    kind = op.get("op")
    if not isinstance(kind, str) or kind not in _OP_MEMBERS:  # {} is no key of a dict
        raise InvalidInput(f"{at}.op must be put, patch or delete, not {kind!r}",
                           code="invalid_operation", field=f"{at}.op")
    unknown = sorted(set(op) - _OP_MEMBERS[kind])
    if unknown:
        raise InvalidInput(f"{at} ({kind}) has an unknown member {unknown[0]!r}",
                           code="invalid_operation", field=f"{at}.{unknown[0]}")
    for member in ("namespace", "key"):
        if not isinstance(op.get(member), str):
            raise InvalidInput(f"{at}.{member} is required (a string)",
                               code="invalid_operation", field=f"{at}.{member}")
    try:
        ns, key = check_namespace(op["namespace"]), check_key(op["key"])
    except InvalidInput as e:
        raise _in_operation(e, index, op) from None
    expected = _expectation(at, op)
    if kind == "put":
        if "document" not in op:
            raise InvalidInput(f"{at}.document is required for put", code="invalid_operation",
                               field=f"{at}.document")
        return Put(ns, key, expected, document=op["document"])
    if kind == "patch":
        if "patch" not in op:
            raise InvalidInput(f"{at}.patch is required for patch", code="invalid_operation",
                               field=f"{at}.patch")
        patch_type = op.get("patch_type", "merge")
        if patch_type == "merge":
            return MergePatch(ns, key, expected, patch=op["patch"])
        if patch_type == "json":
            try:
                return JsonPatch(ns, key, expected, operations=check_json_patch(op["patch"]))
            except InvalidInput as e:
                raise _in_operation(e, index, op) from None
        raise InvalidInput(f"{at}.patch_type must be merge (RFC 7386) or json (RFC 6902), "
                           f"not {patch_type!r}", code="invalid_operation",
                           field=f"{at}.patch_type")
    return Delete(ns, key, expected)


def _expectation(at: str, op: dict[str, Any]) -> Expectation:
    if_match = op.get("if_match")
    if_none_match = op.get("if_none_match", False)
    if if_match is not None and if_match != "*" and (
            not isinstance(if_match, int) or isinstance(if_match, bool)
            or not 1 <= if_match <= MAX_INT):
        raise InvalidInput(f'{at}.if_match must be a version (1, 2, …) or "*"',
                           code="invalid_precondition", field=f"{at}.if_match")
    if not isinstance(if_none_match, bool):
        raise InvalidInput(f"{at}.if_none_match must be true or false",
                           code="invalid_precondition", field=f"{at}.if_none_match")
    if if_none_match and if_match is not None:
        raise InvalidInput(f"{at}: give if_match or if_none_match, not both",
                           code="invalid_precondition", field=f"{at}.if_none_match")
    return Expectation(if_match=if_match if isinstance(if_match, int) else None,
                       must_exist=if_match == "*", if_none_match=if_none_match)


def _in_operation(e: LedgerError, index: int, op: Any) -> LedgerError:
    """``e`` restated for operation ``index`` of a batch: its field prefixed, its index in
    ``operation``."""
    at = f"operations[{index}]"
    field = _HEADER_FIELDS.get(e.field or "", e.field)
    where = f"{op.get('op')} {op.get('namespace')}/{op.get('key')}" if isinstance(op, dict) \
        else ""
    extra = {k: v for k, v in e.extra.items() if k != "operation"}
    return type(e)(f"{at} ({where}): {e.message}", code=e.code,
                   field=f"{at}.{field}" if field else at, operation=index, **extra)


@router.post(
    "/batch",
    summary="Apply several writes across namespaces and keys: all or nothing",
    response_model=models.BatchResult,
    responses=_ERRORS,
    openapi_extra={"parameters": _WRITE_HEADERS["parameters"][2:], "requestBody": {
        "required": True, "content": {JSON: {"schema": {
            "type": "object", "required": ["operations"], "additionalProperties": False,
            "properties": {
                "operations": {"type": "array", "minItems": 1, "items": _OPERATION},
                "reason": {"type": "string", "minLength": 1, "maxLength": 1024}}}}}}},
    tags=["entries"],
)
async def batch(request: Request) -> Response:
    """Every operation is decided in order against the state the ones before it leave
    (the same key may appear twice) and all are appended in one transaction, under one
    correlation id; if any is refused, nothing is appended and the problem names it
    (``operation``: its index; ``field``: ``operations[i]. …``)."""
    service = _service(request)
    settings = service.settings
    http.require_media_type(request, JSON)
    body = await http.read_body(request, settings.max_batch_bytes)
    spec = http.parse_json(body, field="body", root="")
    if not isinstance(spec, dict) or not set(spec) <= {"operations", "reason"}:
        raise InvalidInput('the body is {"operations": [...]} with an optional "reason"',
                           code="invalid_parameter", field="body")
    operations = spec.get("operations")
    if not isinstance(operations, list) or not operations:
        raise InvalidInput("operations must be a non-empty array", code="invalid_parameter",
                           field="operations")
    if len(operations) > settings.max_batch_operations:
        raise InvalidInput(f"a batch may carry at most {settings.max_batch_operations} "
                           f"operations, not {len(operations)}", code="batch_too_large",
                           field="operations")
    reason = _reason(spec.get("reason"))
    commands = [_batch_command(i, op) for i, op in enumerate(operations)]
    meta = WriteRequest(request, body, reason)
    with service.tracer.start_as_current_span("ledger.batch") as span:
        span.set_attribute("ssot.operations", len(commands))
        try:
            outcomes = await within_write_timeout(service, service.writer.write_all(
                [(c, meta.context()) for c in commands], meta.idempotency))
        except LedgerError as e:
            if "operation" in e.extra:
                index = e.extra["operation"]
                raise _in_operation(e, index, operations[index]) from None
            raise
    for outcome in outcomes:
        service.writes.add(1, {"event_type": outcome.event_type})
    return Response(orjson.dumps({
        "correlation_id": meta.correlation_id,
        "operations": [outcome_json(o) for o in outcomes],
    }), media_type=JSON, headers=_replayed(outcomes))


def _replayed(outcomes: list[Outcome]) -> dict[str, str] | None:
    return {"Idempotent-Replayed": "true"} if outcomes and outcomes[0].replayed else None


def _reason(reason: Any) -> str | None:
    if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= 1024):
        raise InvalidInput("reason must be 1-1024 characters of text", code="invalid_reason",
                           field="reason")
    return reason


# --- point-in-time restore ----------------------------------------------------------


@router.post(
    "/namespaces/{namespace}/restore",
    summary="Make a namespace (or key prefix) what it was at a past time or position",
    response_model=models.RestoreResult,
    responses=_ERRORS,
    openapi_extra={"parameters": _WRITE_HEADERS["parameters"][2:], "requestBody": {
        "required": True, "content": {JSON: {"schema": {
            "type": "object", "additionalProperties": False,
            "oneOf": [{"required": ["as_of"]}, {"required": ["position"]}],
            "properties": {
                "as_of": {"type": "string", "format": "date-time"},
                "position": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
                "reason": {"type": "string", "minLength": 1, "maxLength": 1024},
                "dry_run": {"type": "boolean"},
                "key_prefix": {"type": "string", "maxLength": 512}}}}}}},
    tags=["namespaces"],
)
async def restore(request: Request, namespace: Namespace) -> Response:
    """Re-creates, reverts and deletes entries as needed, all in one transaction under one
    correlation id; each event is an ordinary ``entry.restored`` or ``entry.deleted`` with
    the reason, so history is appended to, never rewritten. ``dry_run`` answers the plan
    and appends nothing."""
    ns = check_namespace(namespace)
    service = _service(request)
    settings = service.settings
    http.require_media_type(request, JSON)
    body = await http.read_body(request, settings.max_request_bytes)
    spec = http.parse_json(body, field="body", root="")
    allowed = {"as_of", "position", "reason", "dry_run", "key_prefix"}
    if not isinstance(spec, dict) or not set(spec) <= allowed:
        raise InvalidInput(f"the body is an object with {', '.join(sorted(allowed))}",
                           code="invalid_parameter", field="body")
    as_of, position = _as_of(spec.get("as_of")), spec.get("position")
    if position is not None and (not isinstance(position, int) or isinstance(position, bool)
                                 or not 0 <= position <= MAX_INT):
        raise InvalidInput("position must be a global position (0, 1, 2, …)",
                           code="invalid_parameter", field="position")
    if (as_of is None) == (position is None):
        raise InvalidInput("give as_of or position (one of them)", code="invalid_parameter",
                           field="as_of")
    dry_run = spec.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise InvalidInput("dry_run must be true or false", code="invalid_parameter",
                           field="dry_run")
    prefix = spec.get("key_prefix", "")
    if not isinstance(prefix, str) or len(prefix) > 512:
        raise InvalidInput("key_prefix must be text of at most 512 characters",
                           code="invalid_parameter", field="key_prefix")
    reason = _reason(spec.get("reason"))
    if reason is None and not dry_run:
        raise InvalidInput("a restore needs a reason (it is recorded on every event)",
                           code="invalid_reason", field="reason")
    meta = WriteRequest(request, body, reason)
    for attempt in range(_RESTORE_ATTEMPTS):
        async with service.pool.connection() as conn:
            cut = position if position is not None else await entry_at.position_at(conn, as_of)
            steps = []
            async for step in restore_plan.plan(conn, ns, cut, prefix=prefix):
                steps.append(step)
                if len(steps) > settings.max_restore_operations:
                    raise Unprocessable(
                        f"restoring {ns} changes more than {settings.max_restore_operations}"
                        " entries, more than one restore may (SSOT_MAX_RESTORE_OPERATIONS);"
                        " restore it by key_prefix", code="restore_too_large",
                        field="key_prefix")
        result: dict[str, Any] = {
            "namespace": ns, "key_prefix": prefix, "position": cut, "dry_run": dry_run,
            "correlation_id": meta.correlation_id,
            "operations": [{
                "key": s.key, "action": s.action, "from_version": s.from_version,
                "to_version": s.to_version, "patch": diff(s.current, s.target)}
                for s in steps],
        }
        if dry_run or not steps:
            return Response(orjson.dumps(result), media_type=JSON)
        commands: list[Command] = [
            Delete(ns, s.key, Expectation(at_version=s.from_version)) if s.action == "delete"
            else Restore(ns, s.key, Expectation(at_version=s.from_version),
                         from_version=s.to_version or 0, document=s.target)
            for s in steps
        ]
        try:
            with service.tracer.start_as_current_span("ledger.restore") as span:
                span.set_attribute("ssot.namespace", ns)
                span.set_attribute("ssot.operations", len(commands))
                outcomes = await within_write_timeout(service, service.writer.write_all(
                    [(c, meta.context()) for c in commands], meta.idempotency))
        except PreconditionFailed:
            if attempt + 1 == _RESTORE_ATTEMPTS:
                raise PreconditionFailed(
                    f"entries of {ns} kept changing while the restore was planned "
                    f"({_RESTORE_ATTEMPTS} attempts); nothing was written: retry",
                    code="restore_raced", field="namespace") from None
            continue  # an entry moved on between plan and commit: plan again
        if outcomes[0].replayed:  # the first request's answer: what it appended
            result["operations"] = [{
                "key": o.key, "action": "delete" if o.event_type == "entry.deleted"
                else "revert", "from_version": o.version - 1, "to_version": None,
                "patch": [], "version": o.version, "position": o.position}
                for o in outcomes]
            return Response(orjson.dumps(result), media_type=JSON, headers=_replayed(outcomes))
        for item, outcome in zip(result["operations"], outcomes, strict=True):
            item.update(version=outcome.version, position=outcome.position)
            service.writes.add(1, {"event_type": outcome.event_type})
        return Response(orjson.dumps(result), media_type=JSON)
    raise AssertionError("unreachable")


def _as_of(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"as_of {value!r} is not an RFC 3339 time",
                           code="invalid_parameter", field="as_of") from None
    _one_coordinate(as_of=moment)
    return moment

