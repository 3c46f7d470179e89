"""The checker of ``ssot chaos``: proves a run's history against its log.

It reads a run folder (``config.json``, ``history.jsonl``, ``log.jsonl``,
``subscribers/*.jsonl``, ``server.json``; see ``runner``) and names every anomaly by
kind, with examples:

- ``lost_write``: an acknowledged write is not in the log (at the version and position
  its answer named); ``duplicate_write``: a write's idempotency key is on more events
  than the write made (at most once, also for writes whose outcome was never learned);
  ``partial_batch``: some of a batch's events landed and not all;
- ``ack_mismatch``: the log's event differs from the answer (position, key, document);
- ``content_mismatch``: the event is not what was sent (the document of a PUT, the patch
  applied to the version before, the reverted-to content, a deletion);
- a write answered ``unchanged`` made no event: the version it names must be in the log
  as answered (else ``ack_mismatch``) and already be what the write makes of it (else
  ``content_mismatch``), and an event under its key is a ``duplicate_write``;
- ``rejected_write_landed``: a write answered 4xx left an event;
- ``lost_update``: an accepted If-Match N write did not make version N+1 (or, merged
  under the namespace's ``merge`` policy, was not based on N); ``version_gap``: an
  entry's versions are not 1, 2, 3… in log order;
- ``phantom_read``: a read returned a state the log never held; ``stale_read``: a read
  missed a write acknowledged before it was sent (``read_your_writes`` when the same
  client made it); ``wrong_time_travel``: a read at a version, time or position returned
  another state than the log's at that point; ``read_from_future``: a read returned a
  write sent after the read completed; ``missed_min_position``: a read with a
  ``min_position`` returned a version of the entry older than its version at that
  position;
- ``unexplained_event``: an event in the run's namespaces that no client sent;
- ``schema_violated``: an event whose document violates the schema its namespace had at
  the event's position (the run sets one on ``chaos-strict``);
- ``subscriber_gap``, ``subscriber_duplicate``, ``subscriber_reorder``,
  ``subscriber_phantom``: what a subscriber received against the log;
- ``server_error``: a 500 a client received, or an unexpected failure the API logged
  (``api.log``: an exception it did not map to an answer);
- ``views_drift`` (``ssot check``), ``integrity`` (``ssot verify``), ``stream_*``
  (``ssot reconcile``: the JetStream stream against the log), ``not_caught_up`` (the
  broadcaster or a subscriber did not reach the head in time after the run);
- with identities (``identities.json``, ``access_log.jsonl``; see ``check_access``):
  ``forbidden_write_landed``, ``event_auth_mismatch``, ``forbidden_answered``,
  ``allowed_refused``, ``denial_not_logged``, ``access_record_mismatch``,
  ``access_record_contradicted``, ``access_log_broken``, ``access_log_unchecked``,
  ``access_setup_mismatch``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from nexus_ssot.ledger.addressing import SCHEMAS_NAMESPACE
from nexus_ssot.ledger.schemas.compiler import CompiledSchema, compile_schema
from nexus_ssot.ledger.schemas.records import NAMESPACE_PREFIX

from .check_access import check_access
from .check_reads import check_reads
from .check_writes import check_write
from .evidence import (
    CHAOS_NAMESPACES,
    READ_KINDS,
    WRITE_KINDS,
    Findings,
    Log,
    read_history,
    read_lines,
)


def check_run(folder: Path) -> dict[str, Any]:
    """The report of a run folder: ``ok``, operation counts, faults, anomalies."""
    config = orjson.loads((folder / "config.json").read_bytes())
    history = read_history(folder / "history.jsonl")
    log = Log(read_lines(folder / "log.jsonl"))
    server_path = folder / "server.json"
    server = orjson.loads(server_path.read_bytes()) if server_path.exists() else None
    subscribers = {p.stem: read_lines(p)
                   for p in sorted((folder / "subscribers").glob("*.jsonl"))}
    identities = folder / "identities.json"  # a run without identities has none
    access = orjson.loads(identities.read_bytes()) if identities.exists() else None
    api_errors = [e for path in sorted(folder.glob("api*.log")) for e in server_errors(path)]
    return check(config, history, log.events, subscribers, server, api_errors, access,
                 read_lines(folder / "access_log.jsonl"))


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
            errors.append({"file": api_log.name, "line": i + 1, "log": line[:200],
                           "exception": ending[:300]})
    return errors


def check(config: dict[str, Any], history: list[dict[str, Any]],
          events: list[dict[str, Any]], subscribers: dict[str, list[dict[str, Any]]],
          server: dict[str, Any] | None,
          api_errors: list[dict[str, Any]] | None = None,
          access: dict[str, Any] | None = None,
          access_log: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The report (see ``check_run``); ``access`` is the run's ``identities.json`` and
    ``access_log`` its access log, when it ran with identities."""
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
            check_write(log, found, invoke, complete)
        for error in complete["errors"] if complete else []:
            if error.startswith("500 "):
                found.add("server_error", op=invoke["op"], kind=invoke["kind"],
                          answer=error[:300])
    refused: set[str] = set()
    access_report = None
    if access is not None:
        faults = [h for h in history if h["type"] == "fault"]
        refused, access_report = check_access(access, access_log or [], log, ops, faults,
                                              server, found)
    # a read the policy refused answers 404 whatever the entry holds: no state to judge
    check_reads(log, found, [(i, c) for i, c in ops if i["op"] not in refused])
    _check_explained(log, found, invokes)
    _check_schemas(log, found)
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
        "think": config.get("think", 0.01),  # a run folder from before --think: 0.01
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
                                 "down": f["down"]} for f in faults],
                   "measured": [{"kind": h["kind"], **h["detail"]} for h in history
                                if h["type"] == "fault" and h.get("detail")]},
        **({"access": access_report} if access_report is not None else {}),
        "anomalies": found.as_dict(),
    }


def _check_versions(log: Log, found: Findings) -> None:
    for (ns, key), evs in log.by_key.items():
        versions = [e["v"] for e in evs]
        if versions != list(range(1, len(evs) + 1)):
            found.add("version_gap", ns=ns, key=key, versions=versions[:20])


def _check_explained(log: Log, found: Findings, invokes: dict[str, dict[str, Any]]) -> None:
    sent = {i["idempotency_key"] for i in invokes.values() if i.get("idempotency_key")}
    for e in log.events:
        if e["ns"] in CHAOS_NAMESPACES and e["idem"] not in sent:
            found.add("unexplained_event", position=e["p"], ns=e["ns"], key=e["key"],
                      version=e["v"], idempotency_key=e["idem"])


def _check_schemas(log: Log, found: Findings) -> None:
    """Every document in the run's namespaces conforms to the schema current at its
    position (schemas are events too: ``_schemas/namespaces/<ns>``)."""
    current: dict[str, CompiledSchema | None] = {}
    for e in log.events:
        if e["ns"] == SCHEMAS_NAMESPACE and e["key"].startswith(NAMESPACE_PREFIX):
            record = e["doc"]
            current[e["key"][len(NAMESPACE_PREFIX):]] = (
                None if not isinstance(record, dict) else
                compile_schema(record["schema"], {}, assert_formats=False))
        elif e["ns"] in CHAOS_NAMESPACES and e["type"] != "entry.deleted":
            schema = current.get(e["ns"])
            if schema is not None and not schema.conforms(e["doc"]):
                found.add("schema_violated", position=e["p"], ns=e["ns"], key=e["key"],
                          version=e["v"], violations=schema.violations(e["doc"])[:3])


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


def _seconds(value: Any) -> str:
    """A measured time (or the largest of several, by role) as ``1.23 s``."""
    if isinstance(value, dict):
        role = max(value, key=lambda k: value[k])
        return f"{value[role]:g} s ({role})"
    return f"{value:g} s"


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
    for item in faults.get("measured", []):  # the timings among what each fault noted
        timings = [f"{name.removesuffix('_s')} {_seconds(value)}"
                   for name, value in item.items() if name.endswith("_s")]
        if timings:
            lines.append(f"  {item['kind']}: " + ", ".join(timings))
    access = report.get("access")
    if access is not None:
        lines.append(
            "access: " + ", ".join(f"{name} {item['clients']}"
                                   for name, item in access["identities"].items())
            + f" clients; {access['attempts_refused']} attempts the policy refuses "
            f"({access['refusals_unanswered']} unanswered), {access['refusals_received']} "
            f"refusals received ({access['refusals_logged']} logged by correlation id, "
            f"{access['refusals_in_summaries']} in summaries"
            + (f", {access['refusals_lost_in_kill']} lost with a worker SIGKILLed before "
               "appending them" if access["refusals_lost_in_kill"] else "")
            + f"); {access['access_log_rows']} access log rows")
    if report["ok"]:
        lines.append("no anomaly: every acknowledged write is in the log once, as sent; "
                     "nothing rejected landed; no lost update; every read saw a real "
                     "state; every subscriber saw every event once, in order; views "
                     "equal the log; the log verifies"
                     + ("; every event was its actor's to make, every refusal is in the "
                        "access log" + (" (but those lost with a SIGKILLed worker, counted "
                                        "above)" if access["refusals_lost_in_kill"] else "")
                        + ", and its chain verifies" if access is not None else ""))
    else:
        lines.append("ANOMALIES:")
        for kind, item in report["anomalies"].items():
            lines.append(f"  {kind}: {item['count']}")
            for example in item["examples"][:3]:
                lines.append(f"    e.g. {orjson.dumps(example).decode()[:400]}")
    return "\n".join(lines)
