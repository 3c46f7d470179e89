"""A namespace's schema over HTTP: a versioned document with history and time travel,
enforced on every write path (nothing appended for a refused write), checked against the
data before it changes, shared definitions that never leave the ledger."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest

from tests.integration.conftest import event_count

ORDER = {
    "type": "object",
    "required": ["id", "total"],
    "properties": {"id": {"type": "string", "pattern": "^o-[0-9]+$"},
                   "total": {"type": "integer", "minimum": 0},
                   "note": {"type": "string"}},
    "not": {"required": ["note", "rush"]},  # a note and a rush flag never together
}
SCHEMA_JSON = {"Content-Type": "application/schema+json"}


def entry(ns: str, key: str) -> str:
    return f"/v1/namespaces/{ns}/entries/{key}"


def set_schema(client: httpx.Client, ns: str, schema: Any = ORDER, **params: Any
               ) -> httpx.Response:
    return client.put(f"/v1/namespaces/{ns}/schema", json=schema, params=params)


def refused(r: httpx.Response) -> list[tuple[str, str]]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "schema_violation", body
    for v in body["violations"]:
        assert set(v) == {"path", "schema_path", "keyword", "message"}
        assert v["message"].startswith("at ")
    return sorted((v["path"], v["keyword"]) for v in body["violations"])


def test_a_schema_is_a_versioned_document_with_history_and_time_travel(
        client: httpx.Client, ns: str) -> None:
    assert client.get(f"/v1/namespaces/{ns}/schema").json()["code"] == "schema_not_found"
    first = client.put(f"/v1/namespaces/{ns}/schema", content=b'{"type": "object"}',
                       headers={**SCHEMA_JSON, "X-Reason": "orders are objects"})
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1 and first.headers["etag"] == '"1"'
    time.sleep(0.01)  # a commit time strictly between the two versions
    between = client.get(f"/v1/namespaces/{ns}/schema").json()["recorded_at"]
    second = set_schema(client, ns)
    assert second.status_code == 200 and second.json()["version"] == 2, second.text
    now = client.get(f"/v1/namespaces/{ns}/schema").json()
    assert (now["version"], now["schema"], now["removed"]) == (2, ORDER, False)
    then = client.get(f"/v1/namespaces/{ns}/schema", params={"as_of": between}).json()
    assert (then["version"], then["schema"]) == (1, {"type": "object"})
    before = client.get(f"/v1/namespaces/{ns}/schema",
                        params={"as_of": "2000-01-01T00:00:00Z"})
    assert before.status_code == 404 and before.json()["code"] == "schema_not_found"
    assert client.get(f"/v1/namespaces/{ns}/schema", params={"version": 1}).json()[
        "schema"] == {"type": "object"}
    history = client.get(f"/v1/namespaces/{ns}/schema/history").json()["items"]
    assert [h["version"] for h in history] == [1, 2]
    assert history[0]["reason"] == "orders are objects"
    removed = client.delete(f"/v1/namespaces/{ns}/schema")
    assert removed.status_code == 200 and removed.json()["version"] == 3
    gone = client.get(f"/v1/namespaces/{ns}/schema")
    assert gone.status_code == 404 and gone.json()["removed_version"] == 3
    assert client.put(entry(ns, "free"), json={"anything": 1}).status_code == 201


@pytest.mark.parametrize(("schema", "field"), [
    ({"type": "objekt"}, "/type"),
    ({"properties": {"total": {"minimum": "zero"}}}, "/properties/total/minimum"),
    ({"properties": {"id": {"pattern": "(("}}}, "/properties/id/pattern"),
    ({"$schema": "http://json-schema.org/draft-07/schema#"}, "/$schema"),
    ({"$ref": "urn:ssot:schemas:nothing-here"}, "/$ref"),
])
def test_an_invalid_schema_is_refused_with_the_path_of_the_problem(
        client: httpx.Client, ns: str, db: Any, schema: Any, field: str) -> None:
    before = event_count(db)
    r = set_schema(client, ns, schema)
    assert r.status_code == 422 and r.json()["code"] == "invalid_schema", r.text
    assert r.json()["field"] == field
    assert event_count(db) == before


def test_every_write_path_refuses_a_violating_document_and_appends_nothing(
        client: httpx.Client, ns: str, db: Any) -> None:
    v1 = client.put(entry(ns, "o1"), json={"id": "o-1", "total": "12"}).json()  # history
    client.put(entry(ns, "o1"), json={"id": "o-1", "total": 12})
    assert set_schema(client, ns).status_code == 201
    before = event_count(db)
    assert refused(client.put(entry(ns, "o2"), json={"id": "x", "total": -1})) == [
        ("/id", "pattern"), ("/total", "minimum")]
    assert refused(client.patch(entry(ns, "o1"), json={"total": None},
                                headers={"Content-Type": "application/merge-patch+json"})
                   ) == [("", "required")]
    assert refused(client.patch(entry(ns, "o1"), json=[
        {"op": "replace", "path": "/total", "value": 1.5}],
        headers={"Content-Type": "application/json-patch+json"})) == [("/total", "type")]
    batch = client.post("/v1/batch", json={"operations": [
        {"op": "put", "namespace": ns, "key": "o3", "document": {"id": "o-3", "total": 1}},
        {"op": "patch", "namespace": ns, "key": "o1", "patch": {"id": "nope"}}]})
    assert refused(batch) == [("/id", "pattern")] and batch.json()["operation"] == 1
    assert refused(client.post(entry(ns, "o1") + "/revert", json={"to_version": 1})) == [
        ("/total", "type")]
    plan = client.post(f"/v1/namespaces/{ns}/restore", json={
        "position": v1["position"], "dry_run": True})
    assert plan.status_code == 200 and plan.json()["schema_violations"] == 1, plan.text
    assert plan.json()["operations"][0]["violations"][0]["keyword"] == "type"
    assert refused(client.post(f"/v1/namespaces/{ns}/restore", json={
        "position": v1["position"], "reason": "back"})) == [("/total", "type")]
    assert event_count(db) == before
    # history stays history: the old version reads as it was
    assert client.get(entry(ns, "o1"), params={"version": 1}).json()["document"] == {
        "id": "o-1", "total": "12"}


def test_a_merge_by_replay_that_makes_a_violating_document_is_refused(
        client: httpx.Client, ns: str, db: Any) -> None:
    client.put(entry(ns, "o1"), json={"id": "o-1", "total": 1})
    assert set_schema(client, ns).status_code == 201
    merge = {"Content-Type": "application/merge-patch+json"}
    assert client.patch(entry(ns, "o1"), json={"note": "fragile"},
                        headers={**merge, "If-Match": '"1"'}).status_code == 200
    before = event_count(db)
    # alone each is valid; rebased over the note, the rush flag makes both
    stale = client.patch(entry(ns, "o1"), json={"rush": True},
                         headers={**merge, "If-Match": '"1"'})
    assert refused(stale) == [("", "not")]
    assert event_count(db) == before


def test_a_schema_over_violating_data_is_refused_unless_allowed_and_then_counted(
        client: httpx.Client, ns: str, db: Any) -> None:
    client.put(entry(ns, "good"), json={"id": "o-1", "total": 1})
    for n in range(3):
        client.put(entry(ns, f"bad{n}"), json={"id": f"bad-{n}", "total": 1})
    dry = set_schema(client, ns, dry_run="true", limit=2)
    assert dry.status_code == 200, dry.text
    report = dry.json()
    assert (report["entries"], report["conforming"], report["violating"]) == (4, 1, 3)
    assert [v["key"] for v in report["violations"]] == ["bad0", "bad1"]
    assert report["violations"][0]["violations"][0]["path"] == "/id"
    rest = set_schema(client, ns, dry_run="true", limit=2, cursor=report["next_cursor"])
    assert [v["key"] for v in rest.json()["violations"]] == ["bad2"]
    before = event_count(db)
    r = set_schema(client, ns)
    assert r.status_code == 409 and r.json()["code"] == "schema_violations", r.text
    assert r.json()["violating"] == 3 and event_count(db) == before
    allowed = set_schema(client, ns, allow_existing_violations="true")
    assert allowed.status_code == 201, allowed.text
    assert allowed.json()["check"]["violating"] == 3
    recorded = client.get(f"/v1/namespaces/{ns}/schema").json()
    assert recorded["allow_existing_violations"] is True


def test_a_dry_run_while_writers_change_the_namespace_is_exact_as_of_its_position(
        client: httpx.Client, api: Any, ns: str) -> None:
    for n in range(300):
        client.put(entry(ns, f"k{n:03}"), json={"id": f"o-{n}", "total": n})
    stop = threading.Event()

    def writer() -> None:
        with httpx.Client(base_url=api.url, headers=client.headers, timeout=30) as c:
            n = 0
            while not stop.is_set():
                c.put(entry(ns, f"k{n % 300:03}"), json={"id": "broken", "total": n})
                c.put(entry(ns, f"new{n}"), json={"id": f"o-{n}", "total": n})
                n += 1

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        reports = [set_schema(client, ns, dry_run="true", limit=1000).json()
                   for _ in range(3)]
    finally:
        stop.set()
        for t in threads:
            t.join()
    for report in reports:
        at = report["checked_position"]
        cut = client.get(f"/v1/namespaces/{ns}/entries", params={"position": at,
                                                                 "limit": 1000}).json()
        documents = {e["key"]: e["document"] for e in cut["items"]}
        assert report["entries"] == len(documents)
        assert sorted(v["key"] for v in report["violations"]) == sorted(
            k for k, d in documents.items() if d["id"] == "broken")


class _Recording(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"type": "string"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def schema_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_ref_is_refused_and_never_fetched(client: httpx.Client, ns: str,
                                                   schema_server: str) -> None:
    _Recording.hits.clear()
    for schema in ({"$ref": f"{schema_server}/money.json"},
                   {"properties": {"a": {"$ref": f"{schema_server}/a.json#/x"}}},
                   {"$id": f"{schema_server}/root.json", "$ref": "money.json"}):
        r = set_schema(client, ns, schema)
        assert r.status_code == 422 and r.json()["code"] == "invalid_schema", r.text
        assert "never fetches" in r.json()["detail"]
    for name in ("money", "money-remote"):
        shared = client.put(f"/v1/schemas/{name}", json={"$ref": f"{schema_server}/x"})
        assert shared.status_code == 422
    assert _Recording.hits == []


def test_shared_definitions_are_pinned_at_the_version_a_schema_was_set_with(
        client: httpx.Client, ns: str) -> None:
    name = f"money-{ns}"
    first = client.put(f"/v1/schemas/{name}", json={"type": "integer", "minimum": 0})
    assert first.status_code == 201, first.text
    schema = {"type": "object", "properties": {
        "total": {"$ref": f"urn:ssot:schemas:{name}"}}}
    set_ = set_schema(client, ns, schema)
    assert set_.status_code == 201 and set_.json()["definitions"] == {name: 1}, set_.text
    assert client.put(f"/v1/schemas/{name}", json={"type": "string"}).json()["version"] == 2
    assert client.put(entry(ns, "a"), json={"total": 5}).status_code == 201
    assert refused(client.put(entry(ns, "b"), json={"total": -5})) == [("/total", "minimum")]
    assert client.get(f"/v1/schemas/{name}", params={"version": 1}).json()["schema"] == {
        "type": "integer", "minimum": 0}
    assert [h["version"] for h in client.get(f"/v1/schemas/{name}/history").json()[
        "items"]] == [1, 2]
    check = client.post(f"/v1/namespaces/{ns}/schema/validate", json={"total": "5"})
    assert check.json()["valid"] is False and check.json()["schema_version"] == 1


def test_format_asserts_only_when_the_namespace_says_so(client: httpx.Client,
                                                        ns: str) -> None:
    schema = {"properties": {"day": {"type": "string", "format": "date"}}}
    assert set_schema(client, ns, schema).status_code == 201
    assert client.put(entry(ns, "a"), json={"day": "someday"}).status_code == 201
    assert client.put(f"/v1/namespaces/{ns}", json={"schema_format": "assert"}
                      ).status_code == 201
    assert refused(client.put(entry(ns, "b"), json={"day": "someday"})) == [
        ("/day", "format")]
    assert client.put(entry(ns, "b"), json={"day": "2026-12-03"}).status_code == 201


def quality_at(client: httpx.Client, ns: str, position: int, **params: Any) -> Any:
    deadline = time.monotonic() + 60
    while True:
        r = client.get(f"/v1/namespaces/{ns}/quality",
                       params={"min_position": position, **params})
        if r.status_code == 200 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return r.json()


def test_the_quality_view_counts_what_violates_the_current_schema(
        client: httpx.Client, ns: str, views: Any) -> None:
    client.put(entry(ns, "good"), json={"id": "o-1", "total": 1})
    for n in range(3):
        client.put(entry(ns, f"bad{n}"), json={"id": f"bad-{n}", "total": 1})
    put = set_schema(client, ns, allow_existing_violations="true")
    assert put.status_code == 201, put.text
    refused(client.put(entry(ns, "worse"), json={"id": "x"}))
    fixed = client.put(entry(ns, "bad0"), json={"id": "o-2", "total": 2}).json()
    body = quality_at(client, ns, fixed["position"], limit=1)
    assert (body["entries"], body["conforming"], body["violating"]) == (4, 2, 2)
    assert body["conforming_percent"] == 50.0 and body["schema_version"] == 1
    assert body["allow_existing_violations"] is True
    assert [v["key"] for v in body["violations"]] == ["bad1"] and body["next_cursor"]
    assert body["violations"][0]["violations"][0]["path"] == "/id"
    assert body["validated_position"] >= fixed["position"]
    deadline = time.monotonic() + 20  # the refusal is counted in the background
    while quality_at(client, ns, 0)["refused_writes"]["last_hour"] < 1:
        assert time.monotonic() < deadline, "the refused write was not counted"
        time.sleep(0.05)
    staleness = body["staleness"]
    assert staleness["stale_entries"] == 0 and staleness["max_seconds"] >= 0
    assert quality_at(client, ns, fixed["position"], stale_days=0)["staleness"][
        "stale_entries"] == 4
    # a schema change re-validates the whole namespace in the background
    looser = client.put(f"/v1/namespaces/{ns}/schema", json={"type": "object"}).json()
    after = quality_at(client, ns, looser["position"])
    assert (after["violating"], after["schema_version"]) == (0, 2)
    health = client.get("/v1/health").json()
    assert "namespaces with a schema" in health["schemas"]


def test_changing_a_schema_takes_admin_like_settings_and_reading_it_read(
        client: httpx.Client, api: Any, ns: str) -> None:
    from tests.integration.test_access import as_, make_token, set_policy

    token = make_token(client, f"writer-{ns}")
    set_policy(client, f"s-{ns}", {"effect": "allow", "subjects": [f"user:writer-{ns}"],
                                   "actions": ["read", "write", "history"],
                                   "namespaces": [ns]})
    assert set_schema(client, ns, {"type": "object"}).status_code == 201
    with as_(api, token) as writer:
        refused_ = writer.put(f"/v1/namespaces/{ns}/schema", json=ORDER)
        assert refused_.status_code == 403 and refused_.json()["code"] == "forbidden"
        dry = writer.put(f"/v1/namespaces/{ns}/schema", json=ORDER, params={"dry_run": "true"})
        assert dry.status_code == 403
        assert writer.delete(f"/v1/namespaces/{ns}/schema").status_code == 403
        # an admin of the system's: to one who may not even read it, as if not there
        assert writer.put(f"/v1/schemas/shared-{ns}", json={}).status_code == 404
        assert writer.get(f"/v1/namespaces/{ns}/schema").json()["version"] == 1
        assert writer.get(f"/v1/namespaces/{ns}/schema/history").status_code == 200
        other = writer.get(f"/v1/namespaces/{ns}-other/schema")
        assert other.status_code == 404
