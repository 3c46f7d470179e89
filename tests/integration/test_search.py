"""Search across the keys and values of a namespace's live entries
(``GET /v1/namespaces/{ns}/search``, the asynchronous view ``entry_search``):
case-insensitive substrings, literal wildcards, paging, deleted entries left out, only
what the caller may read, read-your-writes through ``min_position``, never a match the
entry no longer has, and bad input refused."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg
import pytest

from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ops.project import ProjectionsThread
from nexus_ssot.projections.entry_search import EntrySearch
from nexus_ssot.projections.runtime import Tables, create_tables
from tests.integration.conftest import RunningServer, make_settings
from tests.integration.test_access import as_, make_token, set_policy

pytestmark = pytest.mark.usefixtures("search_view")

#: The last position each namespace was written at (``found`` reads at least there).
_written: dict[str, int] = {}


def put(client: httpx.Client, ns: str, key: str, document: object) -> int:
    r = client.put(f"/v1/namespaces/{ns}/entries/{key}", json=document)
    assert r.status_code in (200, 201), r.text
    position: int = r.json()["position"]
    _written[ns] = max(position, _written.get(ns, 0))
    return position


def search(client: httpx.Client, ns: str, q: str, min_position: int | None,
           timeout: float = 60, **params: object) -> httpx.Response:
    """The search, once the view has applied ``min_position``: a view runner that was just
    started folds what the suite wrote before, which on a loaded machine may take longer
    than one request's wait (2 s)."""
    deadline = time.monotonic() + timeout
    asked = {"q": q, **params, **({"min_position": min_position} if min_position else {})}
    while True:
        r = client.get(f"/v1/namespaces/{ns}/search", params=asked)
        if r.status_code != 503 or r.json()["code"] != "view_behind" or (
                time.monotonic() > deadline):
            return r


def found(client: httpx.Client, ns: str, q: str, **params: object) -> list[str]:
    """The keys a search finds once the view has applied this namespace's last write."""
    r = search(client, ns, q, _written.get(ns), **params)
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
    deleted = client.delete(f"/v1/namespaces/{ns}/entries/k2")
    assert deleted.status_code == 200
    _written[ns] = deleted.json()["position"]
    keys, cursor = [], None
    while True:
        r = search(client, ns, "turquoise", _written[ns], limit=2,
                   **({"cursor": cursor} if cursor else {}))
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
    """The view's text is under a trigram index that the search uses (how fast a search
    over 100,000 entries is, the bench measures), and no write maintains a trigram index
    of ``entries`` any more (migration 0023)."""
    migrate(database_url)  # (the fixture's database is not migrated: alone, it is empty)

    async def tables() -> None:
        async with await psycopg.AsyncConnection.connect(database_url,
                                                         autocommit=True) as conn:
            await create_tables(conn, EntrySearch(), Tables(EntrySearch.tables))

    asyncio.run(tables())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT key FROM view_entry_search WHERE text ILIKE '%abcdef%'"))
        assert "view_entry_search_text_idx" in plan
        options = conn.execute("SELECT reloptions FROM pg_class"  # merged in small steps
                               " WHERE relname = 'view_entry_search_text_idx'").fetchone()
        assert options == (["gin_pending_list_limit=512"],)
        gin = conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'entries'"
                           " AND indexdef LIKE '%USING gin%'").fetchone()
        assert gin == (0,)


def test_a_match_the_entry_no_longer_has_is_never_shown(
        api: RunningServer, client: httpx.Client, ns: str, database_url: str,
        search_view: Any) -> None:
    """While the view lags (its runner stopped here), what it holds of an entry changed
    since is checked against the entry as it is: the old text finds nothing, the new one
    nothing yet, and with ``min_position`` the search waits for the view."""
    put(client, ns, "k", {"colour": "turquoise"})
    assert found(client, ns, "turquoise") == ["k"]
    search_view.stop()
    changed = put(client, ns, "k", {"colour": "magenta"})
    assert [e["key"] for e in client.get(f"/v1/namespaces/{ns}/search", params={
        "q": "turquoise"}).json()["items"]] == []
    assert [e["key"] for e in client.get(f"/v1/namespaces/{ns}/search", params={
        "q": "magenta"}).json()["items"]] == []
    behind = client.get(f"/v1/namespaces/{ns}/search",
                        params={"q": "magenta", "min_position": changed})
    assert (behind.status_code, behind.json()["code"]) == (503, "view_behind")
    runner = ProjectionsThread(make_settings(database_url), ["entry_search"])
    runner.start()
    try:
        assert found(client, ns, "magenta") == ["k"]
    finally:
        runner.stop()
