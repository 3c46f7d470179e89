"""``GET /v1/audit/access``: the access log's rows filtered by decision, subject and time,
a page at a time, each row as stored (its chain recomputable by the reader), and the
parameters it refuses. Records are appended by an AccessLog of the test's own, on the API's
database, with subjects of the test's own."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import httpx
import pytest

from nexus_ssot.ledger import access_chain

from .conftest import RunningServer
from .test_access_log import append, denial


@pytest.fixture()
def who() -> str:
    return f"user-{secrets.token_hex(4)}"


def all_pages(client: httpx.Client, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every item of the query, following next_cursor; and the pages it took."""
    items, pages, cursor = [], 0, None
    while True:
        r = client.get("/v1/audit/access", params={**params, **({"cursor": cursor}
                                                                 if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages


def test_filters_and_pages(api: RunningServer, client: httpx.Client, who: str) -> None:
    other = who + "-other"
    append(api.settings.database_url or "", [
        *(denial(i, subject=who) for i in range(5)),
        *(denial(i, subject=who, decision="allow", reason="admin") for i in range(5, 8)),
        *(denial(i, subject=other) for i in range(8, 10))])

    items, pages = all_pages(client, subject=who, decision="deny", limit=2)
    assert pages == 3
    assert [i["record"]["correlation_id"] for i in items] == [f"c-{i}" for i in range(5)]
    assert all(i["record"]["decision"] == "deny" and i["record"]["subject"] == who
               for i in items)
    seqs = [i["seq"] for i in items]
    assert seqs == sorted(seqs)  # oldest first

    allowed, _ = all_pages(client, subject=who, decision="allow")
    assert [i["record"]["reason"] for i in allowed] == ["admin"] * 3
    mine, _ = all_pages(client, subject=who)
    assert len(mine) == 8

    # each row as stored: the reader recomputes its hash
    r = client.get("/v1/audit/access", params={"subject": other})
    for item in r.json()["items"]:
        assert access_chain.row_hash(item["seq"], item["recorded_at"], item["record"],
                                     item["prev_hash"]) == item["hash"]


def test_since_keeps_the_rows_appended_at_or_after_it(api: RunningServer,
                                                      client: httpx.Client, who: str) -> None:
    url = api.settings.database_url or ""
    append(url, [denial(i, subject=who) for i in range(3)])
    append(url, [denial(i, subject=who) for i in range(3, 5)])
    items, _ = all_pages(client, subject=who)
    assert len(items) == 5
    second = items[3]["recorded_at"]
    assert items[2]["recorded_at"] < second  # two appends, two commit times
    later, _ = all_pages(client, subject=who, since=second)
    assert [i["record"]["correlation_id"] for i in later] == ["c-3", "c-4"]
    moment = datetime.fromisoformat(second.replace("Z", "+00:00")).isoformat()
    assert all_pages(client, subject=who, since=moment)[0] == later
    assert all_pages(client, subject=who, since="2999-01-01T00:00:00Z")[0] == []


@pytest.mark.parametrize(("params", "field"), [
    ({"decision": "maybe"}, "decision"),
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"since": "2026-12-03T10:00:00"}, "since"),
    ({"since": "1764000000"}, "since"),
    ({"subject": "a\x00b"}, "subject"),
    ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
])
def test_bad_parameters_are_400(client: httpx.Client, params: dict[str, Any],
                                field: str) -> None:
    r = client.get("/v1/audit/access", params=params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == field


def test_the_openapi_document_describes_the_page(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/audit/access"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {
        "decision", "subject", "since", "limit", "cursor"}
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/AccessLogPage"}
    record = document["components"]["schemas"]["AccessRecordBody"]["properties"]
    assert {"decision", "status", "reason", "subject", "summary", "suppressed", "from",
            "to"} <= set(record)
