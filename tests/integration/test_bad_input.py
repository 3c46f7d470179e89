"""Bad input gets its documented 4xx, a problem+json body naming the field, and appends
nothing (the event count is unchanged). The table of inputs is tests/bad_inputs.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.bad_inputs import CASES, Bad
from tests.integration.conftest import event_count


def test_the_table_is_at_least_a_hundred_distinct_inputs() -> None:
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_precisely_and_appends_nothing(
    client: httpx.Client, ns: str, db: Any, case: Bad
) -> None:
    client.put(f"/v1/namespaces/{ns}/entries/k", json={"a": 1}).raise_for_status()
    client.put(f"/v1/namespaces/{ns}", json={"description": "the test's"}).raise_for_status()
    before = event_count(db)
    r = client.request(case.method, case.path.replace("{ns}", ns), headers=case.headers,
                       content=case.body.replace(b"{ns}", ns.encode()), params=case.params)
    assert r.status_code == case.status, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["code"] == case.code, problem
    assert problem["status"] == case.status
    assert problem.get("field") == case.field, problem
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


def test_an_oversized_value_is_quoted_once_and_capped(client: httpx.Client, ns: str) -> None:
    """An error names what was refused, but a 12,000 character key is not sent back whole
    (nor twice: in ``detail`` and again as the ``instance`` path)."""
    key, namespace = "k" * 12_000, "n" * 12_000
    for path, code, value in ((f"/v1/namespaces/{ns}/entries/{key}", "invalid_key", key),
                              (f"/v1/namespaces/{namespace}/entries/k", "invalid_namespace",
                               namespace)):
        r = client.put(path, json={})
        assert r.status_code == 400 and r.json()["code"] == code
        assert len(r.content) < 1_000, len(r.content)
        assert "(12,000 characters)" in r.json()["detail"]
        assert r.text.count(value[:200]) == 1
    twice = f'{{"{key}": 1, "{key}": 2}}'  # a member name: in the path detail and field name
    r = client.put(f"/v1/namespaces/{ns}/entries/k", content=twice,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "duplicate_member"
    assert len(r.content) < 1_500 and "(12,000 characters)" in r.json()["field"]
