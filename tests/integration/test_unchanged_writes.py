"""A write that leaves an entry as it is appends nothing: it answers 200 with the version
it found, that version's ETag and position, and ``"unchanged": true`` — over HTTP, in
batches, for patches, reverts and settings, and when its request is retried."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from .conftest import event_count
from .test_cli import ssot

MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def entry(ns: str, key: str) -> str:
    return f"/v1/namespaces/{ns}/entries/{key}"


def history_of(client: httpx.Client, ns: str, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(entry(ns, key) + "/history").json()["items"]
    return items


def test_putting_the_same_document_again_appends_nothing_and_answers_the_version_found(
    client: httpx.Client, ns: str, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    made = client.put(entry(ns, "k"), json={"a": 1, "b": [1, 2]})
    assert made.status_code == 201
    before = event_count(db)
    again = client.put(entry(ns, "k"), json={"b": [1, 2], "a": 1})  # (member order aside)
    assert again.status_code == 200, again.text
    assert again.headers["etag"] == made.headers["etag"] == '"1"'
    assert "location" not in again.headers
    assert again.json() == {**made.json(), "unchanged": True}
    assert event_count(db) == before
    assert [h["version"] for h in history_of(client, ns, "k")] == [1]
    assert client.get(entry(ns, "k")).json()["document"] == {"a": 1, "b": [1, 2]}
    # a value of another JSON type is a change
    assert client.put(entry(ns, "k"), json={"a": 1.0, "b": [1, 2]}).json()["version"] == 2


def test_patches_and_reverts_that_change_nothing_are_unchanged(
    client: httpx.Client, ns: str, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    client.put(entry(ns, "k"), json={"a": 1})
    client.put(entry(ns, "k"), json={"a": 2})
    before = event_count(db)
    no_ops = [
        client.patch(entry(ns, "k"), content=b'{"a": 2, "gone": null}', headers=MERGE),
        client.patch(entry(ns, "k"), content=b'[{"op": "test", "path": "/a", "value": 2}]',
                     headers=JSON_PATCH),
        client.post(entry(ns, "k") + "/revert", json={"to_version": 2}),
    ]
    for answer in no_ops:
        assert answer.status_code == 200, answer.text
        assert (answer.json()["version"], answer.json()["unchanged"]) == (2, True)
        assert answer.headers["etag"] == '"2"'
    assert event_count(db) == before
    assert client.post(entry(ns, "k") + "/revert", json={"to_version": 1}).json() \
        ["version"] == 3


def test_a_stale_if_match_still_fails_when_the_document_would_be_the_same(
    client: httpx.Client, ns: str
) -> None:
    client.put(f"/v1/namespaces/{ns}", json={"conflict_policy": "strict"})
    client.put(entry(ns, "k"), json={"a": 1})
    client.put(entry(ns, "k"), json={"a": 2})
    stale = client.put(entry(ns, "k"), json={"a": 2}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.json()["code"] == "version_conflict"
    current = client.put(entry(ns, "k"), json={"a": 2}, headers={"If-Match": '"2"'})
    assert current.status_code == 200 and current.json()["unchanged"] is True
    created_only = client.put(entry(ns, "k"), json={"a": 2}, headers={"If-None-Match": "*"})
    assert created_only.status_code == 412 and created_only.json()["code"] == "entry_exists"


def test_deleting_a_deleted_entry_is_still_refused(client: httpx.Client, ns: str) -> None:
    client.put(entry(ns, "k"), json={})
    assert client.delete(entry(ns, "k")).status_code == 200
    again = client.delete(entry(ns, "k"))
    assert again.status_code == 404 and again.json()["code"] == "entry_deleted"


def test_re_sending_a_batch_appends_nothing(
    client: httpx.Client, ns: str, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    body = {"operations": [
        {"op": "put", "namespace": ns, "key": "a", "document": {"n": 1}},
        {"op": "patch", "namespace": ns, "key": "a", "patch": {"m": 1}},
        {"op": "put", "namespace": ns, "key": "b", "document": {"n": 1}},
    ]}
    first = client.post("/v1/batch", json=body)
    assert first.status_code == 200, first.text
    assert [o.get("unchanged") for o in first.json()["operations"]] == [None, None, None]
    before = event_count(db)
    again = client.post("/v1/batch", json=body)
    assert again.status_code == 200, again.text
    # the put of a is a change again (it drops m); the patch then puts m back; b is as sent
    assert [(o["key"], o["version"], o.get("unchanged")) for o in again.json()["operations"]] \
        == [("a", 3, None), ("a", 4, None), ("b", 1, True)]
    assert event_count(db) == before + 2
    same = {"operations": [body["operations"][1], body["operations"][2]]}
    assert all(o["unchanged"] for o in client.post("/v1/batch", json=same).json()["operations"])
    assert event_count(db) == before + 2


def test_a_retried_request_whose_first_answer_was_unchanged_answers_the_same(
    client: httpx.Client, ns: str, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    client.put(entry(ns, "k"), json={"a": 1})
    retry = {"Idempotency-Key": f"{ns}-unchanged"}
    first = client.put(entry(ns, "k"), json={"a": 1}, headers=retry)
    again = client.put(entry(ns, "k"), json={"a": 1}, headers=retry)
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json() == again.json() and again.json()["unchanged"] is True
    assert first.headers["etag"] == again.headers["etag"]
    # a batch that changed some entries and not others answers each the same way again
    batch_retry = {"Idempotency-Key": f"{ns}-batch"}
    body = {"operations": [
        {"op": "put", "namespace": ns, "key": "k", "document": {"a": 1}},
        {"op": "put", "namespace": ns, "key": "j", "document": {"b": 1}}]}
    original = client.post("/v1/batch", json=body, headers=batch_retry)
    client.put(entry(ns, "k"), json={"a": 2})  # k moves on meanwhile
    before = event_count(db)
    replayed = client.post("/v1/batch", json=body, headers=batch_retry)
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json()["operations"] == original.json()["operations"]
    assert [o.get("unchanged") for o in replayed.json()["operations"]] == [True, None]
    assert event_count(db) == before


def test_the_same_settings_again_are_unchanged(client: httpx.Client, ns: str) -> None:
    first = client.put(f"/v1/namespaces/{ns}", json={"conflict_policy": "strict"})
    assert first.status_code == 201
    again = client.put(f"/v1/namespaces/{ns}", json={"conflict_policy": "strict",
                                                     "description": None})
    assert again.status_code == 200
    assert again.json() == {**first.json(), "unchanged": True}
    history = client.get(f"/v1/namespaces/{ns}/settings/history").json()["items"]
    assert len(history) == 1


def test_the_cli_says_when_a_write_changed_nothing(api: Any, ns: str) -> None:
    assert ssot(api, "put", f"{ns}/k", "-", stdin='{"a": 1}').returncode == 0
    again = ssot(api, "put", f"{ns}/k", "-", stdin='{"a": 1}')
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"unchanged {ns}/k version 1 (position ")
    patched = ssot(api, "patch", f"{ns}/k", "-", stdin='{"a": 1}')
    assert patched.stdout.startswith(f"unchanged {ns}/k version 1 ")


def test_the_same_policy_again_is_unchanged(client: httpx.Client, ns: str) -> None:
    path = f"/v1/access/policies/{ns}-nothing"
    first = client.put(path, json={"rules": []})
    assert first.status_code == 201, first.text
    again = client.put(path, json={"rules": []})
    assert again.status_code == 200
    assert again.json() == {**first.json(), "unchanged": True}
    assert client.delete(path).status_code == 200
