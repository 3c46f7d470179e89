"""Search across the keys and values of a namespace's live entries
(``GET /v1/namespaces/{ns}/search``): case-insensitive substrings, literal wildcards,
paging, deleted entries left out, only what the caller may read, and bad input refused."""

from __future__ import annotations

import httpx
import psycopg

from nexus_ssot.ledger.migrate import migrate
from tests.integration.conftest import RunningServer
from tests.integration.test_access import as_, make_token, set_policy


def put(client: httpx.Client, ns: str, key: str, document: object) -> None:
    r = client.put(f"/v1/namespaces/{ns}/entries/{key}", json=document)
    assert r.status_code in (200, 201), r.text


def found(client: httpx.Client, ns: str, q: str, **params: object) -> list[str]:
    r = client.get(f"/v1/namespaces/{ns}/search", params={"q": q, **params})
    assert r.status_code == 200, r.text
    return [e["key"] for e in r.json()["items"]]


def test_search_finds_text_in_keys_and_in_values_whatever_its_case(
        client: httpx.Client, ns: str) -> None:
    put(client, ns, "services/payments/db", {"host": "db-EU-West.internal", "port": 5432})
    put(client, ns, "services/billing/db", {"host": "db-us-east.internal"})
    put(client, ns, "eu-west/flags", {"dark_mode": True})
    assert found(client, ns, "eu-west") == ["eu-west/flags", "services/payments/db"]
    assert found(client, ns, "BILLING") == ["services/billing/db"]
    assert found(client, ns, "dark_mode") == ["eu-west/flags"]  # member names too
    assert found(client, ns, "internal", prefix="services/p") == ["services/payments/db"]
    body = client.get(f"/v1/namespaces/{ns}/search", params={"q": "eu-west"}).json()
    assert body["items"][1]["document"] == {"host": "db-EU-West.internal", "port": 5432}


def test_like_wildcards_are_searched_as_text(client: httpx.Client, ns: str) -> None:
    put(client, ns, "a", {"note": "100% sure"})
    put(client, ns, "b", {"note": "1000 sure"})
    put(client, ns, "c", {"note": "x_y_z"})
    put(client, ns, "d", {"note": "xayaz"})
    assert found(client, ns, "0% s") == ["a"]
    assert found(client, ns, "x_y") == ["c"]


def test_deleted_entries_are_not_found_and_pages_follow_the_cursor(
        client: httpx.Client, ns: str) -> None:
    for i in range(5):
        put(client, ns, f"k{i}", {"colour": "turquoise"})
    assert client.delete(f"/v1/namespaces/{ns}/entries/k2").status_code == 200
    keys, cursor = [], None
    while True:
        r = client.get(f"/v1/namespaces/{ns}/search",
                       params={"q": "turquoise", "limit": 2, **({"cursor": cursor} if cursor
                                                                 else {})})
        keys += [e["key"] for e in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert keys == ["k0", "k1", "k3", "k4"]
    other = client.get(f"/v1/namespaces/{ns}/search",
                       params={"q": "turquoise", "limit": 2}).json()["next_cursor"]
    r = client.get(f"/v1/namespaces/{ns}/search", params={"q": "magenta", "cursor": other})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_cursor")


def test_bad_search_text_is_a_400_naming_the_parameter(client: httpx.Client, ns: str) -> None:
    put(client, ns, "k", {"a": 1})
    for q in ("ab", "x" * 201, "abc\x00def"):
        r = client.get(f"/v1/namespaces/{ns}/search", params={"q": q})
        assert r.status_code == 400, q
        assert r.json()["code"] == "invalid_parameter" and r.json()["field"] == "q"
    r = client.get(f"/v1/namespaces/{ns}/search")
    assert (r.status_code, r.json()["field"]) == (400, "q")
    r = client.get("/v1/namespaces/nope-never-made/search", params={"q": "abc"})
    assert (r.status_code, r.json()["code"]) == (404, "namespace_not_found")


def test_a_caller_finds_only_what_it_may_read(api: RunningServer, client: httpx.Client,
                                              ns: str) -> None:
    token = make_token(client, f"seeker-{ns}")
    set_policy(client, f"s-{ns}", {"effect": "allow", "subjects": [f"user:seeker-{ns}"],
                                   "actions": ["read"], "namespaces": [ns],
                                   "keys": ["public/**"]})
    for key in ("public/a", "secret/a", "public/b", "secret/b"):
        put(client, ns, key, {"team": "platform"})
    with as_(api, token) as seeker:
        assert found(seeker, ns, "platform", limit=1) == ["public/a"]
        assert found(seeker, ns, "platform") == ["public/a", "public/b"]
        assert found(seeker, ns, "secret") == []
        assert seeker.get(f"/v1/namespaces/{ns}x/search",
                          params={"q": "abc"}).status_code == 404


def test_the_search_text_is_indexed(database_url: str) -> None:
    """The query's text expression is the index's (a different one scans the table); how
    fast a search over 100,000 entries is, the bench measures."""
    migrate(database_url)  # (the fixture's database is not migrated: alone, it is empty)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT key FROM entries WHERE NOT deleted"
            " AND (key || ' ' || document::text) ILIKE '%abcdef%'"))
    assert "entries_search_idx" in plan
    with psycopg.connect(database_url) as conn:  # merged into the tree in small steps
        options = conn.execute("SELECT reloptions FROM pg_class"
                               " WHERE relname = 'entries_search_idx'").fetchone()
    assert options == (["gin_pending_list_limit=512"],)
