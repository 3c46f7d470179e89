"""Audit: what changed between any two versions or times."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonpatch

from tests.test_cli import ssot


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
