"""Optimistic concurrency under contention: no lost update, contiguous versions."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tests.integration.conftest import AUTH

THREADS = 16
SECONDS = 3.0


def test_sixteen_read_modify_write_clients_lose_no_update(
    api: Any, ns: str
) -> None:
    path = f"/v1/namespaces/{ns}/entries/counter"
    with httpx.Client(headers=AUTH, base_url=api.url) as c:
        # strict: every stale If-Match is a 412 (merging is tested in test_conflicts)
        assert c.put(f"/v1/namespaces/{ns}", json={"conflict_policy": "strict"}
                     ).status_code == 201
        assert c.put(path, json={"writer": None, "n": 0}).status_code == 201
    accepted: list[tuple[int, dict[str, Any]]] = []
    rejected: list[int] = []
    unexpected: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def client(worker: int) -> None:
        n = 0
        with httpx.Client(headers=AUTH, base_url=api.url, timeout=30) as c:
            while time.monotonic() < deadline:
                current = c.get(path)
                version = int(current.headers["etag"].strip('"'))
                n += 1
                doc = {"writer": worker, "n": n, "based_on": version}
                r = c.put(path, json=doc, headers={"If-Match": f'"{version}"'})
                with lock:
                    if r.status_code == 200:
                        accepted.append((r.json()["version"], doc))
                    elif r.status_code == 412:
                        rejected.append(version)
                    else:
                        unexpected.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert unexpected == []
    assert accepted and rejected, "the test must see both successes and conflicts"
    with httpx.Client(headers=AUTH, base_url=api.url) as c:
        history: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = c.get(path + "/history", params={"limit": 1000, **(
                {"cursor": cursor} if cursor else {})}).json()
            history += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    versions = [e["version"] for e in history]
    assert versions == list(range(1, len(history) + 1))  # contiguous 1..N
    assert len(history) == 1 + len(accepted)
    by_version = {e["version"]: e["document"] for e in history}
    for version, doc in accepted:  # every accepted write is exactly that version's content
        assert by_version[version] == doc
        assert doc["based_on"] == version - 1  # and was based on the version before it
    contents = [tuple(sorted(e["document"].items())) for e in history[1:]]
    assert len(set(contents)) == len(contents)  # no content recorded twice
