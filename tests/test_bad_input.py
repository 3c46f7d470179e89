"""Bad input gets its documented 4xx, a problem+json body naming the field, and appends
nothing (the event count is unchanged)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import event_count

DEEP = b'{"a":' * 9 + b"1" + b"}" * 9  # deeper than the suite's max_depth of 8
BIG = b'{"blob":"' + b"x" * (70 * 1024) + b'"}'  # over the suite's 64 KiB document limit
HUGE = b'{"blob":"' + b"x" * (400 * 1024) + b'"}'  # over the request body limit
JSON = "application/json"

CASES: list[tuple[str, str, str, dict[str, str], bytes, int, str, str | None]] = [
    # id, method, key, headers, body, status, code, field
    ("malformed json", "PUT", "k", {"Content-Type": JSON}, b'{"a": ', 400, "malformed_json",
     "document"),
    ("empty body", "PUT", "k", {"Content-Type": JSON}, b"", 400, "malformed_json", "document"),
    ("wrong content type", "PUT", "k", {"Content-Type": "text/plain"}, b"{}", 415,
     "unsupported_media_type", "Content-Type"),
    ("patch as plain json", "PATCH", "k", {"Content-Type": JSON}, b"{}", 415,
     "unsupported_media_type", "Content-Type"),
    ("oversize document", "PUT", "k", {"Content-Type": JSON}, BIG, 413, "document_too_large",
     "document"),
    ("oversize request body", "PUT", "k", {"Content-Type": JSON}, HUGE, 413,
     "request_too_large", "body"),
    ("too deep", "PUT", "k", {"Content-Type": JSON}, DEEP, 400, "document_too_deep", "document"),
    ("array document", "PUT", "k", {"Content-Type": JSON}, b"[1,2]", 400, "document_not_object",
     "document"),
    ("invalid key", "PUT", "a//b", {"Content-Type": JSON}, b"{}", 400, "invalid_key", "key"),
    ("dot-dot key", "PUT", "a/%2E%2E/b", {"Content-Type": JSON}, b"{}", 400, "invalid_key", "key"),
    ("reserved key segment", "PUT", "a/history", {"Content-Type": JSON}, b"{}", 400,
     "invalid_key", "key"),
    ("stale If-Match", "PUT", "k", {"Content-Type": JSON, "If-Match": '"9"'}, b"{}", 412,
     "version_conflict", "If-Match"),
    ("unparseable If-Match", "PUT", "k", {"Content-Type": JSON, "If-Match": "version-1"}, b"{}",
     400, "invalid_precondition", "If-Match"),
    ("If-None-Match with a tag", "PUT", "k", {"Content-Type": JSON, "If-None-Match": '"1"'},
     b"{}", 400, "invalid_precondition", "If-None-Match"),
    ("json patch not an array", "PATCH", "k", {"Content-Type": "application/json-patch+json"},
     b'{"op":"add"}', 400, "invalid_patch", "patch"),
    ("unknown patch op", "PATCH", "k", {"Content-Type": "application/json-patch+json"},
     b'[{"op":"append","path":"/a","value":"x"}]', 400, "invalid_patch", "patch[0].op"),
    ("patch op without value", "PATCH", "k", {"Content-Type": "application/json-patch+json"},
     b'[{"op":"add","path":"/a"}]', 400, "invalid_patch", "patch[0].value"),
    ("failing test op", "PATCH", "k", {"Content-Type": "application/json-patch+json"},
     b'[{"op":"test","path":"/a","value":1},{"op":"test","path":"/a","value":2}]', 422,
     "patch_test_failed", "patch[1]"),
    ("merge patch making a non-object", "PATCH", "k",
     {"Content-Type": "application/merge-patch+json"}, b"[1]", 400, "document_not_object",
     "document"),
    ("bad idempotency key", "PUT", "k", {"Content-Type": JSON, "Idempotency-Key": "a b"}, b"{}",
     400, "invalid_idempotency_key", "Idempotency-Key"),
    ("patch of a missing entry", "PATCH", "missing",
     {"Content-Type": "application/merge-patch+json"}, b"{}", 404, "entry_not_found", "key"),
    ("bad limit", "GET", "", {}, b"", 400, "invalid_parameter", "limit"),
]


@pytest.mark.parametrize(
    ("method", "key", "headers", "body", "status", "code", "field"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_input_is_refused_precisely_and_appends_nothing(
    client: httpx.Client, ns: str, db: Any, method: str, key: str, headers: dict[str, str],
    body: bytes, status: int, code: str, field: str | None,
) -> None:
    client.put(f"/v1/namespaces/{ns}/entries/k", json={"a": 1})
    before = event_count(db)
    path = f"/v1/namespaces/{ns}/entries/{key}" if key else f"/v1/namespaces/{ns}/entries"
    params = {"limit": "zero"} if code == "invalid_parameter" else None
    r = client.request(method, path, headers=headers, content=body, params=params)
    assert r.status_code == status, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem.get("field") == field
    assert problem["detail"] and problem["correlation_id"] == r.headers["x-correlation-id"]
    assert event_count(db) == before
    assert client.get(f"/v1/namespaces/{ns}/entries/k").json()["document"] == {"a": 1}


def test_invalid_namespace_is_refused(client: httpx.Client, db: Any) -> None:
    before = event_count(db)
    r = client.put("/v1/namespaces/Bad.NS/entries/k", json={})
    assert r.status_code == 400 and r.json()["code"] == "invalid_namespace"
    assert r.json()["field"] == "namespace"
    assert event_count(db) == before


def test_idempotency_key_reused_with_another_body_is_422(
    client: httpx.Client, ns: str, db: Any
) -> None:
    h = {"Idempotency-Key": f"reuse-{ns}"}
    client.put(f"/v1/namespaces/{ns}/entries/k", json={"a": 1}, headers=h)
    before = event_count(db)
    r = client.put(f"/v1/namespaces/{ns}/entries/k", json={"a": 2}, headers=h)
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    assert r.json()["field"] == "Idempotency-Key"
    assert event_count(db) == before
