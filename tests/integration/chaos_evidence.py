"""Made-up evidence for the chaos checker's tests: a clean run (history, log, subscriber
feeds, server checks) to plant anomalies in, the same with identities (the policy, an
access log), and its report's anomalies."""

from __future__ import annotations

from typing import Any

from nexus_ssot.ops.chaos.check_access import ACTION_OF
from nexus_ssot.ops.chaos.checker import check
from nexus_ssot.ops.chaos.identities import policy

D1, D2, D3 = {"n": 1}, {"n": 2}, {"n": 3}


def log_event(p: int, ns: str, key: str, v: int, doc: Any, idem: str,
              kind: str = "entry.updated") -> dict[str, Any]:
    return {"p": p, "ns": ns, "key": key, "v": v, "type": kind if v > 1 else "entry.created",
            "id": f"id-{p}", "idem": idem, "doc": doc, "resolution": None,
            "at": "2026-11-27T12:00:00+00:00", "epoch": 1_000.0 + p}


def answer_entry(ns: str, key: str, v: int, p: int, doc: Any) -> dict[str, Any]:
    return {"namespace": ns, "key": key, "version": v, "position": p, "document": doc}


def op_lines(t: float, op: str, kind: str, ns: str, key: str, outcome: str, answer: Any,
             body: Any = None, if_match: int | None = None, status: int = 200,
             params: Any = None) -> list[dict[str, Any]]:
    """An invocation at ``t`` and its completion half a second later."""
    write = kind not in ("read", "read_version", "read_as_of", "read_position",
                         "read_written")
    return [
        {"type": "invoke", "t": t, "op": op, "client": 0, "kind": kind, "ns": ns, "key": key,
         "body": body, "if_match": if_match, "params": params,
         "idempotency_key": f"run-{op}" if write else None},
        {"type": "complete", "t": t + 0.5, "op": op, "client": 0, "outcome": outcome,
         "status": status, "answer": answer, "attempts": 1, "errors": []},
    ]


def clean_run() -> dict[str, Any]:
    """Writes, a rejected create, reads and a batch by client 0, all as the log has them."""
    s, m = "chaos-strict", "chaos-merge"
    history = [
        *op_lines(1, "c0-1", "put", s, "k1", "ok", answer_entry(s, "k1", 1, 2, D1), body=D1),
        *op_lines(2, "c0-2", "put", s, "k1", "ok", answer_entry(s, "k1", 2, 3, D2), body=D2,
                  if_match=1),
        *op_lines(3, "c0-3", "create", s, "k1", "fail", {"code": "entry_exists"}, body=D3,
                  status=412),
        *op_lines(4, "c0-4", "read", s, "k1", "ok", answer_entry(s, "k1", 2, 3, D2)),
        *op_lines(5, "c0-5", "merge_patch", m, "k2", "ok",
                  answer_entry(m, "k2", 1, 4, {"a": 1}), body={"a": 1}),
        *op_lines(6, "c0-6", "batch", "", "", "ok",
                  {"operations": [answer_entry(m, "k3", 1, 5, D3)]},
                  body={"operations": [{"op": "put", "namespace": m, "key": "k3",
                                        "document": D3}]}),
        *op_lines(7, "c0-7", "read_position", s, "k1", "ok",
                  answer_entry(s, "k1", 1, 2, D1), params={"position": 2}),
        *op_lines(8, "c0-8", "read_written", s, "k1", "ok",
                  answer_entry(s, "k1", 2, 3, D2), params={"min_position": 3}),
    ]
    log = [log_event(1, "_namespaces", s, 1, {"conflict_policy": "strict"}, "setup"),
           log_event(2, s, "k1", 1, D1, "run-c0-1"), log_event(3, s, "k1", 2, D2, "run-c0-2"),
           log_event(4, m, "k2", 1, {"a": 1}, "run-c0-5"),
           log_event(5, m, "k3", 1, D3, "run-c0-6")]

    def feed(*positions: int) -> list[dict[str, Any]]:
        return [{"p": p, "id": f"id-{p}", "t": float(p)} for p in positions]

    subscribers = {"nats-chaos-strict": feed(2, 3), "nats-chaos-merge": feed(4, 5),
                   "sse": feed(1, 2, 3, 4, 5)}
    server = {"views": {"consistent": True, "report": {}},
              "verify": {"ok": True, "report": {}},
              "stream": {"missing": [], "duplicated": [], "foreign": []},
              "broadcaster_caught_up": {"ok": True}}
    return {"history": history, "log": log, "subscribers": subscribers, "server": server}


def with_an_unchanged_write(to_version: int = 2, position: int = 3) -> dict[str, Any]:
    """The clean run, and a revert of chaos-strict/k1 to ``to_version`` answered unchanged
    at version 2 (``position``): it appended nothing."""
    run = clean_run()
    s = "chaos-strict"
    answer = {**answer_entry(s, "k1", 2, position, D2), "unchanged": True}
    run["history"] += op_lines(8, "c0-8", "revert", s, "k1", "ok", answer,
                               body={"to_version": to_version})
    return run


def anomalies_of(run: dict[str, Any]) -> dict[str, Any]:
    """The checker's anomalies of ``run`` (with its ``access`` and ``access_log``, if any)."""
    report = check({"seed": 1, "duration": 1, "clients": 1}, run["history"], run["log"],
                   run["subscribers"], run["server"], None, run.get("access"),
                   run.get("access_log"))
    assert report["ok"] == (not report["anomalies"])
    anomalies: dict[str, Any] = report["anomalies"]
    return anomalies


def history_line(run: dict[str, Any], op: str, kind: str) -> dict[str, Any]:
    line: dict[str, Any] = next(h for h in run["history"] if h["op"] == op and h["type"] == kind)
    return line


# --- with identities -------------------------------------------------------------


def refused_op(run: dict[str, Any], t: float, op: str, subject: str, kind: str, ns: str,
               key: str, status: int, recorded: bool = True) -> None:
    """An attempt of ``subject`` answered ``status``, with its access log record."""
    answer = {"code": "forbidden" if status == 403 else "entry_not_found"}
    lines = op_lines(t, op, kind, ns, key, "fail", answer, body=D3, status=status)
    identify(lines, subject)
    run["history"] += lines
    if recorded:
        run["access_log"].append({"seq": len(run["access_log"]) + 1, "record": {
            "decision": "deny", "status": status, "reason": "policy", "subject": subject,
            "action": ACTION_OF[kind], "namespace": ns, "key": key,
            "correlation_id": f"run-{op}.1", "source": "127.0.0.1"}})


def identify(lines: list[dict[str, Any]], subject: str) -> None:
    """History lines as the clients write them with identities: the subject of each
    invocation, the correlation id of each answer, wall times."""
    for line in lines:
        line["wall"] = 1_000.0 + line["t"]
        if line["type"] == "invoke":
            line["subject"] = subject
        else:
            line["correlation_id"] = f"run-{line['op']}.1"


def with_identities() -> dict[str, Any]:
    """The clean run by the admin, plus a reader's write refused (403) and writer-a's
    read of a locked key the admin wrote (404), each in the access log."""
    run = clean_run()
    identify(run["history"], "admin")
    s = "chaos-strict"
    run["history"] += op_lines(8, "c0-8", "put", s, "locked/k0", "ok",
                               answer_entry(s, "locked/k0", 1, 6, D1), body=D1)
    identify(run["history"][-2:], "admin")
    run["log"].append(log_event(6, s, "locked/k0", 1, D1, "run-c0-8"))
    for name in ("nats-chaos-strict", "sse"):
        run["subscribers"][name].append({"p": 6, "id": "id-6", "t": 6.0})
    for e in run["log"]:
        e["actor"] = "admin"
    run["access"] = {"policy_name": "chaos", "policy": policy(), "clients": {"0": "admin"},
                     "identities": {
                         "admin": {"subject": "admin", "groups": ["admins"], "id": None,
                                   "method": "bootstrap"},
                         "writer-a": {"subject": "writer-a", "groups": [], "id": "a" * 16,
                                      "method": "token"},
                         "reader": {"subject": "reader", "groups": [], "id": "b" * 16,
                                    "method": "token"}}}
    run["access_log"] = []
    run["server"] = {**run["server"], "access_log": {"rows": 2, "problems": []}}
    refused_op(run, 9, "c0-9", "reader", "put", s, "k1", 403)
    refused_op(run, 10, "c0-10", "writer-a", "read", s, "locked/k0", 404)
    return run


def fault_line(t: float, phase: str, kind: str, target: str) -> dict[str, Any]:
    """A fault's start or end in the history."""
    return {"type": "fault", "t": t, "phase": phase, "kind": kind, "target": target,
            "down": 1.0}
