"""``POST /v1/batch``: several writes across namespaces and keys, all or nothing; each
operation checked as a write of its own would be, and a refusal names the operation."""

from __future__ import annotations

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
from nexus_ssot.ledger.commands import Command, Delete, Expectation, JsonPatch, MergePatch, Put
from nexus_ssot.ledger.documents import check_json_patch
from nexus_ssot.ledger.errors import InvalidInput, LedgerError, capped, quoted

from . import http, models
from .guard import command_action, guard_of, refuse
from .params import (
    JSON,
    KEY_PATTERN,
    MAX_INT,
    UNCONDITIONAL_WRITE_HEADERS,
    WRITE_ERRORS,
    service_of,
)
from .writes import (
    WriteRequest,
    check_reason,
    count_writes,
    outcome_json,
    replayed,
    traced,
    within_write_timeout,
)

router = APIRouter(prefix="/v1")

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
        raise InvalidInput(f"{at}.op must be put, patch or delete, not {quoted(kind)}",
                           code="invalid_operation", field=f"{at}.op")
    unknown = sorted(set(op) - _OP_MEMBERS[kind])
    if unknown:
        raise InvalidInput(f"{at} ({kind}) has an unknown member {quoted(unknown[0])}",
                           code="invalid_operation", field=f"{at}.{capped(unknown[0])}")
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
                           f"not {quoted(patch_type)}", code="invalid_operation",
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
    responses=WRITE_ERRORS,
    openapi_extra={**UNCONDITIONAL_WRITE_HEADERS, "requestBody": {
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
    service = service_of(request)
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
    reason = check_reason(spec.get("reason"))
    commands = [_batch_command(i, op) for i, op in enumerate(operations)]
    guard = guard_of(request)
    for i, command in enumerate(commands):  # one forbidden operation refuses them all
        action = command_action(command)
        decision = guard.decide(action, command.namespace, command.key)
        if not decision.allowed:
            error = refuse(request, guard, action, command.namespace, command.key, decision)
            assert isinstance(error, LedgerError)
            raise _in_operation(error, i, operations[i])
    meta = WriteRequest(request, body, reason)
    with traced(service, meta, "ledger.batch") as span:
        span.set_attribute("ssot.operations", len(commands))
        try:
            outcomes = await within_write_timeout(service, service.writer.write_all(
                [(c, meta.context()) for c in commands], meta.idempotency))
        except LedgerError as e:
            if "operation" in e.extra:
                index = e.extra["operation"]
                raise _in_operation(e, index, operations[index]) from None
            raise
    count_writes(service, outcomes)
    return Response(orjson.dumps({
        "correlation_id": meta.correlation_id,
        "operations": [outcome_json(o, request) for o in outcomes],
    }), media_type=JSON, headers=replayed(outcomes))
