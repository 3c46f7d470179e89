"""Atomic batches and point-in-time restore of a namespace, as audited events."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.examples import examples
from tests.integration.conftest import event_count


def entry(ns: str, key: str) -> str:
    return f"/v1/namespaces/{ns}/entries/{key}"


def history(client: httpx.Client, ns: str, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(entry(ns, key) + "/history").json()["items"]
    return items


# --- batch ----------------------------------------------------------------------------


def test_a_batch_applies_every_operation_in_one_transaction(client: httpx.Client,
                                                            ns: str) -> None:
    other = ns + "-b"
    client.put(entry(ns, "gone"), json={"x": 1})
    r = client.post("/v1/batch", headers={"X-Correlation-Id": f"release-{ns}"}, json={
        "reason": "release 42",
        "operations": [
            {"op": "put", "namespace": ns, "key": "a", "document": {"v": 1}},
            {"op": "patch", "namespace": ns, "key": "a", "patch": {"w": 2}, "if_match": 1},
            {"op": "put", "namespace": other, "key": "b", "document": {"z": 3},
             "if_none_match": True},
            {"op": "delete", "namespace": ns, "key": "gone", "if_match": "*"},
        ]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["correlation_id"] == f"release-{ns}"
    ops = body["operations"]
    assert [(o["namespace"], o["key"], o["version"]) for o in ops] == [
        (ns, "a", 1), (ns, "a", 2), (other, "b", 1), (ns, "gone", 2)]
    assert ops[1]["document"] == {"v": 1, "w": 2} and ops[3]["document"] is None
    positions = [o["position"] for o in ops]
    assert positions == list(range(positions[0], positions[0] + 4))  # one commit, in order
    for o in ops:
        event = history(client, o["namespace"], o["key"])[o["version"] - 1]
        assert (event["correlation_id"], event["reason"]) == (f"release-{ns}", "release 42")


def test_a_failing_operation_fails_the_batch_names_it_and_appends_nothing(
        client: httpx.Client, ns: str, db: Any) -> None:
    client.put(entry(ns, "a"), json={"v": 1})
    before = event_count(db)
    r = client.post("/v1/batch", json={"operations": [
        {"op": "put", "namespace": ns, "key": "new", "document": {}},
        {"op": "patch", "namespace": ns, "key": "a", "patch": {"v": 2}},
        {"op": "put", "namespace": ns, "key": "a", "document": {"v": 3}, "if_match": 7},
    ]})
    assert r.status_code == 412, r.text
    problem = r.json()
    assert (problem["code"], problem["operation"], problem["field"]) == (
        "version_conflict", 2, "operations[2].if_match")
    assert problem["detail"].startswith(f"operations[2] (put {ns}/a): ")
    assert event_count(db) == before
    assert client.get(entry(ns, "new")).status_code == 404


@pytest.mark.parametrize(("operation", "status", "code", "field"), [
    ({"op": "upsert", "namespace": "n", "key": "k"}, 400, "invalid_operation",
     "operations[0].op"),
    ({"op": "put", "namespace": "n", "key": "k"}, 400, "invalid_operation",
     "operations[0].document"),
    ({"op": "put", "namespace": "n", "key": "k", "document": {}, "colour": 1}, 400,
     "invalid_operation", "operations[0].colour"),
    ({"op": "put", "namespace": "N!", "key": "k", "document": {}}, 400, "invalid_namespace",
     "operations[0].namespace"),
    ({"op": "delete", "namespace": "n", "key": "a//b"}, 400, "invalid_key",
     "operations[0].key"),
    ({"op": "patch", "namespace": "n", "key": "k", "patch": {}, "patch_type": "xml"}, 400,
     "invalid_operation", "operations[0].patch_type"),
    ({"op": "patch", "namespace": "n", "key": "k", "patch": [{"op": "nope"}],
      "patch_type": "json"}, 400, "invalid_patch", "operations[0].patch[0].op"),
    ({"op": "put", "namespace": "n", "key": "k", "document": {}, "if_match": 0}, 400,
     "invalid_precondition", "operations[0].if_match"),
    ({"op": "put", "namespace": "n", "key": "k", "document": [1]}, 400,
     "document_not_object", "operations[0].document"),
    ("put", 400, "invalid_operation", "operations[0]"),
])
def test_bad_batch_operations_are_named(client: httpx.Client, db: Any, operation: Any,
                                        status: int, code: str, field: str) -> None:
    before = event_count(db)
    r = client.post("/v1/batch", json={"operations": [operation]})
    assert r.status_code == status, r.text
    assert (r.json()["code"], r.json()["field"]) == (code, field)
    assert event_count(db) == before


@pytest.mark.parametrize(("body", "code", "field"), [
    ({}, "invalid_parameter", "operations"),
    ({"operations": []}, "invalid_parameter", "operations"),
    ({"operations": {}}, "invalid_parameter", "operations"),
    ({"operations": [], "extra": 1}, "invalid_parameter", "body"),
    ({"operations": [{"op": "delete", "namespace": "n", "key": "k"}] * 1001},
     "batch_too_large", "operations"),
])
def test_bad_batch_bodies_are_refused(client: httpx.Client, body: Any, code: str,
                                      field: str) -> None:
    r = client.post("/v1/batch", json=body)
    assert r.status_code == 400 and (r.json()["code"], r.json()["field"]) == (code, field)


def test_a_retried_batch_answers_every_outcome_once(client: httpx.Client, ns: str,
                                                    db: Any) -> None:
    body = {"operations": [{"op": "put", "namespace": ns, "key": k, "document": {"k": k}}
                           for k in ("a", "b", "c")]}
    headers = {"Idempotency-Key": f"batch-{ns}"}
    first = client.post("/v1/batch", json=body, headers=headers)
    after_first = event_count(db)
    retry = client.post("/v1/batch", json=body, headers=headers)
    assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
    assert [o["position"] for o in retry.json()["operations"]] == [
        o["position"] for o in first.json()["operations"]]
    assert event_count(db) == after_first
    changed = client.post("/v1/batch", json={"operations": body["operations"][:1]},
                          headers=headers)
    assert changed.status_code == 422 and changed.json()["code"] == "idempotency_key_reused"


# --- restore --------------------------------------------------------------------------


def _cut(client: httpx.Client, ns: str, position: int) -> list[tuple[str, Any]]:
    r = client.get(f"/v1/namespaces/{ns}/entries", params={"position": position,
                                                           "limit": 1000})
    if r.status_code == 404 and r.json()["code"] == "namespace_not_found":
        return []  # the namespace did not exist yet: nothing of it was there
    return [(i["key"], i["document"]) for i in r.json()["items"]]


def test_a_restore_plans_then_makes_the_namespace_what_it_was(client: httpx.Client,
                                                              ns: str, db: Any) -> None:
    client.put(entry(ns, "svc/a"), json={"v": 1})
    client.put(entry(ns, "svc/b"), json={"v": 1})
    client.put(entry(ns, "svc/same"), json={"v": 1})
    client.put(entry(ns, "other"), json={"v": 1})
    mark = client.put(entry(ns, "svc/c"), json={"v": 1}).json()
    # the bad change: edit a, delete b, create d, delete c and re-create it differently
    client.put(entry(ns, "svc/a"), json={"v": 2})
    client.delete(entry(ns, "svc/b"))
    client.put(entry(ns, "svc/d"), json={"v": 1})
    client.delete(entry(ns, "svc/c"))
    client.put(entry(ns, "svc/c"), json={"v": 9})
    client.put(entry(ns, "other"), json={"v": 2})

    before = event_count(db)
    plan = client.post(f"/v1/namespaces/{ns}/restore", json={
        "as_of": mark["recorded_at"], "key_prefix": "svc/", "dry_run": True})
    assert plan.status_code == 200, plan.text
    body = plan.json()
    assert (body["position"], body["dry_run"], body["key_prefix"]) == (
        mark["position"], True, "svc/")
    assert [(o["key"], o["action"], o["from_version"], o["to_version"])
            for o in body["operations"]] == [
        ("svc/a", "revert", 2, 1), ("svc/b", "recreate", 2, 1), ("svc/c", "revert", 3, 1),
        ("svc/d", "delete", 1, None)]
    assert body["operations"][0]["patch"] == [{"op": "replace", "path": "/v", "value": 1}]
    assert event_count(db) == before  # a dry run appends nothing

    done = client.post(f"/v1/namespaces/{ns}/restore", headers={"X-Correlation-Id":
                                                                f"pitr-{ns}"}, json={
        "position": mark["position"], "key_prefix": "svc/", "reason": "bad rollout"})
    assert done.status_code == 200, done.text
    ops = done.json()["operations"]
    assert [(o["key"], o["version"]) for o in ops] == [
        ("svc/a", 3), ("svc/b", 3), ("svc/c", 4), ("svc/d", 2)]
    positions = [o["position"] for o in ops]
    assert positions == list(range(positions[0], positions[0] + 4))  # one transaction
    assert event_count(db) == before + 4
    # now equals then, within the prefix; the rest of the namespace is untouched
    head = positions[-1]
    assert [kv for kv in _cut(client, ns, head) if kv[0].startswith("svc/")] == [
        kv for kv in _cut(client, ns, mark["position"]) if kv[0].startswith("svc/")]
    assert client.get(entry(ns, "other")).json()["document"] == {"v": 2}
    # each key's history shows the restore, with its reason, under one correlation id
    for key, event_type in (("svc/a", "entry.restored"), ("svc/b", "entry.restored"),
                            ("svc/d", "entry.deleted")):
        last = history(client, ns, key)[-1]
        assert (last["event_type"], last["reason"], last["correlation_id"]) == (
            event_type, "bad rollout", f"pitr-{ns}")
    # and nothing is left to do
    again = client.post(f"/v1/namespaces/{ns}/restore", json={
        "position": mark["position"], "key_prefix": "svc/", "reason": "again"})
    assert again.json()["operations"] == []


def test_restoring_to_before_the_first_event_deletes_everything(client: httpx.Client,
                                                                ns: str) -> None:
    client.put(entry(ns, "a"), json={})
    client.put(entry(ns, "b"), json={})
    r = client.post(f"/v1/namespaces/{ns}/restore", json={"position": 0,
                                                         "reason": "wipe"})
    assert [o["action"] for o in r.json()["operations"]] == ["delete", "delete"]
    assert client.get(f"/v1/namespaces/{ns}/entries").json()["items"] == []


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"reason": "x"}, "invalid_parameter", "as_of"),
    ({"position": 1, "as_of": "2026-01-01T00:00:00Z", "reason": "x"}, "invalid_parameter",
     "as_of"),
    ({"position": 1}, "invalid_reason", "reason"),
    ({"position": -1, "reason": "x"}, "invalid_parameter", "position"),
    ({"as_of": "yesterday", "reason": "x"}, "invalid_parameter", "as_of"),
    ({"as_of": "2026-01-01T00:00:00", "reason": "x"}, "invalid_parameter", "as_of"),
    ({"position": 1, "reason": "x", "dry_run": "yes"}, "invalid_parameter", "dry_run"),
    ({"position": 1, "reason": "x", "force": True}, "invalid_parameter", "body"),
])
def test_bad_restore_requests_are_refused(client: httpx.Client, ns: str, body: Any,
                                          code: str, field: str) -> None:
    r = client.post(f"/v1/namespaces/{ns}/restore", json=body)
    assert r.status_code == 400, r.text
    assert (r.json()["code"], r.json()["field"]) == (code, field)


# --- the CLI, run as a process ---------------------------------------------------------


def test_cli_restore_batch_and_namespace_settings(api: Any, client: httpx.Client,
                                                  ns: str) -> None:
    from tests.integration.test_cli import ssot

    client.put(entry(ns, "a"), json={"v": 1})
    mark = client.put(entry(ns, "b"), json={"v": 1}).json()
    applied = ssot(api, "batch", "-", "--reason", "bulk edit", stdin=json.dumps([
        {"op": "patch", "namespace": ns, "key": "a", "patch": {"v": 2}},
        {"op": "delete", "namespace": ns, "key": "b"},
        {"op": "put", "namespace": ns, "key": "c", "document": {"v": 1}}]))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.startswith("applied 3 operations in one transaction")
    refused = ssot(api, "batch", "-", stdin=json.dumps([
        {"op": "put", "namespace": ns, "key": "a", "document": {}, "if_match": 1}]))
    assert refused.returncode == 4 and "operations[0]" in refused.stderr

    plan = ssot(api, "restore", ns, "--as-of", mark["recorded_at"], "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[0] == (
        f"{ns} at position {mark['position']}: would change 3 entries")
    assert [line.split()[:2] for line in plan.stdout.splitlines()[2:]] == [
        ["a", "revert"], ["b", "recreate"], ["c", "delete"]]
    assert client.get(entry(ns, "c")).status_code == 200  # a plan changes nothing
    missing_reason = ssot(api, "restore", ns, "--position", str(mark["position"]))
    assert missing_reason.returncode == 2 and "invalid_reason" in missing_reason.stderr
    done = ssot(api, "--json", "restore", ns, "--position", str(mark["position"]),
                "--reason", "undo bulk edit")
    assert done.returncode == 0, done.stderr
    assert [o["version"] for o in json.loads(done.stdout)["operations"]] == [3, 3, 2]
    assert [(i["key"], i["document"]) for i in client.get(
        f"/v1/namespaces/{ns}/entries").json()["items"]] == [("a", {"v": 1}), ("b", {"v": 1})]

    set_strict = ssot(api, "namespace", "set", ns, "--conflict-policy", "strict",
                      "--reason", "no merges here")
    assert set_strict.returncode == 0, set_strict.stderr
    assert set_strict.stdout.startswith(f"{ns}: settings version 1 (position ")
    described = ssot(api, "namespace", "set", ns, "--description", "flags")
    assert described.returncode == 0, described.stderr
    shown = ssot(api, "namespace", "show", ns)
    assert shown.stdout.splitlines() == [
        f"{ns}  settings version 2  2 entries  1 deleted",
        "  conflict_policy: strict", "  description: flags"]


_KEYS = ["a", "b", "c", "d/x", "d/y"]
_WRITE = st.tuples(st.sampled_from(["put", "delete"]), st.sampled_from(_KEYS),
                   st.integers(0, 3))


@settings(max_examples=examples(15), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(_WRITE, min_size=1, max_size=12),
       after=st.lists(_WRITE, min_size=1, max_size=12), prefix=st.sampled_from(["", "d/"]))
def test_after_any_history_a_restore_makes_now_equal_then(
        client: httpx.Client, before: list[Any], after: list[Any], prefix: str) -> None:
    ns = f"prop-{uuid.uuid4().hex[:12]}"

    def run(writes: list[Any]) -> None:
        for op, key, value in writes:
            if op == "put":
                assert client.put(entry(ns, key), json={"v": value}).status_code in (200, 201)
            else:
                assert client.delete(entry(ns, key)).status_code in (200, 404)

    run(before)
    mark = client.get("/v1/health").json()["head_position"]
    run(after)
    r = client.post(f"/v1/namespaces/{ns}/restore", json={
        "position": mark, "key_prefix": prefix, "reason": "property"})
    if not any(op == "put" for op, _, _ in before + after):  # it never came to exist
        assert r.status_code == 404 and r.json()["code"] == "namespace_not_found", r.text
        return
    assert r.status_code == 200, r.text
    head = client.get("/v1/health").json()["head_position"]

    def under(position: int) -> list[tuple[str, Any]]:
        return [kv for kv in _cut(client, ns, position) if kv[0].startswith(prefix)]

    assert under(head) == under(mark)
    outside = [kv for kv in _cut(client, ns, head) if not kv[0].startswith(prefix)]
    assert outside == [kv for kv in _cut(client, ns, head - len(r.json()["operations"]))
                       if not kv[0].startswith(prefix)]  # nothing else moved
