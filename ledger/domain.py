"""The decision of the ledger: what a command makes of an entry's state.

``decide(state, command, context, limits)`` is the only place that validates and raises;
``evolve`` (``events``) folds the event it returns into state and never raises, so history
recorded under older rules always loads. A command whose resulting document is the one the
entry already has causes no event: ``decide`` answers ``Unchanged`` and nothing is appended.
Nothing here does I/O: the clock, ids and identity come in from the edge through
``Context``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import json_merge_patch

from .addressing import (
    SCHEMAS_NAMESPACE,
    check_entry_namespace,
    check_key,
    check_namespace,
    is_system_namespace,
    stream_id,
)
from .chain import members_hash
from .commands import (
    Command,
    ConfigureNamespace,
    Context,
    Delete,
    JsonPatch,
    MergePatch,
    Put,
    Restore,
    SetSchema,
)
from .documents import Limits, apply_json_patch, check_document, check_text, diff
from .errors import EntryGone, NotFound, PreconditionFailed
from .events import (
    EVENT_TYPE_NAMES,
    EntryCreated,
    EntryDeleted,
    EntryEvent,
    EntryPatched,
    EntryRestored,
    EntryState,
    EntryUpdated,
    NamespaceConfigured,
)
from .merge import MAX_REPLAY_VERSIONS, Replay, is_stale, merge
from .namespace_settings import (
    LAST_WRITER_WINS,
    MERGE,
    SETTINGS_NAMESPACE,
    STRICT,
    check_settings,
)
from .schemas.compiler import CompiledSchema
from .schemas.records import check_record
from .stored_state import stored_timestamp

E = TypeVar("E", bound=EntryEvent)

_UNMERGED = object()  # "no merge was made" (a merge can make a null document)


@dataclass(frozen=True)
class Unchanged:
    """The decision that a command leaves a live entry as it is: its resulting document
    is the same JSON value as ``state``'s (the RFC 6902 patch between them is empty;
    member order is not compared), so no event is appended and the write answers with the
    current version."""

    state: EntryState


def decide(
    state: EntryState | None,
    command: Command,
    context: Context,
    limits: Limits,
    *,
    policy: str = STRICT,
    replay: Replay | None = None,
    chain: bool = True,
    namespace_exists: bool = True,
    schema: CompiledSchema | None = None,
    data_changed: bool = False,
) -> EntryEvent | Unchanged:
    """Validate ``command`` against ``state`` and return the one event it causes, or
    ``Unchanged`` when it would change nothing.

    ``policy`` is the namespace's conflict policy; under ``merge`` a stale If-Match is
    merged against ``replay`` (see ``merge.needs_replay``). With ``chain`` the event carries
    its stream's hash chain (``prev_hash``, ``hash``; see ``integrity``).
    ``namespace_exists`` False refuses a write into a namespace that has neither settings
    nor entries (a server that does not create namespaces implicitly). ``schema`` is the
    namespace's compiled schema: a document the command makes that violates it is refused
    (``SchemaViolation``); a delete, and a write that changes nothing, are not checked.
    ``data_changed`` tells a ``SetSchema`` that an entry of its namespace changed after
    its ``checked_position``. Raises a ``LedgerError`` when the command is rejected; then
    nothing is appended.
    """
    if isinstance(command, ConfigureNamespace):
        if command.namespace != SETTINGS_NAMESPACE:
            raise TypeError("ConfigureNamespace lives in SETTINGS_NAMESPACE; use configure()")
        check_namespace(command.key)
        _check_expectation(state, command)
        settings = check_settings(command.settings)
        if state is None:  # the first settings: they make the namespace exist
            return _event(NamespaceConfigured, state, command, context, settings, chain=chain)
        return _change(NamespaceConfigured, state, command, context, settings, chain=chain)

    if isinstance(command, SetSchema):
        return _set_schema(state, command, context, chain=chain, data_changed=data_changed)

    check_entry_namespace(command.namespace)
    check_key(command.key)
    if not namespace_exists and not is_system_namespace(command.namespace):
        raise NotFound(
            f"namespace {command.namespace} does not exist, and this server creates no "
            f"namespace by writing into it: create it first with PUT /v1/namespaces/"
            f"{command.namespace}", code="namespace_not_found", field="namespace")
    if isinstance(command, MergePatch):  # whole: a member it removes is in no document
        check_text(command.patch, "patch")
    resolution: dict[str, Any] | None = None
    merged: Any = _UNMERGED
    n = command.expected.if_match
    if policy == LAST_WRITER_WINS and n is not None and (
            state is None or state.deleted or state.version != n):
        # If-Match is advisory: the write applies; the event records what it overwrote.
        resolution = {"policy": LAST_WRITER_WINS, "expected_version": n,
                      "overwritten_version": state.version if state is not None else 0}
        command = replace(command, expected=replace(command.expected, if_match=None))
    elif policy == MERGE and is_stale(state, command):
        assert state is not None and n is not None
        if replay is None or replay.base_version != n:
            raise PreconditionFailed(
                f"If-Match expected version {n} but entry {command.namespace}/"
                f"{command.key} is at version {state.version}, more than "
                f"{MAX_REPLAY_VERSIONS} versions later: too far behind to merge",
                code="version_conflict", field="If-Match", current_version=state.version)
        else:
            merged = merge(state, command, replay)
            resolution = {"policy": MERGE, "base_version": n,
                          "rebased_over": list(range(n + 1, state.version + 1))}
        command = replace(command, expected=replace(command.expected, if_match=None))
    _check_expectation(state, command)
    extra: dict[str, Any] = {"resolution": resolution, "chain": chain}
    result = _write(state, command, context, limits, merged, extra)
    if (schema is not None and isinstance(result, EntryEvent)
            and not isinstance(result, EntryDeleted)):
        schema.check(result.document, command.namespace, command.key)
    return result


def _set_schema(state: EntryState | None, command: SetSchema, context: Context, *,
                chain: bool, data_changed: bool) -> EntryEvent | Unchanged:
    if command.namespace != SCHEMAS_NAMESPACE:
        raise TypeError("SetSchema lives in SCHEMAS_NAMESPACE")
    check_key(command.key)
    _check_expectation(state, command)
    if data_changed:
        raise PreconditionFailed(
            f"entries of the namespace changed after position {command.checked_position}, "
            "where they were checked against this schema; check them again",
            code="schema_check_stale", field="checked_position")
    record = check_record(command.key, command.record)
    if state is None or state.deleted:
        return _event(EntryCreated, state, command, context, record, chain=chain)
    return _change(EntryUpdated, state, command, context, record, chain=chain)


def _write(state: EntryState | None, command: Command, context: Context, limits: Limits,
           merged: Any, extra: dict[str, Any]) -> EntryEvent | Unchanged:
    """What a write into a namespace's entry makes (its preconditions already hold)."""
    live = state is not None and not state.deleted

    if isinstance(command, Put):
        document = command.document if merged is _UNMERGED else merged
        check_document(document, limits)
        if live:
            assert state is not None
            return _change(EntryUpdated, state, command, context, document, **extra)
        return _event(EntryCreated, state, command, context, document, **extra)

    if isinstance(command, Delete):
        current = _require_live(state, command)
        return _event(EntryDeleted, current, command, context, None, **extra)

    if isinstance(command, MergePatch | JsonPatch):
        current = _require_live(state, command)
        if merged is not _UNMERGED:
            document = merged
        elif isinstance(command, MergePatch):
            document = json_merge_patch.merge(copy.deepcopy(current.document), command.patch)
        else:
            document = apply_json_patch(current.document, command.operations)
        check_document(document, limits)
        return _change(EntryPatched, current, command, context, document, **extra)

    if isinstance(command, Restore):
        if state is None:
            raise _not_found(command)
        if not 1 <= command.from_version <= state.version:
            raise NotFound(
                f"entry {command.namespace}/{command.key} has no version {command.from_version}",
                code="version_not_found",
                field="version",
            )
        document = command.document if merged is _UNMERGED else merged
        check_document(document, limits)
        if state.deleted:  # brought back, even with the very document it had
            return _event(EntryRestored, state, command, context, document,
                          restored_from_version=command.from_version, **extra)
        return _change(EntryRestored, state, command, context, document,
                       restored_from_version=command.from_version, **extra)

    raise TypeError(f"unknown command {type(command).__name__}")  # a programming error


def _check_expectation(state: EntryState | None, command: Command) -> None:
    expected = command.expected
    live = state is not None and not state.deleted
    if expected.at_version is not None:
        current = state.version if state is not None else 0
        if expected.at_version != current:
            raise PreconditionFailed(
                f"entry {command.namespace}/{command.key} was expected at version "
                f"{expected.at_version} but is at version {current}",
                code="version_conflict", field="version", current_version=current)
    if expected.if_none_match and live:
        assert state is not None
        raise PreconditionFailed(
            f"entry {command.namespace}/{command.key} already exists (version "
            f"{state.version}); If-None-Match: * allows creating it only",
            code="entry_exists",
            field="If-None-Match",
            current_version=state.version,
        )
    if expected.must_exist and not live:
        raise PreconditionFailed(
            f"If-Match: * requires entry {command.namespace}/{command.key} to exist",
            code="entry_not_found",
            field="If-Match",
            current_version=state.version if state is not None else 0,
        )
    if expected.if_match is not None:
        current = state.version if state is not None else 0
        if expected.if_match != current or not live:
            what = (
                f"is at version {current}" if live
                else "does not exist" if state is None
                else f"was deleted in version {current}"
            )
            raise PreconditionFailed(
                f"If-Match expected version {expected.if_match} but entry "
                f"{command.namespace}/{command.key} {what}",
                code="version_conflict",
                field="If-Match",
                current_version=current,
            )


def _not_found(command: Command) -> NotFound:
    return NotFound(
        f"entry {command.namespace}/{command.key} does not exist",
        code="entry_not_found",
        field="key",
    )


def _require_live(state: EntryState | None, command: Command) -> EntryState:
    if state is None:
        raise _not_found(command)
    if state.deleted:
        raise EntryGone(
            f"entry {command.namespace}/{command.key} was deleted in version {state.version}",
            field="key",
            deleted_version=state.version,
        )
    return state


def _change(
    cls: type[E],
    state: EntryState,
    command: Command,
    context: Context,
    document: Any,
    **extra: Any,
) -> E | Unchanged:
    """The event making ``document`` of the live ``state``; ``Unchanged`` when it already
    is that document. The patch computed to tell is the one the event records."""
    patch = diff(state.document, document)
    if not patch:
        return Unchanged(state)
    return _event(cls, state, command, context, document, patch=patch, **extra)


def _event(
    cls: type[E],
    state: EntryState | None,
    command: Command,
    context: Context,
    document: Any,
    *,
    chain: bool = True,
    patch: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> E:
    previous = state.document if (state is not None and not state.deleted) else None
    fields: dict[str, Any] = {
        "originator_id": stream_id(command.namespace, command.key),
        "originator_version": (state.version if state is not None else 0) + 1,
        "timestamp": context.timestamp,
        "event_id": context.event_id,
        "namespace": command.namespace,
        "key": command.key,
        "document": document,
        "patch": diff(previous, document) if patch is None else patch,
        "actor": context.actor,
        "reason": context.reason,
        "correlation_id": context.correlation_id,
        "causation_id": context.causation_id,
        "idempotency_key": context.idempotency_key,
        "auth": context.auth,
        **extra,
    }
    if chain:
        prev_hash = fields["prev_hash"] = state.hash if state is not None else None
        # The hash covers every member the state will store, as it will store them: the
        # object ``hashed_members`` makes of the stored state, built here at once in its
        # order (``HASHED_WHOLE``; ``members_hash`` refuses any other).
        hashed = {
            "timestamp": stored_timestamp(context.timestamp),
            "event_id": str(context.event_id),
            "namespace": command.namespace,
            "key": command.key,
            "document": document,
            "patch": fields["patch"],
            "actor": context.actor,
            "reason": context.reason,
            "correlation_id": context.correlation_id,
            "causation_id": context.causation_id,
            "idempotency_key": context.idempotency_key,
            "resolution": extra.get("resolution"),
            "prev_hash": prev_hash,
            "auth": context.auth,
        }
        if "restored_from_version" in extra:
            hashed["restored_from_version"] = extra["restored_from_version"]
        hashed["class_version"] = cls.class_version
        hashed["stream"] = str(fields["originator_id"])
        hashed["version"] = fields["originator_version"]
        hashed["type"] = EVENT_TYPE_NAMES[cls]
        fields["hash"] = members_hash(hashed)
    return cls(**fields)
