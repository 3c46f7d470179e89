"""The correctness harness: a real run with every kind of fault ends with no anomaly, and
its checker names every kind of anomaly planted in a history, log or subscriber feed."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from nexus_ssot.ops.chaos.check_access import ACTION_OF, Grants
from nexus_ssot.ops.chaos.checker import check, server_errors
from nexus_ssot.ops.chaos.identities import ROLES, assign, policy
from nexus_ssot.ops.chaos.nemesis import KINDS, schedule
from nexus_ssot.ops.chaos.subscribers import stop_tasks
from tests.integration.chaos_evidence import (
    D1,
    D2,
    D3,
    anomalies_of,
    answer_entry,
    clean_run,
    fault_line,
    history_line,
    log_event,
    op_lines,
    refused_op,
    with_an_unchanged_write,
    with_identities,
)
from tests.integration.conftest import ADMIN_TOKEN, AUTH, wait_until

SEED = 20261127


@pytest.mark.slow
@pytest.mark.e2e
def test_chaos_with_every_fault_loses_nothing(tmp_path: Path) -> None:
    """45 s of 16 clients under every kind of fault, once each (``make chaos`` runs
    longer: ten minutes by default). Each client waits up to 0.2 s between two operations
    (``make chaos``: 0.01): ~5,400 operations instead of ~21,000, for half the CPU (27
    s instead of 56) of a run that shares the machine with the rest of the suite."""
    run = tmp_path / "run"
    # Embedded servers whatever the suite was given: PostgreSQL and NATS faults need
    # servers the harness controls.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSOT_")}
    done = subprocess.run(
        [sys.executable, "-m", "nexus_ssot.ops.cli", "chaos", "--duration", "45",
         "--clients", "16", "--think", "0.2", "--seed", str(SEED), "--dir", str(run)],
        env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    report = orjson.loads((run / "report.json").read_bytes())
    assert report["ok"] and report["anomalies"] == {}
    assert set(report["faults"]["by_kind"]) == set(KINDS)
    assert report["faults"]["failed"] == []
    # Floors, not rates: how much a run holds depends on the machine's load; the run
    # must have done enough under every fault for "no anomaly" to mean something. (A quiet
    # machine acknowledges several hundred writes; one loaded ten times over, 97.)
    assert report["operations"]["writes_acknowledged"] > 40
    assert report["operations"]["reads"] > 40
    assert all(n == report["events"] for name, n in report["subscribers"].items()
               if name == "sse")
    # every identity had clients; their refusals were tried, received and logged
    access = report["access"]
    assert all(item["clients"] for item in access["identities"].values())
    assert access["refusals_received"] > 10 and access["events_checked"] > 40
    assert "no anomaly" in done.stdout
    again = subprocess.run([sys.executable, "-m", "nexus_ssot.ops.cli", "chaos", "check",
                            str(run)], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_seed_gives_the_same_schedule_with_every_kind_of_fault() -> None:
    first, second = schedule(7, 60.0), schedule(7, 60.0)
    assert first == second
    assert {f.kind for f in first} == set(KINDS)
    assert all(3.0 <= f.at <= 54.0 for f in first)
    assert [f.at for f in first] == sorted(f.at for f in first)
    assert schedule(8, 60.0) != first


# --- the checker against planted anomalies ------------------------------------------

def test_the_checker_passes_a_clean_history() -> None:
    assert anomalies_of(clean_run()) == {}


def test_an_acknowledged_write_missing_from_the_log_is_a_lost_write() -> None:
    run = clean_run()
    run["log"] = [e for e in run["log"] if e["p"] != 3]
    assert "lost_write" in anomalies_of(run)


def test_a_write_in_the_log_twice_is_a_duplicate() -> None:
    run = clean_run()
    run["log"].append(log_event(6, "chaos-strict", "k1", 3, D2, "run-c0-2"))
    assert "duplicate_write" in anomalies_of(run)


def test_a_rejected_write_that_left_an_event_is_named() -> None:
    run = clean_run()
    run["log"].append(log_event(6, "chaos-strict", "k1", 3, D3, "run-c0-3"))
    assert "rejected_write_landed" in anomalies_of(run)


def test_an_if_match_write_not_made_on_the_version_before_is_a_lost_update() -> None:
    run = clean_run()
    history_line(run, "c0-2", "invoke")["if_match"] = 2
    assert "lost_update" in anomalies_of(run)


def test_an_event_unlike_what_was_sent_is_a_content_mismatch() -> None:
    run = clean_run()
    run["log"][3]["doc"] = {"a": 2}
    history_line(run, "c0-5", "complete")["answer"]["document"] = {"a": 2}
    assert "content_mismatch" in anomalies_of(run)


def test_an_event_violating_the_schema_current_at_its_position_is_named() -> None:
    def with_schema(schema: Any) -> dict[str, Any]:
        run = clean_run()
        run["log"].insert(0, log_event(0, "_schemas", "namespaces/chaos-strict", 1, {
            "schema": schema, "definitions": {}, "allow_existing_violations": False},
            "setup-schema"))
        run["subscribers"]["sse"].insert(0, {"p": 0, "id": "id-0", "t": 0.0})
        return run

    assert anomalies_of(with_schema({"type": "object"})) == {}
    assert set(anomalies_of(with_schema({"not": {"const": D2}}))) == {"schema_violated"}


def test_a_read_of_a_state_the_log_never_held_is_a_phantom() -> None:
    run = clean_run()
    history_line(run, "c0-4", "complete")["answer"]["document"] = {"never": True}
    assert "phantom_read" in anomalies_of(run)


def test_a_read_missing_an_acknowledged_write_is_stale() -> None:
    run = clean_run()
    history_line(run, "c0-4", "complete")["answer"] = answer_entry("chaos-strict", "k1", 1, 2, D1)
    assert "read_your_writes" in anomalies_of(run)


def test_a_read_at_a_position_returning_another_state_is_wrong_time_travel() -> None:
    run = clean_run()
    history_line(run, "c0-7", "invoke")["params"] = {"position": 3}
    assert "wrong_time_travel" in anomalies_of(run)


def test_a_read_missing_the_state_at_its_min_position_is_named() -> None:
    """Sent before the write it names was acknowledged (so no stale read), the read
    still had to include the position it asked for."""
    run = clean_run()
    run["history"] += op_lines(2.2, "c0-9", "read_written", "chaos-strict", "k1", "ok",
                               answer_entry("chaos-strict", "k1", 1, 2, D1),
                               params={"min_position": 3})
    assert set(anomalies_of(run)) == {"missed_min_position"}
    history_line(run, "c0-9", "invoke")["params"] = {"min_position": 2}  # v1's position
    assert anomalies_of(run) == {}


def test_an_event_no_client_sent_is_unexplained() -> None:
    run = clean_run()
    run["log"].append(log_event(6, "chaos-merge", "k9", 1, D1, "nobody"))
    run["subscribers"]["sse"].append({"p": 6, "id": "id-6", "t": 6.0})
    run["subscribers"]["nats-chaos-merge"].append({"p": 6, "id": "id-6", "t": 6.0})
    assert set(anomalies_of(run)) == {"unexplained_event"}


@pytest.mark.parametrize(("feed", "kind"), [
    ([2], "subscriber_gap"),
    ([2, 3, 3], "subscriber_duplicate"),
    ([3, 2], "subscriber_reorder"),
    ([2, 3, 4], "subscriber_phantom"),
])
def test_what_a_subscriber_received_is_held_against_the_log(feed: list[int],
                                                             kind: str) -> None:
    run = clean_run()
    run["subscribers"]["nats-chaos-strict"] = [{"p": p, "id": f"id-{p}", "t": 1.0}
                                               for p in feed]
    assert set(anomalies_of(run)) == {kind}


def test_server_side_checks_that_fail_are_anomalies() -> None:
    run = clean_run()
    server = copy.deepcopy(run["server"])
    server["views"]["consistent"] = False
    server["verify"]["ok"] = False
    server["stream"]["duplicated"] = [3]
    server["broadcaster_caught_up"] = {"ok": False}
    run["server"] = server
    assert set(anomalies_of(run)) == {"views_drift", "integrity", "stream_duplicated",
                                       "not_caught_up"}


def _with_a_merge(merged_document: dict[str, Any]) -> dict[str, Any]:
    """The clean run, plus: k2 replaced (v2), then a merge patch on If-Match 1 merged
    over it (v3)."""
    run = clean_run()
    m = "chaos-merge"
    run["history"] += [
        *op_lines(8, "c0-8", "put", m, "k2", "ok",
                  answer_entry(m, "k2", 2, 6, {"a": 1, "b": 2}), body={"a": 1, "b": 2}),
        *op_lines(9, "c0-9", "merge_patch", m, "k2", "ok",
                  answer_entry(m, "k2", 3, 7, merged_document), body={"c": 3}, if_match=1),
    ]
    merge = log_event(7, m, "k2", 3, merged_document, "run-c0-9", "entry.patched")
    merge["resolution"] = {"policy": "merge", "base_version": 1, "rebased_over": [2]}
    run["log"] += [log_event(6, m, "k2", 2, {"a": 1, "b": 2}, "run-c0-8"), merge]
    for name in ("nats-chaos-merge", "sse"):
        run["subscribers"][name] += [{"p": p, "id": f"id-{p}", "t": float(p)} for p in (6, 7)]
    return run


def test_a_merge_that_keeps_both_changes_passes_and_one_that_drops_one_is_named() -> None:
    assert anomalies_of(_with_a_merge({"a": 1, "b": 2, "c": 3})) == {}
    lost_theirs = anomalies_of(_with_a_merge({"a": 1, "c": 3}))
    assert set(lost_theirs) == {"content_mismatch"}
    assert "merge lost a change" in lost_theirs["content_mismatch"]["examples"][0]["problem"]
    assert set(anomalies_of(_with_a_merge({"a": 1, "b": 2}))) == {"content_mismatch"}


def test_a_write_answered_unchanged_appended_nothing_and_was_one_indeed() -> None:
    assert anomalies_of(with_an_unchanged_write()) == {}
    would_change = anomalies_of(with_an_unchanged_write(to_version=1))
    assert set(would_change) == {"content_mismatch"}
    assert "would have changed" in would_change["content_mismatch"]["examples"][0]["problem"]
    assert set(anomalies_of(with_an_unchanged_write(position=2))) == {"ack_mismatch"}
    landed = with_an_unchanged_write()
    landed["log"].append(log_event(6, "chaos-strict", "k1", 3, D2, "run-c0-8"))
    assert "duplicate_write" in anomalies_of(landed)


# --- the access checks: identities, refusals, the access log ------------------------


def test_the_access_checks_pass_a_run_whose_refusals_are_all_logged() -> None:
    run = with_identities()
    assert anomalies_of(run) == {}  # writer-a's 404 is no stale read: the policy hid it
    report = check({"seed": 1, "duration": 1, "clients": 1}, run["history"], run["log"],
                   run["subscribers"], run["server"], None, run["access"], run["access_log"])
    assert report["access"]["attempts_refused"] == 2
    assert report["access"]["refusals_logged"] == 2


def test_a_write_by_an_identity_lacking_permission_that_landed_is_named() -> None:
    run = with_identities()
    s = "chaos-strict"
    run["log"].append(log_event(7, s, "k1", 3, D3, "run-c0-9"))  # the refused write landed
    run["log"][-1]["actor"] = "reader"
    for name in ("nats-chaos-strict", "sse"):
        run["subscribers"][name].append({"p": 7, "id": "id-7", "t": 7.0})
    found = anomalies_of(run)
    assert set(found) == {"forbidden_write_landed", "rejected_write_landed"}
    assert found["forbidden_write_landed"]["examples"][0]["actor"] == "reader"
    run["log"][-1]["actor"] = "writer-a"  # allowed on k1: only the rejection remains
    assert set(anomalies_of(run)) == {"rejected_write_landed"}
    run["log"][-1].update(actor="writer-a", key="locked/k0", v=2)  # not on locked keys
    assert "forbidden_write_landed" in anomalies_of(run)


def test_an_event_whose_auth_is_not_its_actors_is_named() -> None:
    run = with_identities()
    run["log"][-1]["auth"] = {"method": "bootstrap", "token_id": "bootstrap-1"}
    assert anomalies_of(run) == {}  # the admin's own: the bootstrap token
    run["log"][-1]["auth"] = {"method": "token", "token_id": "b" * 16}  # the reader's token
    found = anomalies_of(run)
    assert set(found) == {"event_auth_mismatch"}
    assert found["event_auth_mismatch"]["examples"][0]["actor"] == "admin"


def test_a_forbidden_attempt_answered_2xx_and_an_allowed_one_refused_are_named() -> None:
    run = with_identities()
    history_line(run, "c0-10", "complete").update(
        outcome="ok", status=200, answer=answer_entry("chaos-strict", "locked/k0", 1, 6, D1))
    assert set(anomalies_of(run)) == {"forbidden_answered", "access_record_contradicted"}
    run = with_identities()
    refused_op(run, 11, "c0-11", "writer-a", "put", "chaos-strict", "k1", 403)
    assert set(anomalies_of(run)) == {"allowed_refused"}


def test_a_denial_missing_from_the_access_log_is_named() -> None:
    run = with_identities()
    run["access_log"] = run["access_log"][:1]  # writer-a's 404 is not in the log
    found = anomalies_of(run)
    assert set(found) == {"denial_not_logged"}
    assert found["denial_not_logged"]["examples"][0]["correlation_id"] == "run-c0-10.1"
    # the flood bound's summary of its second stands for it; one of another time does not
    summary = {"summary": True, "suppressed": 1, "decision": "deny", "source": "127.0.0.1",
               "reason": "policy", "from": "1970-01-01T00:16:50Z",
               "to": "1970-01-01T00:16:50.6Z"}
    run["access_log"].append({"seq": 2, "record": summary})
    assert anomalies_of(run) == {}
    summary.update({"from": "1970-01-01T00:20:00Z", "to": "1970-01-01T00:20:01Z"})
    assert set(anomalies_of(run)) == {"denial_not_logged"}
    # a refusal whose answer never came may be missing
    history_line(run, "c0-10", "complete").update(outcome="info", status=None, answer=None)
    assert anomalies_of(run) == {}


def test_a_denial_lost_with_a_killed_worker_is_counted_and_no_other() -> None:
    # Each worker appends its records every 0.1 s (later while PostgreSQL is away): a
    # SIGKILL of ssot serve loses the refusals it answered just before.
    run = with_identities()
    run["access_log"] = run["access_log"][:1]  # writer-a's 404 (answered at t 10.5)
    run["history"] += [fault_line(11.0, "start", "kill_api", "api"),
                       fault_line(12.0, "end", "kill_api", "api")]
    report = check({"seed": 1, "duration": 1, "clients": 1}, run["history"], run["log"],
                   run["subscribers"], run["server"], None, run["access"], run["access_log"])
    assert report["anomalies"] == {}
    assert report["access"]["refusals_lost_in_kill"] == 1
    assert report["access"]["lost_in_kill"][0]["correlation_id"] == "run-c0-10.1"
    for line in run["history"][-2:]:
        line["t"] += 4.0  # a kill 4.5 s after the answer: that is no excuse
    assert set(anomalies_of(run)) == {"denial_not_logged"}
    # unless PostgreSQL was away since before the answer, and back shortly before
    run["history"] += [fault_line(9.0, "start", "pg_immediate", "postgres"),
                       fault_line(10.0, "end", "pg_immediate", "postgres")]
    assert anomalies_of(run) == {}


def test_an_access_record_of_another_attempt_or_a_broken_chain_is_named() -> None:
    run = with_identities()
    run["access_log"][0]["record"]["subject"] = "writer-a"
    assert set(anomalies_of(run)) == {"access_record_mismatch"}
    run = with_identities()
    run["server"]["access_log"] = {"rows": 2, "problems": [
        {"kind": "access_chain_broken", "seq": 2, "detail": "a link"}]}
    assert set(anomalies_of(run)) == {"access_log_broken"}
    run["server"]["access_log"] = {"rows": None, "problems": []}
    assert set(anomalies_of(run)) == {"access_log_unchecked"}


def test_a_seed_gives_the_clients_the_same_identities_and_the_policy_refuses_their_tries(
        ) -> None:
    assert assign(7, 16) == assign(7, 16) and set(assign(7, 16)) == set(ROLES)
    assert assign(7, 2) == assign(7, 2) and len(assign(7, 2)) == 2
    access = {"policy_name": "chaos", "policy": policy(), "identities": {
        name: {"subject": name, "groups": ["admins"] if name == "admin" else []}
        for name in ROLES}}
    grants = Grants(access)
    for name, role in ROLES.items():
        for ns in role.namespaces:  # what each does is allowed, what it tries is not
            assert all(grants.allowed(name, ACTION_OF[op], ns, "k000") for op in role.ops
                       if op != "batch")
        assert grants.allowed(name, "write", "chaos-strict", "locked/k000") == role.locked
    assert not grants.allowed("reader", "write", "chaos-merge", "k000")
    assert not grants.allowed("narrow", "write", "chaos-strict", "k000")
    assert not grants.allowed("narrow", "delete", "chaos-merge", "k000")
    assert not grants.allowed("narrow", "read", "chaos-merge", "k000")


# --- what the harness found, pinned -------------------------------------------------


def test_a_client_hanging_up_mid_body_is_no_server_error(api: Any, ns: str,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    # Impatient clients and slow ones hang up while their body is on its way: that left
    # "Exception in ASGI application" tracebacks (a 500 nobody received) in the log.
    port = int(api.url.rsplit(":", 1)[1])
    uvicorn_log = logging.getLogger("uvicorn")
    uvicorn_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.sendall(f"PUT /v1/namespaces/{ns}/entries/k HTTP/1.1\r\n"
                              f"Host: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
                              "Content-Type: application/json\r\n"
                              "Content-Length: 1000\r\n\r\n{\"a\":".encode())
                    time.sleep(0.1)
            time.sleep(0.5)
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert any("disconnected" in r.getMessage() for r in caplog.records)
    with httpx.Client(headers=AUTH, base_url=api.url) as c:
        assert c.get(f"/v1/namespaces/{ns}/entries/k").status_code == 404  # nothing written


def test_the_live_feed_outlasts_a_database_restart(api: Any, client: httpx.Client, ns: str,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    # A PostgreSQL restart under a live SSE stream ended it with "response already
    # started" tracebacks; the feed now keeps the connection and resumes where it was.
    import psycopg

    from nexus_ssot.projections import event_feed

    real = event_feed.events_after
    failures = {"left": 0}

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        # this test's stream only: the suite's server may hold other streams meanwhile
        if kwargs.get("namespace") == ns and failures["left"] > 0:
            failures["left"] -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await real(*args, **kwargs)

    monkeypatch.setattr(event_feed, "events_after", flaky)
    for i in range(2):
        client.put(f"/v1/namespaces/{ns}/entries/k{i}", json={"i": i}).raise_for_status()
    uvicorn_log = logging.getLogger("uvicorn")
    uvicorn_log.addHandler(caplog.handler)
    received: list[int] = []
    retries = 0
    try:
        with httpx.Client(headers=AUTH, base_url=api.url, timeout=20) as c, \
                c.stream("GET", "/v1/events/stream", params={"namespace": ns, "after": 0}
                         ) as stream:
            for line in stream.iter_lines():
                retries += line.startswith(": the event store is unavailable")
                if line.startswith("data: "):
                    received.append(orjson.loads(line[6:])["data"]["version"])
                    if len(received) == 2:
                        # The store goes away mid-stream: the feed's next two reads fail
                        # (it polls at least every 0.5 s); once they have, a write. (A
                        # write made at once could be read by a read already under way.)
                        failures["left"] = 2
                        wait_until(lambda: failures["left"] == 0, "two failed reads")
                        client.put(f"/v1/namespaces/{ns}/entries/k2",
                                   json={"i": 2}).raise_for_status()
                if len(received) == 3:
                    break
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert received == [1, 1, 1] and retries == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_unexpected_server_failures_are_anomalies(tmp_path: Path) -> None:
    api_log = tmp_path / "api.log"
    api_log.write_text(
        "INFO: started\n"
        "PUT /v1/namespaces/a/entries/k failed (correlation id 1)\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "starlette.requests.ClientDisconnect\n"
        "ERROR:    Exception in ASGI application\n"
        "Traceback (most recent call last):\n"
        "psycopg.OperationalError: server closed the connection unexpectedly\n"
        "During handling of the above exception, another exception occurred:\n"
        "RuntimeError: Caught handled exception, but response already started.\n")
    errors = server_errors(api_log)
    assert [e["exception"] for e in errors] == [
        "starlette.requests.ClientDisconnect",
        "psycopg.OperationalError: server closed the connection unexpectedly"]
    run = clean_run()
    report = check({"seed": 1, "duration": 1, "clients": 1}, run["history"], run["log"],
                   run["subscribers"], run["server"], errors)
    assert report["anomalies"]["server_error"]["count"] == 2
    history_line(run, "c0-4", "complete")["errors"] = ["500 {\"code\": \"internal_error\"}"]
    assert set(anomalies_of(run)) == {"server_error"}


def test_a_write_of_unknown_outcome_may_land_once_and_no_more() -> None:
    run = clean_run()
    s = "chaos-strict"
    run["history"] += op_lines(8, "c0-8", "put", s, "k5", "info", None, body=D1, status=0)
    assert anomalies_of(run) == {}  # it did not land: allowed
    run["log"].append(log_event(6, s, "k5", 1, D1, "run-c0-8"))
    for name in ("nats-chaos-strict", "sse"):
        run["subscribers"][name].append({"p": 6, "id": "id-6", "t": 6.0})
    assert anomalies_of(run) == {}  # it landed once, as sent: allowed
    run["log"].append(log_event(7, s, "k5", 2, D1, "run-c0-8"))
    for name in ("nats-chaos-strict", "sse"):
        run["subscribers"][name].append({"p": 7, "id": "id-7", "t": 7.0})
    assert set(anomalies_of(run)) == {"duplicate_write"}


def test_a_batch_of_unknown_outcome_that_half_landed_is_named() -> None:
    run = clean_run()
    m = "chaos-merge"
    ops = [{"op": "put", "namespace": m, "key": "k7", "document": D1},
           {"op": "put", "namespace": m, "key": "k8", "document": D2}]
    run["history"] += op_lines(8, "c0-8", "batch", "", "", "info", None,
                               body={"operations": ops}, status=0)
    run["log"].append(log_event(6, m, "k7", 1, D1, "run-c0-8"))
    for name in ("nats-chaos-merge", "sse"):
        run["subscribers"][name].append({"p": 6, "id": "id-6", "t": 6.0})
    assert set(anomalies_of(run)) == {"partial_batch"}
    run["log"].append(log_event(7, m, "k8", 1, D2, "run-c0-8"))
    for name in ("nats-chaos-merge", "sse"):
        run["subscribers"][name].append({"p": 7, "id": "id-7", "t": 7.0})
    assert anomalies_of(run) == {}


def test_a_merge_onto_a_deleted_base_expects_the_whole_document() -> None:
    """Found by a CI run: a stale revert merged over a deletion (base: the deleted version;
    since then the same revert by another client) was called a lost change, because the
    deleted base's root leaf, visited in set order, wiped leaves already laid."""
    from nexus_ssot.ops.chaos.check_writes import overlay

    doc = {"client": 4, "op": "c4-7.2", "r": 704848, "tags": ["e", "d"], "j10": "c10-6"}
    assert overlay(doc, None, doc) == doc
    assert overlay({"x": 1}, None, doc) == doc  # the ledger's merge: ours at the root
    assert overlay({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}, {"a": 5}) == {"a": 5}


def test_subscribers_that_swallow_their_cancellation_are_stopped_still() -> None:
    # Python 3.11's asyncio.wait_for (in nats-py's fetch) may drop a cancellation: a run
    # hung after its clients, its NATS subscribers "cancelling" and fetching on.
    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        await asyncio.sleep(30)

    async def run() -> bool:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await stop_tasks([task])
        return task.cancelled()

    assert asyncio.run(asyncio.wait_for(run(), 10))


def _cloudevent(p: int) -> bytes:
    return orjson.dumps({
        "specversion": "1.0", "id": f"id-{p}", "type": "io.nexus.ssot.entry.updated",
        "time": "2026-01-01T00:00:00Z", "data": {
            "position": p, "namespace": "ns", "key": "k", "version": p, "document": {},
            "patch": [], "actor": "a", "reason": None, "correlation_id": "c",
            "causation_id": None}})


def _subscribe_through(nats_url: str, stream: tuple[str, str], trouble: Any) -> list[int]:
    """Positions a Subscriber received of 20 events published around ``trouble(js)``."""
    import nats
    from nats.js.api import StreamConfig

    from nexus_ssot.client.subscriber import Subscriber

    name, prefix = stream

    async def run() -> list[int]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=name, subjects=[f"{prefix}.>"]))

        async def publish(first: int, last: int) -> None:
            for p in range(first, last + 1):
                await js.publish(f"{prefix}.ns.k", _cloudevent(p), headers={
                    "Nats-Msg-Id": f"id-{p}", "Ssot-Position": str(p)})

        got: list[int] = []

        async def consume() -> None:
            async with Subscriber(nats_url, "http://127.0.0.1:9", namespace="ns",
                                  stream=name, prefix=prefix) as changes:
                async for change in changes:
                    got.append(change.position)

        await publish(1, 10)
        task = asyncio.create_task(consume())
        try:
            for _ in range(100):
                if len(got) >= 10:
                    break
                await asyncio.sleep(0.1)
            await trouble(js, name)
            await publish(11, 20)
            for _ in range(200):
                if len(got) >= 20 or task.done():
                    break
                await asyncio.sleep(0.1)
            if task.done():
                task.result()  # an SDK that gave up raises here
        finally:
            task.cancel()
            await nc.close()
        return got

    return asyncio.run(run())


def test_a_subscriber_whose_consumer_is_lost_goes_on(nats_url: str,
                                                     stream: tuple[str, str]) -> None:
    # After NATS restarts, the subscriber's consumer may be gone: the SDK raised
    # ServiceUnavailableError (or, with nats-py answering fetches on a missing consumer
    # with nothing, waited forever). It now makes a new consumer from its position.
    async def delete_consumers(js: Any, name: str) -> None:
        for consumer in await js.consumers_info(name):
            await js.delete_consumer(name, consumer.name)

    assert _subscribe_through(nats_url, stream, delete_consumers) == list(range(1, 21))


def test_a_subscriber_whose_consumer_stalls_goes_on(nats_url: str, stream: tuple[str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A 30-minute chaos run saw both NATS subscribers stop after a NATS restart, with no
    # error, while the stream kept growing: a consumer delivering nothing while messages
    # are pending for it is replaced.
    from nats.js.client import JetStreamContext

    real = JetStreamContext.pull_subscribe
    stalled = {"first": True}

    async def pull_subscribe(self: Any, *args: Any, **kwargs: Any) -> Any:
        sub = await real(self, *args, **kwargs)
        if stalled.pop("first", False):
            delivered = {"count": 0}
            fetch = sub.fetch

            async def stalling_fetch(batch: int, timeout: float = 1.0) -> Any:
                if delivered["count"] >= 10:  # then silence, as seen
                    await asyncio.sleep(timeout)
                    raise TimeoutError
                messages = await fetch(batch, timeout=timeout)
                delivered["count"] += len(messages)
                return messages

            sub.fetch = stalling_fetch
        return sub

    monkeypatch.setattr(JetStreamContext, "pull_subscribe", pull_subscribe)

    async def nothing(js: Any, name: str) -> None:
        return None

    assert _subscribe_through(nats_url, stream, nothing) == list(range(1, 21))
