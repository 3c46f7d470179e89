"""The entry API end to end: real HTTP, real PostgreSQL, exact status codes."""

from __future__ import annotations

import uuid

import httpx
import jsonpatch

from tests.integration.conftest import AUTH, event_count

JSON = {"Content-Type": "application/json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
JPATCH = {"Content-Type": "application/json-patch+json"}


def url(ns: str, key: str) -> str:
    return f"/v1/namespaces/{ns}/entries/{key}"


def test_create_returns_201_etag_1_and_the_entry_fields(client: httpx.Client, ns: str) -> None:
    r = client.put(url(ns, "services/payments/db.url"), json={"url": "pg://a"})
    assert r.status_code == 201
    assert r.headers["etag"] == '"1"'
    body = r.json()
    assert list(body) == ["namespace", "key", "version", "position", "recorded_at", "document"]
    assert body["namespace"] == ns and body["key"] == "services/payments/db.url"
    assert body["version"] == 1 and body["document"] == {"url": "pg://a"}
    assert isinstance(body["position"], int) and body["position"] > 0
    assert body["recorded_at"].endswith("Z")


def test_replace_with_if_match_gives_next_version_and_stale_if_match_appends_nothing(
    client: httpx.Client, ns: str, db: object
) -> None:
    client.put(url(ns, "k"), json={"a": 1})
    r = client.put(url(ns, "k"), json={"a": 2}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.headers["etag"] == '"2"'
    before = event_count(db)  # type: ignore[arg-type]
    # under the default policy (merge) a stale write that collides is a 409
    stale = client.put(url(ns, "k"), json={"a": 3}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409
    assert stale.json()["code"] == "edit_conflict"
    assert stale.json()["current_version"] == 2
    assert event_count(db) == before  # type: ignore[arg-type]
    assert client.get(url(ns, "k")).json()["document"] == {"a": 2}


def test_if_none_match_star_creates_only(client: httpx.Client, ns: str) -> None:
    assert client.put(url(ns, "k"), json={}, headers={"If-None-Match": "*"}).status_code == 201
    again = client.put(url(ns, "k"), json={}, headers={"If-None-Match": "*"})
    assert again.status_code == 412 and again.json()["code"] == "entry_exists"


def test_merge_patch_makes_a_new_version(client: httpx.Client, ns: str) -> None:
    client.put(url(ns, "k"), json={"a": 1, "b": {"c": 2, "d": 3}})
    r = client.patch(url(ns, "k"), content=b'{"b": {"c": null, "e": 4}, "f": 5}', headers=MERGE)
    assert r.status_code == 200 and r.json()["version"] == 2
    assert r.json()["document"] == {"a": 1, "b": {"d": 3, "e": 4}, "f": 5}


def test_json_patch_supports_all_six_operations(client: httpx.Client, ns: str) -> None:
    client.put(url(ns, "k"), json={"a": 1, "list": [1, 2], "old": "x"})
    ops = [
        {"op": "test", "path": "/a", "value": 1},
        {"op": "add", "path": "/list/-", "value": 3},
        {"op": "replace", "path": "/a", "value": 10},
        {"op": "move", "from": "/old", "path": "/new"},
        {"op": "copy", "from": "/a", "path": "/a2"},
        {"op": "remove", "path": "/list/0"},
    ]
    r = client.patch(url(ns, "k"), json=ops, headers=JPATCH)
    assert r.status_code == 200, r.text
    assert r.json()["document"] == {"a": 10, "list": [2, 3], "new": "x", "a2": 10}


def test_a_patch_that_cannot_apply_is_422_with_the_failing_index_and_appends_nothing(
    client: httpx.Client, ns: str, db: object
) -> None:
    client.put(url(ns, "k"), json={"a": 1})
    before = event_count(db)  # type: ignore[arg-type]
    ops = [{"op": "replace", "path": "/a", "value": 2}, {"op": "remove", "path": "/missing"}]
    r = client.patch(url(ns, "k"), json=ops, headers=JPATCH)
    assert r.status_code == 422
    assert r.json()["op_index"] == 1 and r.json()["field"] == "patch[1]"
    assert event_count(db) == before  # type: ignore[arg-type]
    assert client.get(url(ns, "k")).json()["version"] == 1


def test_delete_leaves_a_tombstone_and_a_later_put_recreates_as_next_version(
    client: httpx.Client, ns: str
) -> None:
    client.put(url(ns, "k"), json={"v": 1})
    stale = client.delete(url(ns, "k"), headers={"If-Match": '"7"'})
    assert stale.status_code == 412
    d = client.delete(url(ns, "k"), headers={"If-Match": '"1"'})
    assert d.status_code == 200 and d.json()["version"] == 2 and d.json()["document"] is None
    gone = client.get(url(ns, "k"))
    assert gone.status_code == 404
    assert gone.json()["code"] == "entry_deleted" and gone.json()["deleted_version"] == 2
    assert client.delete(url(ns, "k")).status_code == 404
    again = client.put(url(ns, "k"), json={"v": 3})
    assert again.status_code == 201 and again.json()["version"] == 3
    versions = [e["version"] for e in client.get(url(ns, "k") + "/history").json()["items"]]
    assert versions == [1, 2, 3]


def test_any_past_version_can_be_read(client: httpx.Client, ns: str) -> None:
    for i in range(3):
        client.put(url(ns, "k"), json={"i": i})
    r = client.get(url(ns, "k"), params={"version": 2})
    assert r.status_code == 200 and r.json()["document"] == {"i": 1}
    assert r.headers["etag"] == '"2"'
    current = client.get(url(ns, "k"))
    assert current.json()["version"] == 3 and current.headers["etag"] == '"3"'
    missing = client.get(url(ns, "k"), params={"version": 9})
    assert missing.status_code == 404 and missing.json()["code"] == "version_not_found"
    assert client.get(url(ns, "nope")).json()["code"] == "entry_not_found"


def test_get_with_matching_if_none_match_is_304(client: httpx.Client, ns: str) -> None:
    client.put(url(ns, "k"), json={})
    for tag in ('"1"', 'W/"1"', '"7", W/"1"', "*"):  # If-None-Match compares weakly
        assert client.get(url(ns, "k"), headers={"If-None-Match": tag}).status_code == 304
    assert client.get(url(ns, "k"), headers={"If-None-Match": '"2"'}).status_code == 200


def test_a_weak_if_match_never_matches_while_star_and_strong_tags_do(
        client: httpx.Client, ns: str, db: object) -> None:
    client.put(url(ns, "k"), json={"a": 1})
    before = event_count(db)  # type: ignore[arg-type]
    weak = client.put(url(ns, "k"), json={"a": 2}, headers={"If-Match": 'W/"1"'})
    assert weak.status_code == 412 and weak.json()["code"] == "precondition_failed"
    assert "weak" in weak.json()["detail"] and weak.json()["field"] == "If-Match"
    assert event_count(db) == before  # type: ignore[arg-type]
    for tag in ('"1"', "*"):
        assert client.put(url(ns, "k"), json={"a": 2}, headers={"If-Match": tag}).is_success


def test_listing_paginates_with_a_stable_cursor_and_filters_by_prefix(
    client: httpx.Client, ns: str
) -> None:
    keys = [f"svc/{i:02d}" for i in range(7)] + ["other/x"]
    for k in keys:
        client.put(url(ns, k), json={"k": k})
    client.delete(url(ns, "svc/03"))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"prefix": "svc/", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/namespaces/{ns}/entries", params=params).json()
        assert set(page) == {"items", "next_cursor"}
        seen += [e["key"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # a write between pages does not disturb the pages already walked
        client.put(url(ns, "svc/00"), json={"touched": True})
    assert seen == [f"svc/{i:02d}" for i in range(7) if i != 3]
    other = client.get(f"/v1/namespaces/{ns}/entries", params={"prefix": "svc/",
                                                                "cursor": "garbage"})
    assert other.status_code == 400 and other.json()["code"] == "invalid_cursor"


def test_namespaces_are_listed_with_entry_counts(client: httpx.Client, ns: str) -> None:
    for k in ("a", "b", "c"):
        client.put(url(ns, k), json={})
    deleted = client.delete(url(ns, "c"))
    last = client.get(url(ns, "c") + "/history").json()["items"][-1]
    items: list[dict[str, object]] = []
    cursor = None
    while True:
        page = client.get("/v1/namespaces", params={"limit": 50, **(
            {"cursor": cursor} if cursor else {})}).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    mine = next(i for i in items if i["namespace"] == ns)
    assert mine["entries"] == 2 and mine["deleted"] == 1
    # the last change: the delete, its position and when it was recorded
    assert mine["last_position"] == deleted.json()["position"] == last["position"]
    assert mine["last_recorded_at"] == last["recorded_at"]


def test_history_shows_every_event_with_metadata_patch_and_document(
    client: httpx.Client, ns: str
) -> None:
    client.put(url(ns, "k"), json={"a": 1}, headers={"X-Reason": "initial"})
    client.patch(url(ns, "k"), content=b'{"b": 2}', headers=MERGE,
                 params={"reason": "add b"})
    cid = "trace-" + uuid.uuid4().hex
    client.delete(url(ns, "k"), headers={"X-Correlation-Id": cid})
    events = client.get(url(ns, "k") + "/history").json()["items"]
    assert [e["event_type"] for e in events] == ["entry.created", "entry.patched",
                                                 "entry.deleted"]
    assert [e["reason"] for e in events] == ["initial", "add b", None]
    assert events[2]["correlation_id"] == cid
    assert all(e["actor"] == "admin" for e in events)
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    previous = None
    for e in events:  # each patch turns the previous document into this one
        assert jsonpatch.apply_patch(previous, e["patch"]) == e["document"]
        previous = e["document"]
    desc = client.get(url(ns, "k") + "/history", params={"order": "desc", "limit": 2}).json()
    assert [e["version"] for e in desc["items"]] == [3, 2]
    rest = client.get(url(ns, "k") + "/history", params={"order": "desc", "limit": 2,
                                                         "cursor": desc["next_cursor"]}).json()
    assert [e["version"] for e in rest["items"]] == [1] and rest["next_cursor"] is None


def test_idempotency_key_returns_the_original_response_without_appending(
    client: httpx.Client, ns: str, db: object
) -> None:
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.put(url(ns, "k"), json={"a": 1}, headers=headers)
    count = event_count(db)  # type: ignore[arg-type]
    retry = client.put(url(ns, "k"), json={"a": 1}, headers=headers)
    assert retry.status_code == first.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert event_count(db) == count  # type: ignore[arg-type]
    other = client.put(url(ns, "k"), json={"a": 2}, headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert event_count(db) == count  # type: ignore[arg-type]


def test_correlation_id_is_echoed_or_generated(client: httpx.Client, ns: str) -> None:
    r = client.put(url(ns, "k"), json={}, headers={"X-Correlation-Id": "abc-123"})
    assert r.headers["x-correlation-id"] == "abc-123"
    generated = client.get(url(ns, "k")).headers["x-correlation-id"]
    assert uuid.UUID(generated)
    error = client.get(url(ns, "missing"), headers={"X-Correlation-Id": "err-1"})
    assert error.json()["correlation_id"] == "err-1"
    assert error.headers["content-type"] == "application/problem+json"


def test_actor_header_is_refused_unless_trusted(client: httpx.Client, ns: str) -> None:
    r = client.put(url(ns, "k"), json={}, headers={"X-Actor": "mallory"})
    assert r.status_code == 403 and r.json()["code"] == "untrusted_actor_header"
    assert r.json()["field"] == "X-Actor"
    assert client.get(url(ns, "k")).status_code == 404


def test_actor_header_is_recorded_when_trusted(database_url: str, ns: str) -> None:
    from tests.integration.conftest import RunningServer, make_settings

    with RunningServer(make_settings(database_url, trusted_proxies="user:admin")) as srv, \
            httpx.Client(headers=AUTH, base_url=srv.url) as c:
        c.put(url(ns, "k"), json={}, headers={"X-Actor": "alice@example.com"})
        c.put(url(ns, "k"), json={"x": 1})
        actors = [e["actor"] for e in c.get(url(ns, "k") + "/history").json()["items"]]
    assert actors == ["alice@example.com", "admin"]


def test_openapi_docs_are_served(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/namespaces/{namespace}/entries/{key}" in spec["paths"]


def test_health_reports_the_head_position(client: httpx.Client, ns: str) -> None:
    position = client.put(url(ns, "k"), json={}).json()["position"]
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["head_position"] >= position
