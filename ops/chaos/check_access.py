"""The access checks of ``ssot chaos``, for a run with identities (``identities.json``):
from the log, the access log (``access_log.jsonl``) and the history it proves

- ``forbidden_write_landed``: an event in the run's namespaces whose actor may not take
  its action on its key (``write``; ``delete`` for a deletion, ``restore`` for a revert),
  decided again with ``access.policy.PolicySet`` from the policy the harness set and the
  identities' token records — or whose actor is no identity of the run;
  ``event_auth_mismatch``: an event whose ``auth`` (how its actor authenticated) names a
  token that is not its actor's, or another method than its actor's;
- ``forbidden_answered``: an attempt the policy refuses answered 2xx (a write, or a read
  that showed what its caller may not see); ``allowed_refused``: an attempt the policy
  allows answered 403;
- ``denial_not_logged``: a refusal a client received (401, 403, or a 404 the policy
  explains) that the access log does not hold: no record with the attempt's correlation
  id, and no summary record left to stand for it (the flood bound's, of its reason,
  whose seconds overlap the attempt; or a full queue's); ``access_record_mismatch``: the
  record with its correlation id names another subject, status, action, namespace or
  key than the attempt; ``access_record_contradicted``: a denial recorded for an attempt
  that was answered 2xx;
- ``access_log_broken`` / ``access_log_unchecked``: ``ssot verify``'s check of the access
  log's chain (``integrity.verify``: each row's hash, seq without gaps, each link) found
  a problem / did not run;
- ``access_setup_mismatch``: the log's policy or token records are not what the harness
  recorded setting, so the decisions above would not be the server's.

A refusal whose answer never reached its client (the API killed or paused, a timeout:
outcome ``info``) may be missing from the access log: the client cannot tell it from an
attempt that never arrived. Every attempt's correlation id is its own
(``<run>-<op>.<attempt>``), so a record is matched to exactly the attempt it is about.

One loss is counted, not named an anomaly: each HTTP worker holds its records in memory
until it appends them (every 0.1 s; while PostgreSQL is away, until it is back and the
retry's backoff is over), so a SIGKILL of ``ssot serve`` loses the refusals it answered
just before (docs/integrity.md). A missing refusal answered at most ``KILL_WINDOW``
seconds before a ``kill_api`` fault (or since the start of a PostgreSQL outage that
ended at most ``APPEND_BACKOFF`` + ``KILL_WINDOW`` seconds before it) is reported under
``refusals_lost_in_kill``, with examples; one answered at any other time is
``denial_not_logged``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from nexus_ssot.access.identity import Identity
from nexus_ssot.access.policy import PolicySet
from nexus_ssot.access.records import AUTH_REASONS, DENY, POLICY, QUEUE_FULL

from .evidence import CHAOS_NAMESPACES, READ_KINDS, Findings, Log

#: The action each kind of operation takes (a batch: each of its operations').
ACTION_OF = {"create": "write", "put": "write", "merge_patch": "write", "json_patch": "write",
             "delete": "delete", "revert": "restore", **dict.fromkeys(READ_KINDS, "read")}
BATCH_ACTION = {"put": "write", "patch": "write", "delete": "delete"}
#: Seconds a record's time may stray from the attempt's (one machine, two clocks read).
SLACK = 1.0
#: Seconds before a SIGKILL of ``ssot serve`` in which a worker may have answered a refusal
#: it had not appended (0.1 s between appends, and a loaded machine's delays), and after
#: the fault began in which an answer sent before the signal landed may still arrive.
KILL_WINDOW, KILL_LATENCY = 2.0, 1.0
#: Longest wait between a worker's retries of an append while PostgreSQL was away
#: (access/log.py's MAX_BACKOFF).
APPEND_BACKOFF = 5.0
#: The faults that take PostgreSQL away (a pause: when its target is postgres).
PG_FAULTS = ("pg_fast", "pg_immediate")
ACCESS_NAMESPACE, POLICY_PREFIX, TOKEN_PREFIX = "_access", "policies/", "tokens/"


class Grants:
    """The run's identities, by subject, and the policy they are decided by."""

    def __init__(self, access: dict[str, Any]) -> None:
        self.policies = PolicySet({access["policy_name"]: access["policy"]})
        self.by_subject: dict[str, list[Identity]] = defaultdict(list)
        for item in access["identities"].values():
            self.by_subject[item["subject"]].append(Identity(
                subject=item["subject"], groups=frozenset(item.get("groups") or ()),
                method=item.get("method", "token"), token_id=item.get("id")))

    def authenticated(self, actor: str | None, auth: dict[str, Any] | None) -> bool:
        """Whether an event's ``auth`` is how its actor authenticates: one of its tokens,
        or (the administrator) the bootstrap token. Events without ``auth`` (written
        before it was recorded) pass."""
        if not auth:
            return True
        return any(identity.method == auth.get("method") and (
            identity.token_id is None or identity.token_id == auth.get("token_id"))
            for identity in self.by_subject.get(actor or "", ()))

    def allowed(self, subject: str | None, action: str, ns: str, key: str) -> bool:
        return any(self.policies.decide(identity, action, ns, key).allowed
                   for identity in self.by_subject.get(subject or "", ()))

    def refused(self, invoke: dict[str, Any]) -> tuple[str, str, str] | None:
        """The first (action, namespace, key) of an operation its subject may not take
        (a batch is refused at its first such operation), or None."""
        if invoke["kind"] == "batch":
            steps = [(BATCH_ACTION[o["op"]], o["namespace"], o["key"])
                     for o in invoke["body"]["operations"]]
        else:
            steps = [(ACTION_OF[invoke["kind"]], invoke["ns"], invoke["key"])]
        return next((s for s in steps if not self.allowed(invoke.get("subject"), *s)), None)


def check_access(access: dict[str, Any], records: list[dict[str, Any]], log: Log,
                 ops: list[tuple[dict[str, Any], dict[str, Any] | None]],
                 faults: list[dict[str, Any]], server: dict[str, Any] | None,
                 found: Findings) -> tuple[set[str], dict[str, Any]]:
    """The checks above (``faults``: the history's fault lines); returns the operations
    the policy refuses (their reads are not the read checks' business) and the counts for
    the report."""
    grants = Grants(access)
    _check_setup(access, log, found)
    events = _check_events(grants, log, found)
    refused_ops, stats = _check_refusals(grants, records, ops, kill_windows(faults), found)
    if server is not None and "access_log" in server:
        chain = server["access_log"]
        if chain["rows"] is None:
            found.add("access_log_unchecked", problem="ssot verify did not check the "
                      "access log (it did not reach the head, or there is none)")
        for problem in chain["problems"]:
            found.add("access_log_broken", **problem)
    clients = Counter(access.get("clients", {}).values())
    return refused_ops, {
        "identities": {name: {"subject": item["subject"], "clients": clients[name],
                              "grants": item.get("grants")}
                       for name, item in access["identities"].items()},
        "events_checked": events, **stats,
        "access_log_rows": server.get("access_log", {}).get("rows") if server else None,
    }


def _check_setup(access: dict[str, Any], log: Log, found: Findings) -> None:
    """The policies and tokens the log holds at the end are the ones recorded."""
    current: dict[str, Any] = {}
    for e in log.events:
        if e["ns"] == ACCESS_NAMESPACE:
            current[e["key"]] = None if e["type"] == "entry.deleted" else e["doc"]
    if not current:
        return  # evidence without the _access events (made up, or older)
    for key, doc in current.items():
        if key.startswith(POLICY_PREFIX) and doc is not None and (
                key != POLICY_PREFIX + access["policy_name"] or doc != access["policy"]):
            found.add("access_setup_mismatch", key=key,
                      problem="a policy in force that the harness did not record setting")
    for name, item in access["identities"].items():
        if item.get("id") is None:
            continue  # the bootstrap administrator has no token record
        doc = current.get(TOKEN_PREFIX + item["id"])
        if doc is None or doc.get("subject") != item["subject"] or sorted(
                doc.get("groups") or ()) != sorted(item.get("groups") or ()):
            found.add("access_setup_mismatch", identity=name, token_id=item["id"],
                      problem="the token record is missing or names another subject or "
                              "other groups")


def _check_events(grants: Grants, log: Log, found: Findings) -> int:
    """Every event in the run's namespaces was its actor's to make."""
    checked = 0
    for e in log.events:
        if e["ns"] not in CHAOS_NAMESPACES:
            continue
        checked += 1
        action = {"entry.deleted": "delete", "entry.restored": "restore"}.get(e["type"],
                                                                             "write")
        where = {"position": e["p"], "ns": e["ns"], "key": e["key"], "version": e["v"],
                 "type": e["type"], "actor": e.get("actor"), "action": action,
                 "idempotency_key": e["idem"], "correlation_id": e.get("corr")}
        if not grants.allowed(e.get("actor"), action, e["ns"], e["key"]):
            found.add("forbidden_write_landed", **where)
        if not grants.authenticated(e.get("actor"), e.get("auth")):
            found.add("event_auth_mismatch", **where, auth=e.get("auth"))
    return checked


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class _Summaries:
    """The access log's summary records, each standing for ``suppressed`` records of its
    decision and reason (any source: the clients' address is the server's to tell)
    between its ``from`` and ``to``; each covers at most that many refusals."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.items = [{"reason": r["reason"], "left": int(r.get("suppressed") or 0),
                       "from": _epoch(r["from"]) - SLACK, "to": _epoch(r["to"]) + SLACK}
                      for r in records if r.get("decision") == DENY]

    def cover(self, reasons: tuple[str, ...], start: float | None, end: float | None) -> bool:
        for item in self.items:
            if item["left"] > 0 and item["reason"] in (*reasons, QUEUE_FULL) and (
                    start is None or end is None
                    or (item["from"] <= end and item["to"] >= start)):
                item["left"] -= 1
                return True
        return False


def kill_windows(faults: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The times (the runner's ``t``) in which an answered refusal may have died with a
    worker SIGKILLed before appending it: before each ``kill_api`` fault, reaching back to
    the start of a PostgreSQL outage its worker may still have been waiting out."""
    outages: list[tuple[float, float]] = []
    began: dict[tuple[str, str], float] = {}
    for f in faults:
        if f["kind"] in PG_FAULTS or (f["kind"] == "pause" and f["target"] == "postgres"):
            if f["phase"] == "start":
                began[(f["kind"], f["target"])] = f["t"]
            elif (f["kind"], f["target"]) in began:
                outages.append((began.pop((f["kind"], f["target"])), f["t"]))
    windows = []
    for f in faults:
        if f["kind"] == "kill_api" and f["phase"] == "start":
            kill = f["t"]
            start = min([kill - KILL_WINDOW] + [
                s for s, e in outages if kill - APPEND_BACKOFF - KILL_WINDOW <= e <= kill])
            windows.append((start, kill + KILL_LATENCY))
    return windows


def _check_refusals(grants: Grants, rows: list[dict[str, Any]],
                    ops: list[tuple[dict[str, Any], dict[str, Any] | None]],
                    windows: list[tuple[float, float]],
                    found: Findings) -> tuple[set[str], dict[str, Any]]:
    """Each refusal a client received is in the access log; the answers agree with the
    policy."""
    by_cid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    summaries = []
    for row in rows:
        record = row["record"]
        if record.get("summary"):
            summaries.append(record)
        elif record.get("decision") == DENY and record.get("correlation_id"):
            by_cid[record["correlation_id"]].append(record)
    refused_ops: set[str] = set()
    unanswered = logged = 0
    missing: list[tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]] = []
    for invoke, complete in ops:
        refused = grants.refused(invoke)
        if refused is not None:
            refused_ops.add(invoke["op"])
        if complete is None or complete["outcome"] == "info":
            unanswered += refused is not None
            continue
        status, cid = complete["status"], complete.get("correlation_id") or ""
        recorded = by_cid.get(cid, [])
        where = {"op": invoke["op"], "kind": invoke["kind"], "subject": invoke.get("subject"),
                 "ns": invoke["ns"], "key": invoke["key"], "status": status,
                 "correlation_id": cid}
        if 200 <= status < 300:
            if refused is not None:
                found.add("forbidden_answered", **where, refused=refused)
            if recorded:
                found.add("access_record_contradicted", **where, record=recorded[0])
            continue
        if status == 403 and refused is None:
            found.add("allowed_refused", **where, answer=complete["answer"])
        if not (status in (401, 403) or (status == 404 and refused is not None)):
            continue
        if not recorded:
            missing.append((invoke, complete, AUTH_REASONS if status == 401 else (POLICY,)))
            continue
        logged += 1
        expected = {"status": status}
        if status != 401:
            expected["subject"] = invoke.get("subject")
            if refused is not None:
                expected.update(zip(("action", "namespace", "key"), refused, strict=True))
        if not any(all(r.get(k) == v for k, v in expected.items()) for r in recorded):
            found.add("access_record_mismatch", **where, expected=expected,
                      recorded=recorded[0])
    covered = 0
    cover = _Summaries(summaries)
    lost: list[dict[str, Any]] = []
    for invoke, complete, reasons in sorted(missing, key=lambda m: m[0].get("wall") or 0):
        if cover.cover(reasons, invoke.get("wall"), complete.get("wall")):
            covered += 1
            continue
        example = {"op": invoke["op"], "kind": invoke["kind"],
                   "subject": invoke.get("subject"), "ns": invoke["ns"], "key": invoke["key"],
                   "status": complete["status"],
                   "correlation_id": complete.get("correlation_id"), "t": complete["t"]}
        if any(lo <= complete["t"] <= hi for lo, hi in windows):
            lost.append(example)
        else:
            found.add("denial_not_logged", **example)
    return refused_ops, {"attempts_refused": len(refused_ops),
                         "refusals_received": logged + len(missing),
                         "refusals_logged": logged, "refusals_in_summaries": covered,
                         "refusals_lost_in_kill": len(lost), "lost_in_kill": lost[:5],
                         "refusals_unanswered": unanswered}
