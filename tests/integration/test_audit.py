"""Audit: what changed between any two versions or times."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonpatch

from tests.integration.test_cli import ssot


def test_diff_between_versions_is_a_patch_that_applies(client: httpx.Client, ns: str) -> None:
    path = f"/v1/namespaces/{ns}/entries/svc"
    docs = [{"url": "pg://a", "pool": 5}, {"url": "pg://b", "pool": 5},
            {"url": "pg://b", "pool": 9, "ssl": True}]
    written = [client.put(path, json=d).json() for d in docs]
    r = client.get(path + "/diff", params={"from": 1, "to": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["from"] == {"version": 1, "position": written[0]["position"]}
    assert body["to"] == {"version": 3, "position": written[2]["position"]}
    assert jsonpatch.apply_patch(docs[0], body["patch"]) == docs[2]
    created = client.get(path + "/diff", params={"from": 0, "to": 1}).json()
    assert created["patch"] == [{"op": "add", "path": "", "value": docs[0]}]
    by_time = client.get(path + "/diff", params={"from_as_of": written[0]["recorded_at"],
                                                 "to_as_of": written[1]["recorded_at"]}).json()
    assert by_time["patch"] == [{"op": "replace", "path": "/url", "value": "pg://b"}]
    text = client.get(path + "/diff", params={"from": 1, "to": 2, "format": "text"})
    assert text.headers["content-type"].startswith("text/plain")
    assert '-  "url": "pg://a"' in text.text and '+  "url": "pg://b"' in text.text
    missing = client.get(path + "/diff", params={"from": 1, "to": 9})
    assert missing.status_code == 404 and missing.json()["field"] == "to"


def test_ssot_diff_prints_a_line_diff_or_the_patch(api: Any, client: httpx.Client,
                                                   ns: str) -> None:
    client.put(f"/v1/namespaces/{ns}/entries/k", json={"level": "info"})
    client.put(f"/v1/namespaces/{ns}/entries/k", json={"level": "debug"})
    text = ssot(api, "diff", f"{ns}/k", "1", "2")
    assert text.returncode == 0
    assert '-  "level": "info"' in text.stdout and '+  "level": "debug"' in text.stdout
    patch = json.loads(ssot(api, "--json", "diff", f"{ns}/k", "1", "2").stdout)["patch"]
    assert patch == [{"op": "replace", "path": "/level", "value": "debug"}]


def test_the_audit_trail_filters_pages_and_exports(client: httpx.Client, ns: str) -> None:
    other = f"{ns}o"
    client.put(f"/v1/namespaces/{ns}/entries/svc/a", json={"v": 1},
               headers={"X-Correlation-Id": "deploy-1", "X-Reason": "rollout"})
    client.put(f"/v1/namespaces/{ns}/entries/svc/b", json={"v": 1},
               headers={"X-Correlation-Id": "deploy-1"})
    client.put(f"/v1/namespaces/{ns}/entries/db", json={"v": 1})
    client.delete(f"/v1/namespaces/{ns}/entries/svc/a")
    client.put(f"/v1/namespaces/{other}/entries/x", json={})

    def trail(**params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {**params, "limit": 1}
        while True:
            page = client.get("/v1/audit", params=query).json()
            items += page["items"]
            if page["next_cursor"] is None:
                return items
            query = {**params, "limit": 1, "cursor": page["next_cursor"]}

    everything = trail(namespace=ns)
    assert [e["key"] for e in everything] == ["svc/a", "svc/b", "db", "svc/a"]
    positions = [e["position"] for e in everything]
    assert positions == sorted(positions)
    assert [e["key"] for e in trail(correlation_id="deploy-1")] == ["svc/a", "svc/b"]
    assert [e["version"] for e in trail(namespace=ns, type="entry.deleted")] == [2]
    assert len(trail(namespace=ns, key_prefix="svc/")) == 3
    assert all(e["actor"] == "admin" for e in trail(namespace=ns, actor="admin"))
    since = trail(namespace=ns, since=everything[2]["recorded_at"])
    assert [e["key"] for e in since] == ["svc/a"]  # strictly after that moment
    until = trail(namespace=ns, until=everything[1]["recorded_at"])
    assert [e["key"] for e in until] == ["svc/a", "svc/b"]

    csv_text = client.get("/v1/audit", params={"namespace": ns},
                          headers={"Accept": "text/csv"}).text.splitlines()
    assert csv_text[0].startswith("position,recorded_at,namespace,key,version,event_type")
    assert len(csv_text) == 5 and ",rollout," in csv_text[1]
    ndjson = client.get("/v1/audit", params={"namespace": ns},
                        headers={"Accept": "application/x-ndjson"}).text.splitlines()
    rows = [json.loads(line) for line in ndjson]
    assert [r["key"] for r in rows] == ["svc/a", "svc/b", "db", "svc/a"]
    assert rows[3]["patch"] == [{"op": "replace", "path": "", "value": None}]
    bad = client.get("/v1/audit", params={"type": "entry.exploded"})
    assert bad.status_code == 400 and bad.json()["field"] == "type"


def test_ssot_audit_writes_csv(api: Any, client: httpx.Client, ns: str) -> None:
    client.put(f"/v1/namespaces/{ns}/entries/k", json={}, headers={"X-Reason": "why not"})
    done = ssot(api, "audit", "--namespace", ns, "--format", "csv")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith("position,") and "why not" in lines[1]
