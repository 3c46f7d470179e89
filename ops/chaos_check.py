"""The checker of ``ssot chaos``: proves a run's history against its log.

It reads a run folder (``config.json``, ``history.jsonl``, ``log.jsonl``,
``subscribers/*.jsonl``, ``server.json``; see ops/chaos.py) and names every anomaly by
kind, with examples:

- ``lost_write``: an acknowledged write is not in the log (at the version and position
  its answer named); ``duplicate_write``: a write's idempotency key is on more events
  than the write made (at most once, also for writes whose outcome was never learned);
  ``partial_batch``: some of a batch's events landed and not all;
- ``ack_mismatch``: the log's event differs from the answer (position, key, document);
- ``content_mismatch``: the event is not what was sent (the document of a PUT, the patch
  applied to the version before, the reverted-to content, a deletion);
- ``rejected_write_landed``: a write answered 4xx left an event;
- ``lost_update``: an accepted If-Match N write did not make version N+1 (or, merged
  under the namespace's ``merge`` policy, was not based on N); ``version_gap``: an
  entry's versions are not 1, 2, 3… in log order;
- ``phantom_read``: a read returned a state the log never held; ``stale_read``: a read
  missed a write acknowledged before it was sent (``read_your_writes`` when the same
  client made it); ``wrong_time_travel``: a read at a version, time or position returned
  another state than the log's at that point; ``read_from_future``: a read returned a
  write sent after the read completed;
- ``unexplained_event``: an event in the run's namespaces that no client sent;
- ``subscriber_gap``, ``subscriber_duplicate``, ``subscriber_reorder``,
  ``subscriber_phantom``: what a subscriber received against the log;
- ``server_error``: a 500 a client received, or an unexpected failure the API logged
  (``api.log``: an exception it did not map to an answer);
- ``views_drift`` (``ssot check``), ``integrity`` (``ssot verify``), ``stream_*``
  (``ssot reconcile``: the JetStream stream against the log), ``not_caught_up`` (the
  broadcaster or a subscriber did not reach the head in time after the run).
"""

from __future__ import annotations

import bisect
import copy
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import json_merge_patch
import jsonpatch
import orjson

EXAMPLES = 5
WRITE_KINDS = frozenset({"create", "put", "merge_patch", "json_patch", "delete", "revert",
                         "batch"})
READ_KINDS = frozenset({"read", "read_version", "read_as_of", "read_position"})
CHAOS_NAMESPACES = ("chaos-strict", "chaos-merge")
STRICT_NS = "chaos-strict"


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open("rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


_INVOKE = ("type", "t", "op", "client", "kind", "ns", "key", "body", "if_match", "params",
           "idempotency_key")
_COMPLETE = ("type", "t", "op", "client", "outcome", "status", "answer", "attempts")
_ANSWER = ("namespace", "key", "version", "position", "document", "code", "deleted_version",
           "operations")


def _history(path: Path) -> list[dict[str, Any]]:
    """The history with only what the checks read (a run of hours fits in memory)."""
    history = []
    with path.open("rb") as f:
        for line in f:
            h = orjson.loads(line)
            if h["type"] == "invoke":
                h = {k: h.get(k) for k in _INVOKE}
            elif h["type"] == "complete":
                slim = {k: h.get(k) for k in _COMPLETE}
                slim["errors"] = [e for e in h["errors"] if e.startswith("500 ")]
                answer = h["answer"]
                if isinstance(answer, dict):
                    slim["answer"] = {k: answer[k] for k in _ANSWER if k in answer}
                h = slim
            history.append(h)
    return history


class Findings:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[Any]] = defaultdict(list)

    def add(self, kind: str, /, **example: Any) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(example)

    def as_dict(self) -> dict[str, Any]:
        return {kind: {"count": n, "examples": self.examples[kind]}
                for kind, n in sorted(self.counts.items())}


class Log:
    """The committed events, indexed."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.at: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self.by_idem: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.by_position: dict[int, dict[str, Any]] = {}
        for e in events:
            self.at[(e["ns"], e["key"], e["v"])] = e
            self.by_key[(e["ns"], e["key"])].append(e)
            if e.get("idem"):
                self.by_idem[e["idem"]].append(e)
            self.by_position[e["p"]] = e

    def before(self, e: dict[str, Any]) -> Any:
        """The document an event changed (None: absent or deleted)."""
        prev = self.at.get((e["ns"], e["key"], e["v"] - 1))
        if prev is None or prev["type"] == "entry.deleted":
            return None
        return prev["doc"]

    def last_at_or_before(self, ns: str, key: str, field: str,
                          bound: float) -> dict[str, Any] | None:
        """The entry's last event whose ``field`` (``p`` or ``epoch``, both rising with
        the version) is at most ``bound``."""
        events = self.by_key.get((ns, key), [])
        i = bisect.bisect_right(events, bound, key=lambda e: e[field])
        return events[i - 1] if i else None


def check_run(folder: Path) -> dict[str, Any]:
    """The report of a run folder: ``ok``, operation counts, faults, anomalies."""
    config = orjson.loads((folder / "config.json").read_bytes())
    history = _history(folder / "history.jsonl")
    log = Log(_lines(folder / "log.jsonl"))
    server_path = folder / "server.json"
    server = orjson.loads(server_path.read_bytes()) if server_path.exists() else None
    subscribers = {p.stem: _lines(p) for p in sorted((folder / "subscribers").glob("*.jsonl"))}
    return check(config, history, log.events, subscribers, server,
                 server_errors(folder / "api.log"))


#: What the HTTP server logs for a request that failed unexpectedly (a 500, or an
#: exception after the response started).
_SERVER_ERROR_MARKS = ("Exception in ASGI application", "failed (correlation id")


def server_errors(api_log: Path) -> list[dict[str, Any]]:
    """The API's unexpected failures in its log: each mark with the exception that ends
    its traceback."""
    if not api_log.exists():
        return []
    errors: list[dict[str, Any]] = []
    with api_log.open(encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if any(mark in line for mark in _SERVER_ERROR_MARKS):
            ending = next((t for t in lines[i + 1:i + 400] if t and not t[0].isspace()
                           and not t.startswith(("Traceback", "During handling", "The above"))
                           and ("Error" in t or "Exception" in t or "Disconnect" in t)), "")
            errors.append({"line": i + 1, "log": line[:200], "exception": ending[:300]})
    return errors


def check(config: dict[str, Any], history: list[dict[str, Any]],
          events: list[dict[str, Any]], subscribers: dict[str, list[dict[str, Any]]],
          server: dict[str, Any] | None,
          api_errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    log = Log(events)
    found = Findings()
    for error in api_errors or []:
        found.add("server_error", **error)
    invokes = {h["op"]: h for h in history if h["type"] == "invoke"}
    completes = {h["op"]: h for h in history if h["type"] == "complete"}
    ops = [(invokes[op], completes.get(op)) for op in invokes]
    _check_versions(log, found)
    for invoke, complete in ops:
        if invoke["kind"] in WRITE_KINDS:
            _check_write(log, found, invoke, complete)
        for error in complete["errors"] if complete else []:
            if error.startswith("500 "):
                found.add("server_error", op=invoke["op"], kind=invoke["kind"],
                          answer=error[:300])
    _check_reads(log, found, ops)
    _check_explained(log, found, invokes)
    for name, received in subscribers.items():
        _check_subscriber(log, found, name, received)
    if server is None:
        found.add("harness", problem="server.json is missing: the run did not finish")
    else:
        _check_server(found, server)
    outcomes: Counter[str] = Counter()
    for invoke, complete in ops:
        outcomes[f"{invoke['kind']}:{complete['outcome'] if complete else 'unfinished'}"] += 1
    faults = [h for h in history if h["type"] == "fault" and h["phase"] == "start"]
    failed_faults = [h for h in history if h["type"] == "fault" and h.get("error")]
    acknowledged = sum(1 for i, c in ops if i["kind"] in WRITE_KINDS and c
                       and c["outcome"] == "ok")
    return {
        "ok": not found.counts,
        "seed": config["seed"],
        "duration": config["duration"],
        "clients": config["clients"],
        "operations": {
            "total": len(ops),
            "writes_acknowledged": acknowledged,
            "writes_rejected": sum(1 for i, c in ops if i["kind"] in WRITE_KINDS and c
                                   and c["outcome"] == "fail"),
            "writes_unknown": sum(1 for i, c in ops if i["kind"] in WRITE_KINDS
                                  and (c is None or c["outcome"] == "info")),
            "reads": sum(1 for i, c in ops if i["kind"] in READ_KINDS and c
                         and c["outcome"] != "info"),
            "retried": sum(1 for _, c in ops if c and c["attempts"] > 1),
            "by_kind": dict(sorted(outcomes.items())),
        },
        "events": len(log.events),
        "subscribers": {name: sum(1 for r in rs if "p" in r)
                        for name, rs in subscribers.items()},
        "faults": {"count": len(faults), "by_kind": dict(Counter(f["kind"] for f in faults)),
                   "failed": [{"kind": f["kind"], "error": f["error"]} for f in failed_faults],
                   "skipped": config.get("skipped_faults", []),
                   "timeline": [{"t": f["t"], "kind": f["kind"], "target": f["target"],
                                 "down": f["down"]} for f in faults]},
        "anomalies": found.as_dict(),
    }


def _check_versions(log: Log, found: Findings) -> None:
    for (ns, key), evs in log.by_key.items():
        versions = [e["v"] for e in evs]
        if versions != list(range(1, len(evs) + 1)):
            found.add("version_gap", ns=ns, key=key, versions=versions[:20])


def _items(invoke: dict[str, Any], answer: Any) -> list[tuple[dict[str, Any], Any]]:
    """(what was asked, what was answered) per event a write makes."""
    if invoke["kind"] == "batch":
        ops = invoke["body"]["operations"]
        answers = answer.get("operations", []) if isinstance(answer, dict) else []
        return list(zip(ops, answers + [None] * (len(ops) - len(answers)), strict=True))
    asked = {"op": invoke["kind"], "namespace": invoke["ns"], "key": invoke["key"],
             "if_match": invoke.get("if_match"), "body": invoke.get("body")}
    return [(asked, answer)]


def _check_write(log: Log, found: Findings, invoke: dict[str, Any],
                 complete: dict[str, Any] | None) -> None:
    idem = invoke["idempotency_key"]
    landed = log.by_idem.get(idem, [])
    outcome = complete["outcome"] if complete else "info"
    made = len(invoke["body"]["operations"]) if invoke["kind"] == "batch" else 1
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
        if (e["p"] != answer.get("position") or e["idem"] != idem
                or e["ns"] != asked["namespace"] or e["key"] != asked["key"]
                or (e["type"] != "entry.deleted" and e["doc"] != answer.get("document"))):
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


def _check_content(log: Log, found: Findings, invoke: dict[str, Any], e: dict[str, Any],
                   asked: dict[str, Any]) -> None:
    """The event is what ``asked`` asked for: the document sent, the patch applied to the
    version before, the content reverted to, a deletion."""
    kind = asked["op"]
    body: Any = asked.get("body")
    if invoke["kind"] == "batch":
        kind = {"put": "put", "patch": "merge_patch", "delete": "delete"}[asked["op"]]
        body = asked.get("document") if kind == "put" else asked.get("patch")
    merged = bool(e.get("resolution"))
    expected: Any = None
    problem = None
    if kind == "delete":
        if e["type"] != "entry.deleted":
            problem = f"a delete made {e['type']}"
        return _report(found, problem, invoke, e, None)
    if e["type"] == "entry.deleted":
        return _report(found, f"a {kind} made a deletion", invoke, e, None)
    # What the write makes of the version it was based on: the one before it, or (merged
    # under the namespace's policy) the If-Match version, its changes laid over the
    # versions since — so neither its change nor one made since is lost.
    resolution = e.get("resolution") or {}
    base = log.before(e)
    if merged:
        based_on = log.at.get((e["ns"], e["key"], resolution.get("base_version", -1)))
        base = based_on["doc"] if based_on and based_on["type"] != "entry.deleted" else None
    try:
        expected = _made_of(kind, body, base, log, e)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError,
            LookupError) as x:
        return _report(found, f"the write does not apply to the version it was based on: "
                       f"{type(x).__name__}: {x}", invoke, e, None)
    if merged:
        expected = _overlay(log.before(e), base, expected)
    if e["doc"] != expected:
        problem = ("the merge lost a change (the write's or one made since)" if merged
                   else "the document is not what was sent")
    _report(found, problem, invoke, e, expected)


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


def _overlay(theirs: Any, base: Any, ours: Any) -> Any:
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


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _check_reads(log: Log, found: Findings,
                 ops: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
    """Every read saw a state of the log; time-travel reads the log's state at their
    point; current reads every write acknowledged before they were sent, and no write
    sent after they completed."""
    acked, acked_by = _Newest(), _Newest()  # per entry, per entry and client
    invoked_at = {i["idempotency_key"]: i["t"] for i, _ in ops if i.get("idempotency_key")}
    for invoke, complete in ops:
        if invoke["kind"] in WRITE_KINDS and complete and complete["outcome"] == "ok":
            answer = complete["answer"]
            for item in (answer.get("operations") or [answer]) if isinstance(answer, dict) \
                    else []:
                if isinstance(item, dict) and "version" in item:
                    address = (item["namespace"], item["key"])
                    acked.add(address, complete["t"], item["version"])
                    acked_by.add((*address, invoke["client"]), complete["t"], item["version"])
    for invoke, complete in ops:
        if invoke["kind"] not in READ_KINDS or complete is None \
                or complete["outcome"] == "info":
            continue
        ns, key, kind = invoke["ns"], invoke["key"], invoke["kind"]
        where = {"op": invoke["op"], "kind": kind, "ns": ns, "key": key,
                 "params": invoke.get("params")}
        answer = complete["answer"] if isinstance(complete["answer"], dict) else {}
        seen: int | None = None  # version seen; 0 = absent
        gone = False
        if complete["outcome"] == "ok":
            e = log.at.get((ns, key, answer.get("version", -1)))
            if e is None or e["doc"] != answer.get("document") or e["p"] != answer.get(
                    "position") or e["type"] == "entry.deleted":
                found.add("phantom_read", **where, answer=answer)
                continue
            seen = e["v"]
            wrote = invoked_at.get(e["idem"]) if e["idem"] else None
            if wrote is not None and wrote > complete["t"]:
                found.add("read_from_future", **where, version=seen, write_sent_at=wrote,
                          read_completed_at=complete["t"])
        elif answer.get("code") == "entry_deleted":
            seen, gone = answer.get("deleted_version"), True
        elif answer.get("code") == "entry_not_found":
            seen = 0
        else:
            continue  # version_not_found and the like: nothing to compare
        params = invoke.get("params") or {}
        expected: dict[str, Any] | bool | None = True  # True: no time-travel point
        if kind == "read_version":  # a version not (yet) there is "not found": no claim
            wanted = log.at.get((ns, key, params["version"]))
            if (complete["outcome"] == "ok" and seen != params["version"]) or (gone and (
                    wanted is None or wanted["type"] != "entry.deleted")):
                found.add("wrong_time_travel", **where, seen=seen)
            continue
        if kind == "read_as_of":
            expected = log.last_at_or_before(ns, key, "epoch", _epoch(params["as_of"]))
        elif kind == "read_position":
            expected = log.last_at_or_before(ns, key, "p", params["position"])
        if expected is not True:
            want = expected["v"] if isinstance(expected, dict) else 0
            if seen != want:
                found.add("wrong_time_travel", **where, seen=seen, expected=want)
            continue
        if seen is None:
            continue
        newest = acked.before((ns, key), invoke["t"])
        if seen < newest:
            mine = acked_by.before((ns, key, invoke["client"]), invoke["t"])
            found.add("read_your_writes" if seen < mine else "stale_read", **where, seen=seen,
                      acknowledged_before=newest)


class _Newest:
    """The newest version acknowledged before a time, per address (bisected)."""

    def __init__(self) -> None:
        self._items: dict[tuple[Any, ...], list[tuple[float, int]]] = defaultdict(list)
        self._index: dict[tuple[Any, ...], tuple[list[float], list[int]]] = {}

    def add(self, address: tuple[Any, ...], t: float, version: int) -> None:
        self._items[address].append((t, version))
        self._index.pop(address, None)

    def before(self, address: tuple[Any, ...], t: float) -> int:
        """0 when nothing was acknowledged before ``t``."""
        if address not in self._index:
            items = sorted(self._items.get(address, []))
            newest, running = [], 0
            for _, version in items:
                running = max(running, version)
                newest.append(running)
            self._index[address] = ([t for t, _ in items], newest)
        times, newest = self._index[address]
        i = bisect.bisect_left(times, t)
        return newest[i - 1] if i else 0


def _check_explained(log: Log, found: Findings, invokes: dict[str, dict[str, Any]]) -> None:
    sent = {i["idempotency_key"] for i in invokes.values() if i.get("idempotency_key")}
    for e in log.events:
        if e["ns"] in CHAOS_NAMESPACES and e["idem"] not in sent:
            found.add("unexplained_event", position=e["p"], ns=e["ns"], key=e["key"],
                      version=e["v"], idempotency_key=e["idem"])


def _check_subscriber(log: Log, found: Findings, name: str,
                      received: list[dict[str, Any]]) -> None:
    """Every event of its filter exactly once, in position order, with no gap."""
    ns = name.removeprefix("nats-") if name.startswith("nats-") else None
    expected = [e["p"] for e in log.events if ns is None or e["ns"] == ns]
    got = [r for r in received if "p" in r]
    seen: set[int] = set()
    last = 0
    for r in got:
        p = r["p"]
        e = log.by_position.get(p)
        if e is None or e["id"] != r["id"] or (ns is not None and e["ns"] != ns):
            found.add("subscriber_phantom", subscriber=name, position=p, id=r["id"])
        if p in seen:
            found.add("subscriber_duplicate", subscriber=name, position=p, t=r["t"])
        elif p < last:
            found.add("subscriber_reorder", subscriber=name, position=p, after=last, t=r["t"])
        seen.add(p)
        last = max(last, p)
    missing = [p for p in expected if p not in seen]
    if missing:
        found.add("subscriber_gap", subscriber=name, missing=len(missing),
                  first_missing=missing[:10], received=len(got), expected=len(expected))


def _check_server(found: Findings, server: dict[str, Any]) -> None:
    if not server["views"]["consistent"]:
        found.add("views_drift", report=server["views"]["report"])
    if not server["verify"]["ok"]:
        found.add("integrity", report=server["verify"]["report"])
    stream = server["stream"]
    for kind in ("missing", "duplicated", "foreign"):
        if stream[kind]:
            found.add(f"stream_{kind}", positions=stream[kind][:20])
    caught = server.get("broadcaster_caught_up", {})
    if not caught.get("ok", False):
        found.add("not_caught_up", state=caught)


def summary(report: dict[str, Any]) -> str:
    """The human summary of a report."""
    ops = report["operations"]
    faults = report["faults"]
    lines = [
        f"seed {report['seed']}, {report['duration']:g} s, {report['clients']} clients",
        f"operations: {ops['total']} ({ops['writes_acknowledged']} writes acknowledged, "
        f"{ops['writes_rejected']} rejected, {ops['writes_unknown']} unknown outcome, "
        f"{ops['reads']} reads; {ops['retried']} retried)",
        f"log: {report['events']} events; subscribers received: "
        + ", ".join(f"{name} {n}" for name, n in report["subscribers"].items()),
        f"faults: {faults['count']} ("
        + ", ".join(f"{k} {n}" for k, n in sorted(faults["by_kind"].items())) + ")"
        + (f"; skipped: {', '.join(faults['skipped'])}" if faults["skipped"] else "")
        + (f"; {len(faults['failed'])} failed to inject" if faults["failed"] else ""),
    ]
    if report["ok"]:
        lines.append("no anomaly: every acknowledged write is in the log once, as sent; "
                     "nothing rejected landed; no lost update; every read saw a real "
                     "state; every subscriber saw every event once, in order; views "
                     "equal the log; the log verifies")
    else:
        lines.append("ANOMALIES:")
        for kind, item in report["anomalies"].items():
            lines.append(f"  {kind}: {item['count']}")
            for example in item["examples"][:3]:
                lines.append(f"    e.g. {orjson.dumps(example).decode()[:400]}")
    return "\n".join(lines)
