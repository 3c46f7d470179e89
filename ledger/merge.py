"""Conflict resolution by replay: a write whose If-Match is stale, under the ``merge``
policy, is merged three ways against every version since its base, or refused naming the
paths where both changed the same thing."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import json_merge_patch
import jsonpointer
import orjson

from .commands import Command, ConfigureNamespace, JsonPatch, MergePatch, Put, Restore
from .documents import apply_json_patch, diff
from .errors import EditConflict, PreconditionFailed
from .events import EntryState
from .namespace_settings import MERGE

#: A stale If-Match further behind than this is refused (412) rather than merged.
MAX_REPLAY_VERSIONS = 1000


@dataclass(frozen=True)
class Replay:
    """What a stale If-Match write is merged against: the documents of versions
    ``base_version`` … current (None where a version deleted the entry) and the patch
    each version after the base recorded, oldest first."""

    base_version: int
    documents: tuple[Any, ...]
    patches: tuple[list[dict[str, Any]], ...]


def is_stale(state: EntryState | None, command: Command) -> bool:
    """Whether ``command`` carries an If-Match that an entry, live now, has moved past."""
    n = command.expected.if_match
    return (n is not None and state is not None and not state.deleted
            and 1 <= n < state.version)


def needs_replay(state: EntryState | None, command: Command, policy: str) -> bool:
    return policy == MERGE and is_stale(state, command) and not isinstance(
        command, ConfigureNamespace)


_ABSENT = object()
Scope = tuple[str, ...]


def _scope(pointer: str, documents: tuple[Any, ...]) -> Scope:
    """The part of the document a change at ``pointer`` touches, for collision checks: the
    pointer itself, cut at the first array on the way (in any of ``documents``), since an
    array index names a different element once another writer inserts or removes one."""
    nodes = list(documents)
    scope: list[str] = []
    for token in jsonpointer.JsonPointer(pointer).parts:
        if any(isinstance(node, list) for node in nodes):
            break
        scope.append(token)
        nodes = [node.get(token, _ABSENT) if isinstance(node, dict) else _ABSENT
                 for node in nodes]
    return tuple(scope)


def _scopes(patch: list[dict[str, Any]], before: Any, after: Any) -> set[Scope]:
    return {
        _scope(op[member], (before, after))
        for op in patch for member in ("path", "from") if member in op
    }


def _overlap(a: Scope, b: Scope) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _value_at(document: Any, scope: Scope) -> Any:
    node = document
    for token in scope:
        if not isinstance(node, dict) or token not in node:
            return _ABSENT
        node = node[token]
    return node


def _ours(base: Any, command: Command) -> Any:
    """The document ``command`` makes of ``base``."""
    if isinstance(command, Put | Restore):
        return command.document
    if isinstance(command, MergePatch):
        return json_merge_patch.merge(copy.deepcopy(base), command.patch)
    if isinstance(command, JsonPatch):
        return apply_json_patch(base, command.operations)
    return None  # Delete


def merge(state: EntryState, command: Command, replay: Replay) -> Any:
    """Three-way merge of a stale write: the document ``command`` made of the base version,
    rebased over every version since. Raises ``EditConflict`` (naming each colliding path
    with its base, theirs and ours values) when a version since changed what it changes."""
    base = replay.documents[0]
    theirs = replay.documents[-1]
    if base is None and not isinstance(command, Put | Restore):
        raise PreconditionFailed(
            f"If-Match names version {replay.base_version} of {command.namespace}/"
            f"{command.key}, which deleted it; there is nothing to patch",
            code="version_conflict", field="If-Match", current_version=state.version)
    ours = _ours(base, command)
    our_patch = diff(base, ours)
    our_scopes = _scopes(our_patch, base, ours)
    their_scopes: set[Scope] = set()
    for i, patch in enumerate(replay.patches):
        their_scopes |= _scopes(patch, replay.documents[i], replay.documents[i + 1])
    collisions = {
        min(o, t, key=len) for o in our_scopes for t in their_scopes if _overlap(o, t)
    }
    # Both sides making the same change is not a conflict.
    collisions = {c for c in collisions
                  if _canonical(_value_at(theirs, c)) != _canonical(_value_at(ours, c))}
    if collisions:
        raise _edit_conflict(command, replay, state, sorted(collisions), base, theirs, ours)
    # Rebase: copy what ours changed, scope by scope, onto theirs (never by array index,
    # never by moves that assume members theirs may have changed).
    merged = copy.deepcopy(theirs)
    for scope in sorted(our_scopes, key=len):
        value = _value_at(ours, scope)
        if not scope:
            merged = copy.deepcopy(value)
            continue
        parent = _value_at(merged, scope[:-1])
        if not isinstance(parent, dict):  # cannot happen when no scope collides
            raise _edit_conflict(command, replay, state, [scope], base, theirs, ours)
        if value is _ABSENT:
            parent.pop(scope[-1], None)
        else:
            parent[scope[-1]] = copy.deepcopy(value)
    return merged


def _canonical(value: Any) -> bytes:
    return b"" if value is _ABSENT else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _edit_conflict(command: Command, replay: Replay, state: EntryState,
                   collisions: list[Scope], base: Any, theirs: Any, ours: Any
                   ) -> EditConflict:
    conflicts = []
    for scope in collisions:
        item: dict[str, Any] = {"path": jsonpointer.JsonPointer.from_parts(scope).path}
        for name, document in (("base", base), ("theirs", theirs), ("ours", ours)):
            value = _value_at(document, scope)
            if value is not _ABSENT:  # an absent member means "not there"
                item[name] = value
        conflicts.append(item)
    paths = ", ".join(repr(c["path"]) for c in conflicts)
    return EditConflict(
        f"entry {command.namespace}/{command.key} changed since version "
        f"{replay.base_version} (now {state.version}) at {paths}, which this write also "
        "changes; nothing was written: re-read, reconcile and retry with the new ETag",
        field="If-Match",
        base_version=replay.base_version,
        current_version=state.version,
        conflicts=conflicts,
    )
