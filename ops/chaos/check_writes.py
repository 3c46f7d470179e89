"""The checks of ``ssot chaos`` on its writes: every acknowledged write is in the log once,
as answered and as sent (the document of a PUT, the patch applied to the version before,
the reverted-to content, a deletion; merged under the namespace's ``merge`` policy, its
changes laid over the versions since), nothing rejected landed, no update was lost. A
write answered ``unchanged`` appended nothing: the version it answers is one the log holds
(made by another write) and already is what the write would have made of it.
"""

from __future__ import annotations

import copy
from typing import Any

import json_merge_patch
import jsonpatch

from .evidence import STRICT_NS, Findings, Log


def _items(invoke: dict[str, Any], answer: Any) -> list[tuple[dict[str, Any], Any]]:
    """(what was asked, what was answered) per event a write makes."""
    if invoke["kind"] == "batch":
        ops = invoke["body"]["operations"]
        answers = answer.get("operations", []) if isinstance(answer, dict) else []
        return list(zip(ops, answers + [None] * (len(ops) - len(answers)), strict=True))
    asked = {"op": invoke["kind"], "namespace": invoke["ns"], "key": invoke["key"],
             "if_match": invoke.get("if_match"), "body": invoke.get("body")}
    return [(asked, answer)]


def check_write(log: Log, found: Findings, invoke: dict[str, Any],
                complete: dict[str, Any] | None) -> None:
    idem = invoke["idempotency_key"]
    landed = log.by_idem.get(idem, [])
    outcome = complete["outcome"] if complete else "info"
    made = len(invoke["body"]["operations"]) if invoke["kind"] == "batch" else 1
    if outcome == "ok":  # an operation answered unchanged appended nothing
        assert complete is not None
        made -= sum(1 for _, answer in _items(invoke, complete["answer"])
                    if isinstance(answer, dict) and answer.get("unchanged"))
    where = {"op": invoke["op"], "kind": invoke["kind"], "ns": invoke["ns"],
             "key": invoke["key"]}
    if outcome == "fail":
        if landed:
            found.add("rejected_write_landed", **where, status=complete and complete["status"],
                      answer=complete and complete["answer"],
                      positions=[e["p"] for e in landed])
        return
    if len(landed) > made:
        found.add("duplicate_write", **where, idempotency_key=idem,
                  positions=[e["p"] for e in landed])
        if outcome == "info":
            return
    elif outcome == "info":
        if 0 < len(landed) < made:
            found.add("partial_batch", **where, landed=[e["p"] for e in landed])
        elif landed:  # a batch's events are in the order of its operations
            for (asked, _), e in zip(_items(invoke, None), landed, strict=True):
                if (asked["namespace"], asked["key"]) != (e["ns"], e["key"]):
                    found.add("content_mismatch", **where, position=e["p"],
                              problem="an event of an entry the write did not name there")
                else:
                    _check_content(log, found, invoke, e, asked)
        return
    elif len(landed) < made:
        found.add("lost_write", **where, idempotency_key=idem,
                  answer=complete and complete["answer"], landed=[e["p"] for e in landed])
    assert complete is not None
    for asked, answer in _items(invoke, complete["answer"]):
        if not isinstance(answer, dict):
            found.add("ack_mismatch", **where, problem="no entry in the answer", answer=answer)
            continue
        landed_at = log.at.get((answer["namespace"], answer["key"], answer["version"]))
        if landed_at is None:
            found.add("lost_write", **where, version=answer["version"],
                      position=answer.get("position"))
            continue
        e = landed_at
        if answer.get("unchanged"):
            _check_unchanged(log, found, invoke, where, asked, answer, e)
            continue
        if (e["p"] != answer.get("position") or e["idem"] != idem
                or e["ns"] != asked["namespace"] or e["key"] != asked["key"]
                or (e["type"] != "entry.deleted" and not answer.get("document_hidden")
                    and e["doc"] != answer.get("document"))):  # hidden: may write, not read
            found.add("ack_mismatch", **where, version=e["v"], log_position=e["p"],
                      answer_position=answer.get("position"), log_idempotency_key=e["idem"])
            continue
        _check_content(log, found, invoke, e, asked)
        if_match = asked.get("if_match")
        if isinstance(if_match, int):
            resolution = e.get("resolution")
            if e["ns"] == STRICT_NS or resolution is None:
                if e["v"] != if_match + 1:
                    found.add("lost_update", **where, if_match=if_match, version=e["v"],
                              resolution=resolution)
            elif resolution.get("base_version") != if_match:
                found.add("lost_update", **where, if_match=if_match, version=e["v"],
                          resolution=resolution)


def _check_unchanged(log: Log, found: Findings, invoke: dict[str, Any],
                     where: dict[str, Any], asked: dict[str, Any], answer: dict[str, Any],
                     e: dict[str, Any]) -> None:
    """A write answered unchanged: the version it names is in the log as answered, live,
    and already what the write makes of it (of the If-Match version, under merge, with
    the versions since laid over it); its If-Match held (strict: it was current)."""
    if (e["p"] != answer.get("position") or e["ns"] != asked["namespace"]
            or e["key"] != asked["key"] or e["type"] == "entry.deleted"
            or (not answer.get("document_hidden") and e["doc"] != answer.get("document"))):
        found.add("ack_mismatch", **where, version=e["v"], log_position=e["p"],
                  answer_position=answer.get("position"), unchanged=True)
        return
    kind, body = _asked(invoke, asked)
    if kind == "delete":
        return _report(found, "a delete answered unchanged", invoke, e, None)
    if_match = asked.get("if_match")
    stale = if_match if isinstance(if_match, int) and if_match != e["v"] else None
    if stale is not None and (e["ns"] == STRICT_NS or stale > e["v"]):
        found.add("lost_update", **where, if_match=if_match, version=e["v"], unchanged=True)
        return
    based_on = e if stale is None else log.at.get((e["ns"], e["key"], stale))
    base = based_on["doc"] if based_on and based_on["type"] != "entry.deleted" else None
    expected = _made(found, invoke, e, log, kind, body, base,
                     e["doc"] if stale is not None else _NOT_MERGED)
    if expected is not _NOT_APPLIED and expected != e["doc"]:
        _report(found, "answered unchanged, but the write would have changed the entry",
                invoke, e, expected)


def _asked(invoke: dict[str, Any], asked: dict[str, Any]) -> tuple[str, Any]:
    """The kind of write an item asked for, and its body (a batch's operations are put,
    merge_patch and delete)."""
    if invoke["kind"] == "batch":
        kind = {"put": "put", "patch": "merge_patch", "delete": "delete"}[asked["op"]]
        return kind, asked.get("document") if kind == "put" else asked.get("patch")
    return asked["op"], asked.get("body")


def _check_content(log: Log, found: Findings, invoke: dict[str, Any], e: dict[str, Any],
                   asked: dict[str, Any]) -> None:
    """The event is what ``asked`` asked for: the document sent, the patch applied to the
    version before, the content reverted to, a deletion."""
    kind, body = _asked(invoke, asked)
    merged = bool(e.get("resolution"))
    expected: Any = None
    problem = None
    if kind == "delete":
        if e["type"] != "entry.deleted":
            problem = f"a delete made {e['type']}"
        return _report(found, problem, invoke, e, None)
    if e["type"] == "entry.deleted":
        return _report(found, f"a {kind} made a deletion", invoke, e, None)
    # The version it was based on: the one before it, or (merged under the namespace's
    # policy) the If-Match version.
    resolution = e.get("resolution") or {}
    base = log.before(e)
    if merged:
        based_on = log.at.get((e["ns"], e["key"], resolution.get("base_version", -1)))
        base = based_on["doc"] if based_on and based_on["type"] != "entry.deleted" else None
    expected = _made(found, invoke, e, log, kind, body, base,
                     log.before(e) if merged else _NOT_MERGED)
    if expected is _NOT_APPLIED:
        return None
    if e["doc"] != expected:
        problem = ("the merge lost a change (the write's or one made since)" if merged
                   else "the document is not what was sent")
    _report(found, problem, invoke, e, expected)


_NOT_MERGED = object()  # the write was not merged over versions since its base
_NOT_APPLIED = object()  # the write does not apply to its base (reported)


def _made(found: Findings, invoke: dict[str, Any], e: dict[str, Any], log: Log, kind: str,
          body: Any, base: Any, theirs: Any) -> Any:
    """What the write makes of ``base``, the version it was based on; merged, its changes
    laid over ``theirs`` (the versions since), so neither its change nor one made since
    is lost. ``_NOT_APPLIED`` when it does not apply to ``base``, which is reported."""
    try:
        made = _made_of(kind, body, base, log, e)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError,
            LookupError) as x:
        _report(found, f"the write does not apply to the version it was based on: "
                f"{type(x).__name__}: {x}", invoke, e, None)
        return _NOT_APPLIED
    return made if theirs is _NOT_MERGED else overlay(theirs, base, made)


def _made_of(kind: str, body: Any, base: Any, log: Log, e: dict[str, Any]) -> Any:
    if kind in ("put", "create"):
        return body
    if kind == "merge_patch":
        return json_merge_patch.merge(copy.deepcopy(base or {}), body)
    if kind == "json_patch":
        return jsonpatch.apply_patch(copy.deepcopy(base), body)
    target = log.at[(e["ns"], e["key"], body["to_version"])]  # revert
    return target["doc"]


def _leaves(document: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """A document as {path: value}, descending into non-empty objects only."""
    if isinstance(document, dict) and document:
        out: dict[tuple[str, ...], Any] = {}
        for name, value in document.items():
            out.update(_leaves(value, (*prefix, name)))
        return out
    return {prefix: document}


def overlay(theirs: Any, base: Any, ours: Any) -> Any:
    """``theirs`` with every leaf ``ours`` changed from ``base`` set to ours' value. Over a
    ``base`` of None (deleted, or not yet created) the write changed the whole document,
    as the ledger's merge sees it: the result is ours (it lands only when the versions
    since made the same document). Shorter paths go first, so replacing a subtree never
    undoes a leaf set in it."""
    if base is None:
        return ours
    merged, mine, was = _leaves(theirs), _leaves(ours), _leaves(base)
    for path in sorted(set(mine) | set(was), key=len):
        if mine.get(path, _MISSING) == was.get(path, _MISSING):
            continue
        if path in mine:
            for other in [p for p in merged if p[:len(path)] == path or path[:len(p)] == p]:
                del merged[other]
            merged[path] = mine[path]
        elif not any(path[:i] in mine for i in range(len(path))):
            # removed by ours (not inside a subtree ours replaced)
            for other in [p for p in merged if p[:len(path)] == path]:
                del merged[other]
    return _unflatten(merged)


_MISSING = object()


def _unflatten(leaves: dict[tuple[str, ...], Any]) -> Any:
    if () in leaves:
        return leaves[()]
    root: dict[str, Any] = {}
    for path, value in leaves.items():
        node = root
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return root


def _report(found: Findings, problem: str | None, invoke: dict[str, Any], e: dict[str, Any],
            expected: Any) -> None:
    if problem is not None:
        found.add("content_mismatch", op=invoke["op"], kind=invoke["kind"], ns=e["ns"],
                  key=e["key"], version=e["v"], position=e["p"], problem=problem,
                  expected=expected, logged=e["doc"])

