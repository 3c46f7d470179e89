"""Recovery as audited events: a revert is a new version, never a rewrite."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.integration.conftest import event_count
from tests.integration.test_cli import ssot


def test_revert_brings_back_a_past_content_as_a_new_version(client: httpx.Client,
                                                            ns: str) -> None:
    path = f"/v1/namespaces/{ns}/entries/cfg"
    v1 = client.put(path, json={"level": "info"}).json()
    client.put(path, json={"level": "debug"})
    r = client.post(path + "/revert", json={"to_version": 1, "reason": "bad rollout"})
    assert r.status_code == 200 and r.headers["etag"] == '"3"'
    assert r.json()["document"] == {"level": "info"} and r.json()["version"] == 3
    history = client.get(path + "/history").json()["items"]
    assert [e["event_type"] for e in history] == ["entry.created", "entry.updated",
                                                  "entry.restored"]
    assert history[2]["reason"] == "bad rollout"
    assert history[2]["patch"] == [{"op": "replace", "path": "/level", "value": "info"}]
    # deleted, then brought back by time
    client.delete(path)
    back = client.post(path + "/revert", json={"as_of": v1["recorded_at"]})
    assert back.status_code == 200 and back.json()["version"] == 5
    assert client.get(path).json()["document"] == {"level": "info"}


def test_a_revert_that_cannot_be_done_appends_nothing(client: httpx.Client, ns: str,
                                                      db: Any) -> None:
    path = f"/v1/namespaces/{ns}/entries/cfg"
    client.put(path, json={"a": 1})
    client.delete(path)
    before = event_count(db)
    cases = [
        ({"to_version": 2}, 422, "version_is_deletion"),
        ({"to_version": 9}, 404, "version_not_found"),
        ({}, 400, "invalid_parameter"),
        ({"to_version": 1, "as_of": "2026-01-01T00:00:00Z"}, 400, "invalid_parameter"),
        ({"to_version": "1"}, 400, "invalid_parameter"),
        ({"as_of": "2000-01-01T00:00:00Z"}, 404, "version_not_found"),
    ]
    for spec, status, code in cases:
        r = client.post(path + "/revert", json=spec)
        assert (r.status_code, r.json()["code"]) == (status, code), spec
    stale = client.post(path + "/revert", json={"to_version": 1}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert event_count(db) == before


def test_ssot_revert(api: Any, client: httpx.Client, ns: str) -> None:
    client.put(f"/v1/namespaces/{ns}/entries/k", json={"v": 1})
    client.put(f"/v1/namespaces/{ns}/entries/k", json={"v": 2})
    done = ssot(api, "--json", "revert", f"{ns}/k", "--to", "1", "--reason", "undo")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["document"] == {"v": 1}
