"""Identity and access through the HTTP API: tokens made, used and revoked; a policy
enforced on entries, listings, feeds, batches and restores; what a refusal tells."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.conftest import AUTH, RunningServer, make_settings


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_token(admin: httpx.Client, subject: str, *groups: str, **extra: Any) -> str:
    r = admin.post("/v1/access/tokens", json={"subject": subject, "groups": list(groups),
                                               "expires_in": 3600, **extra})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) >= {"id", "token", "expires_at"} and "hash" not in body
    token: str = body["token"]
    return token


def set_policy(admin: httpx.Client, name: str, *rules: dict[str, Any]) -> None:
    r = admin.put(f"/v1/access/policies/{name}", json={"rules": list(rules)})
    assert r.status_code in (200, 201), r.text


@pytest.fixture()
def admin(api: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(headers=AUTH, base_url=api.url, timeout=30) as c:
        yield c


def as_(api: RunningServer, token: str) -> httpx.Client:
    return httpx.Client(headers=bearer(token), base_url=api.url, timeout=30)


def entry(ns: str, key: str) -> str:
    return f"/v1/namespaces/{ns}/entries/{key}"


def test_no_token_no_access_and_health_stays_open(api: RunningServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as anonymous:
        r = anonymous.get("/v1/namespaces")
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/v1/health").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        for header in ("Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer garbage",
                       "Bearer ssot_0000000000000000_" + "A" * 43):
            r = anonymous.get("/v1/namespaces", headers={"Authorization": header})
            assert r.status_code == 401, header


def test_a_token_acts_within_its_policy_and_the_events_say_who(
        api: RunningServer, admin: httpx.Client, ns: str) -> None:
    subject = f"alice-{ns}"
    token = make_token(admin, subject, f"team-{ns}")
    set_policy(admin, f"p-{ns}", {"effect": "allow", "subjects": [f"group:team-{ns}"],
                                  "actions": ["read", "write", "history"],
                                  "namespaces": [ns], "keys": ["services/**"]})
    admin.put(entry(ns, "secret/x"), json={"s": 1})
    with as_(api, token) as alice:
        r = alice.put(entry(ns, "services/a"), json={"v": 1})
        assert r.status_code == 201, r.text
        history = alice.get(entry(ns, "services/a") + "/history").json()["items"]
        assert history[0]["actor"] == subject
        assert alice.get(entry(ns, "secret/x")).status_code == 404  # hidden, not 403
        r = alice.put(entry(ns, "secret/x"), json={"s": 2})
        assert r.status_code == 404 and r.json()["code"] == "entry_not_found"
        r = alice.delete(entry(ns, "services/a"))  # may read it, may not delete it
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        assert r.json()["action"] == "delete"
        me = alice.get("/v1/access/whoami", params={"namespace": ns}).json()
        assert me["subject"] == subject and me["method"] == "token"
        assert me["actions"]["write"] == "some" and me["actions"]["delete"] == "none"
        why = alice.get("/v1/access/explain", params={
            "action": "write", "namespace": ns, "key": "secret/x"}).json()
        assert why["decision"] == "deny" and why["by"] == "default"
    assert admin.get(entry(ns, "secret/x")).json()["document"] == {"s": 1}


def test_listings_and_feeds_show_only_what_may_be_read(
        api: RunningServer, admin: httpx.Client, ns: str) -> None:
    token = make_token(admin, f"lister-{ns}")
    set_policy(admin, f"l-{ns}", {"effect": "allow", "subjects": [f"user:lister-{ns}"],
                                  "actions": ["read", "history"], "namespaces": [ns],
                                  "keys": ["services/**"]})
    for key in ("a/x", "services/1", "services/2", "services/3", "z/hidden"):
        admin.put(entry(ns, key), json={"k": key})
    with as_(api, token) as lister:
        pages: list[str] = []
        cursor = None
        while True:
            body = lister.get(f"/v1/namespaces/{ns}/entries",
                              params={"limit": 1, **({"cursor": cursor} if cursor else {})}
                              ).json()
            pages += [e["key"] for e in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert pages == ["services/1", "services/2", "services/3"]
        listed = [n for n in lister.get("/v1/namespaces", params={"limit": 1000}).json()[
            "items"] if n["namespace"] == ns]
        assert listed == [{"namespace": ns, "entries": None, "deleted": None,
                           "last_position": None, "last_recorded_at": None}]
        assert lister.get(f"/v1/namespaces/{ns}").json()["entries"] is None
        assert lister.get(f"/v1/namespaces/{ns}/stats").status_code == 404
        events = lister.get("/v1/events", params={"namespace": ns}).json()["items"]
        assert sorted(e["subject"] for e in events) == ["services/1", "services/2",
                                                         "services/3"]
        audit = lister.get("/v1/audit", params={"namespace": ns}).json()["items"]
        assert {e["key"] for e in audit} == {"services/1", "services/2", "services/3"}


def test_a_batch_or_restore_touching_one_forbidden_key_writes_nothing(
        api: RunningServer, admin: httpx.Client, ns: str) -> None:
    token = make_token(admin, f"batcher-{ns}")
    set_policy(admin, f"b-{ns}", {"effect": "allow", "subjects": [f"user:batcher-{ns}"],
                                  "actions": ["read", "write", "restore"], "namespaces": [ns],
                                  "keys": ["ok/**"]})
    position = admin.put(entry(ns, "ok/a"), json={"v": 1}).json()["position"]
    admin.put(entry(ns, "locked/b"), json={"v": 1})
    admin.put(entry(ns, "locked/b"), json={"v": 2})
    with as_(api, token) as batcher:
        r = batcher.post("/v1/batch", json={"operations": [
            {"op": "put", "namespace": ns, "key": "ok/c", "document": {}},
            {"op": "put", "namespace": ns, "key": "locked/b", "document": {}}]})
        assert r.status_code == 404 and r.json()["operation"] == 1
        assert admin.get(entry(ns, "ok/c")).status_code == 404
        r = batcher.post(f"/v1/namespaces/{ns}/restore",
                         json={"position": position, "reason": "undo", "dry_run": True})
        assert r.status_code == 403 and "locked" not in r.text
    assert admin.get(entry(ns, "locked/b")).json()["version"] == 2


def test_policy_and_token_changes_need_admin(api: RunningServer, admin: httpx.Client,
                                             ns: str) -> None:
    token = make_token(admin, f"climber-{ns}")
    with as_(api, token) as climber:
        r = climber.put(f"/v1/access/policies/mine-{ns}", json={"rules": [
            {"effect": "allow", "subjects": ["*"], "actions": ["*"], "namespaces": ["*"]}]})
        assert r.status_code in (403, 404)
        r = climber.post("/v1/access/tokens", json={"subject": "admin", "groups": ["admins"],
                                                    "expires_in": 60})
        assert r.status_code in (403, 404)
        r = climber.post("/v1/access/tokens", json={"subject": f"climber-{ns}",
                                                    "groups": ["admins"], "expires_in": 60})
        assert r.status_code in (403, 404)
        own = climber.post("/v1/access/tokens", json={"subject": f"climber-{ns}",
                                                      "expires_in": 60})
        assert own.status_code == 201
        mine = [t["id"] for t in climber.get("/v1/access/tokens").json()["items"]]
        assert sorted(mine) == sorted([own.json()["id"], token.split("_")[1]])
    assert admin.get(f"/v1/access/policies/mine-{ns}").status_code == 404


def test_a_revoked_token_is_refused_within_a_second_even_on_an_open_stream(
        database_url: str, ns: str) -> None:
    with RunningServer(make_settings(database_url)) as server, \
            httpx.Client(headers=AUTH, base_url=server.url, timeout=30) as admin:
        made = admin.post("/v1/access/tokens", json={
            "subject": f"watcher-{ns}", "expires_in": 600}).json()
        set_policy(admin, f"w-{ns}", {"effect": "allow", "subjects": [f"user:watcher-{ns}"],
                                      "actions": ["read"], "namespaces": [ns]})
        admin.put(entry(ns, "k"), json={"v": 0})
        lines: list[str] = []
        ended = threading.Event()

        def watch() -> None:
            with httpx.Client(base_url=server.url, timeout=30,
                              headers=bearer(made["token"])) as c, \
                    c.stream("GET", "/v1/events/stream", params={"after": 0,
                                                                  "namespace": ns}) as r:
                for line in r.iter_lines():
                    lines.append(line)
            ended.set()

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not any(x.startswith("data:") for x in lines) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(x.startswith("data:") for x in lines)
        assert admin.delete(f"/v1/access/tokens/{made['id']}").status_code == 200
        admin.put(entry(ns, "k"), json={"v": 1})  # committed after the revocation
        assert ended.wait(10), "the stream of a revoked token did not end"
        assert sum(x.startswith("data:") for x in lines) == 1  # nothing after revocation
        r = httpx.get(server.url + entry(ns, "k"), headers=bearer(made["token"]))
        assert r.status_code == 401


def test_a_write_only_caller_does_not_read_through_its_answers(
        api: RunningServer, admin: httpx.Client, ns: str) -> None:
    token = make_token(admin, f"blind-{ns}")
    set_policy(admin, f"blind-{ns}", {"effect": "allow", "subjects": [f"user:blind-{ns}"],
                                      "actions": ["write"], "namespaces": [ns]})
    admin.put(entry(ns, "k"), json={"theirs": "secret"})
    with as_(api, token) as blind:
        r = blind.patch(entry(ns, "k"), json={"mine": 1},
                        headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text
        assert r.json()["document"] is None and r.json()["document_hidden"] is True
        assert blind.get(entry(ns, "k")).status_code == 404
    assert admin.get(entry(ns, "k")).json()["document"] == {"theirs": "secret", "mine": 1}


def test_a_token_and_a_policy_made_through_one_worker_work_at_once_on_another(
        api: RunningServer, admin: httpx.Client, ns: str) -> None:
    """Workers re-read ``_access`` every access_refresh_seconds; a refusal is decided on
    fresh state, so a caller is never turned away by a worker that has not re-read yet.
    The second worker here has stopped re-reading on its own."""
    stale = make_settings(api.settings.database_url, writer_socket=api.settings.writer_socket)
    with RunningServer(stale) as other:
        access = other.app.state.service.access
        asyncio.run_coroutine_threadsafe(access.stop(), access.loop).result(10)
        token = make_token(admin, f"ci-{ns}", f"deployers-{ns}")  # made through `api`
        with as_(other, token) as ci:
            r = ci.put(entry(ns, "features/checkout"), json={"new_ui": False})
            assert r.status_code == 404, r.text  # known at once, and no policy yet
            set_policy(admin, f"deployers-{ns}",
                       {"effect": "allow", "subjects": [f"group:deployers-{ns}"],
                        "actions": ["read", "write"], "namespaces": [ns],
                        "keys": ["features/**"]})
            r = ci.put(entry(ns, "features/checkout"), json={"new_ui": False})
            assert r.status_code == 201, r.text  # the policy, at once
            assert ci.get(entry(ns, "services/db")).status_code == 404  # still refused


def test_a_token_that_cannot_be_checked_while_the_store_is_away_is_a_503_not_a_fault(
        api: RunningServer, admin: httpx.Client, ns: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A token a worker does not know is looked up in the store before it is refused; when
    the store does not answer (a restart, a pool timing out), the caller is told to retry
    (503, as any request that needs the store then), not handed a 500, and the store's
    error is not told to a caller who is not authenticated."""
    access = api.app.state.service.access

    async def store_away(unless_read_since: float | None = None) -> bool:
        raise psycopg.errors.AdminShutdown(
            "terminating connection due to administrator command (host=10.1.2.3)")

    token = "ssot_0000000000000000_" + "A" * 43  # well formed, known nowhere
    monkeypatch.setattr(access, "refresh", store_away)
    with as_(api, token) as caller:
        r = caller.put(entry(ns, "k"), json={"v": 1})
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["code"] == "store_unavailable" and r.headers["retry-after"] == "1"
        assert "10.1.2.3" not in r.text and "administrator" not in r.text
        monkeypatch.undo()  # the store answers again: the unknown token is refused
        r = caller.put(entry(ns, "k"), json={"v": 1})
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    assert admin.get(entry(ns, "k")).status_code == 404  # nothing was written


def test_removing_a_policy_that_does_not_exist_says_so_as_a_policy(
        admin: httpx.Client, ns: str) -> None:
    r = admin.delete(f"/v1/access/policies/nothing-{ns}")
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "policy_not_found" and "_access" not in r.text


def test_an_idle_worker_stops_checking_and_reads_before_its_next_request(
        api: RunningServer, admin: httpx.Client, ns: str) -> None:
    """A worker checks ``_access`` only while requests come; the first request after an
    idle spell is decided on state read then: a revocation made meanwhile through another
    worker holds at once."""
    with RunningServer(make_settings(api.settings.database_url,
                                     writer_socket=api.settings.writer_socket)) as other:
        access = other.app.state.service.access
        made = admin.post("/v1/access/tokens", json={
            "subject": f"idler-{ns}", "expires_in": 600}).json()
        with httpx.Client(base_url=other.url, timeout=30,
                          headers=bearer(made["token"])) as idler:
            assert idler.get(entry(ns, "k")).status_code == 404  # known, allowed nothing
            assert access.polling
            deadline = time.monotonic() + 30
            # no request: it stops checking, and what it read grows old
            while access.polling or time.monotonic() - access.read_at <= access.refresh_seconds:
                assert time.monotonic() < deadline, "the idle worker kept checking"
                time.sleep(0.05)
            read_at = access.read_at
            assert admin.delete(f"/v1/access/tokens/{made['id']}").status_code == 200
            r = idler.get(entry(ns, "k"))
            assert r.status_code == 401 and "revoked" in r.json()["detail"], r.text
            assert access.read_at > read_at
