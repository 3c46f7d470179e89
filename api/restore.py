"""``POST /v1/namespaces/{namespace}/restore``: point-in-time restore, which makes a
namespace (or a key prefix of it) what it was at a past time or position by appending
events, never by rewriting history."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from nexus_ssot.ledger.addressing import check_namespace
from nexus_ssot.ledger.commands import Command, Delete, Expectation, Restore
from nexus_ssot.ledger.documents import diff
from nexus_ssot.ledger.errors import InvalidInput, PreconditionFailed, Unprocessable
from nexus_ssot.projections import restore_plan
from nexus_ssot.projections.schema_records import current_schema

from . import http, models
from .cuts import cut_at
from .existence import require_namespace
from .guard import guard_of, refuse
from .params import (
    JSON,
    MAX_INT,
    UNCONDITIONAL_WRITE_HEADERS,
    WRITE_ERRORS,
    Namespace,
    as_of_member,
    service_of,
)
from .writes import (
    WriteRequest,
    check_reason,
    count_writes,
    replayed,
    traced,
    within_write_timeout,
)

router = APIRouter(prefix="/v1")

_RESTORE_ATTEMPTS = 3


def _check_plan(request: Request, ns: str, keys: list[str]) -> None:
    """A plan touching one key the caller may not restore is refused whole, its dry run
    too (it would show the documents). The key is named only to a caller who may read it."""
    guard = guard_of(request)
    for key in keys:
        decision = guard.decide("restore", ns, key)
        if decision.allowed:
            continue
        raise refuse(request, guard, "restore", ns, key, decision, hidden_as=(
            f"{ns} as planned: the plan changes entries it may not restore (narrow it by "
            "key_prefix)"))


@router.post(
    "/namespaces/{namespace}/restore",
    summary="Make a namespace (or key prefix) what it was at a past time or position",
    response_model=models.RestoreResult,
    responses=WRITE_ERRORS,
    openapi_extra={**UNCONDITIONAL_WRITE_HEADERS, "requestBody": {
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
    service = service_of(request)
    settings = service.settings
    http.require_media_type(request, JSON)
    body = await http.read_body(request, settings.max_request_bytes)
    spec = http.parse_json(body, field="body", root="")
    allowed = {"as_of", "position", "reason", "dry_run", "key_prefix"}
    if not isinstance(spec, dict) or not set(spec) <= allowed:
        raise InvalidInput(f"the body is an object with {', '.join(sorted(allowed))}",
                           code="invalid_parameter", field="body")
    as_of = as_of_member(spec["as_of"]) if spec.get("as_of") is not None else None
    position = spec.get("position")
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
    reason = check_reason(spec.get("reason"))
    if reason is None and not dry_run:
        raise InvalidInput("a restore needs a reason (it is recorded on every event)",
                           code="invalid_reason", field="reason")
    meta = WriteRequest(request, body, reason)
    for attempt in range(_RESTORE_ATTEMPTS):
        async with service.pool.connection() as conn:
            cut = await cut_at(conn, as_of, position)
            steps = []
            async for step in restore_plan.plan(conn, ns, cut, prefix=prefix):
                steps.append(step)
                if len(steps) > settings.max_restore_operations:
                    raise Unprocessable(
                        f"restoring {ns} changes more than {settings.max_restore_operations}"
                        " entries, more than one restore may (SSOT_MAX_RESTORE_OPERATIONS);"
                        " restore it by key_prefix", code="restore_too_large",
                        field="key_prefix")
            if not steps:  # nothing to change, or no such namespace?
                await require_namespace(conn, ns)
            _, schema = await current_schema(conn, ns) if dry_run else (0, None)
        _check_plan(request, ns, [s.key for s in steps])
        result: dict[str, Any] = {
            "namespace": ns, "key_prefix": prefix, "position": cut, "dry_run": dry_run,
            "correlation_id": meta.correlation_id,
            "operations": [{
                "key": s.key, "action": s.action, "from_version": s.from_version,
                "to_version": s.to_version, "patch": diff(s.current, s.target)}
                for s in steps],
        }
        if schema is not None:  # the writer would refuse the restore whole: say why
            for item, s in zip(result["operations"], steps, strict=True):
                if s.action != "delete" and (found := schema.violations(s.target)):
                    item["violations"] = found
            result["schema_violations"] = sum("violations" in o for o in result["operations"])
        if dry_run or not steps:
            return Response(orjson.dumps(result), media_type=JSON)
        commands: list[Command] = [
            Delete(ns, s.key, Expectation(at_version=s.from_version)) if s.action == "delete"
            else Restore(ns, s.key, Expectation(at_version=s.from_version),
                         from_version=s.to_version or 0, document=s.target)
            for s in steps
        ]
        try:
            with traced(service, meta, "ledger.restore") as span:
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
            return Response(orjson.dumps(result), media_type=JSON, headers=replayed(outcomes))
        for item, outcome in zip(result["operations"], outcomes, strict=True):
            item.update(version=outcome.version, position=outcome.position)
        count_writes(service, outcomes)
        return Response(orjson.dumps(result), media_type=JSON)
    raise AssertionError("unreachable")

