"""A namespace exists once it has settings or an entry (ever); a read scoped to one that
does not is ``404 namespace_not_found`` on every route and ``ssot`` command, at a past
point too (before its first event it did not exist yet). Without implicit namespaces, a
write into one is refused until its settings create it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from nexus_ssot.ops.project import ProjectionsThread

from .conftest import AUTH, RunningServer, make_settings
from .test_cli import ssot

#: Every read scoped to one namespace (``{ns}``), with what it asks for.
READS = [
    "/v1/namespaces/{ns}",
    "/v1/namespaces/{ns}/settings/history",
    "/v1/namespaces/{ns}/stats",
    "/v1/namespaces/{ns}/entries",
    "/v1/namespaces/{ns}/entries?prefix=a/",
    "/v1/namespaces/{ns}/search?q=abc",
    "/v1/namespaces/{ns}/entries?position=0",
    "/v1/namespaces/{ns}/entries?as_of=2026-01-01T00:00:00Z",
    "/v1/namespaces/{ns}/entries/k",
    "/v1/namespaces/{ns}/entries/k?version=1",
    "/v1/namespaces/{ns}/entries/k?position=1",
    "/v1/namespaces/{ns}/entries/k/history",
    "/v1/namespaces/{ns}/entries/k/diff?from=0&to=1",
    "/v1/namespaces/{ns}/entries/k/diff?from=0&to_as_of=2026-01-01T00:00:00Z",
    "/v1/namespaces/{ns}/entries/k/proof?version=1",
    "/v1/audit?namespace={ns}",
]


@pytest.mark.parametrize("path", READS)
def test_every_read_of_a_namespace_that_does_not_exist_is_namespace_not_found(
    client: httpx.Client, ns: str, path: str
) -> None:
    # The log holds a position 1 whatever ran before (on a fresh database ?position=1
    # would be beyond the head: 400 position_beyond_head, checked first).
    assert client.put(f"/v1/namespaces/{ns}-other/entries/seed", json={}).status_code in (
        200, 201)
    answer = client.get(path.format(ns=ns))
    assert answer.status_code == 404, answer.text
    assert (answer.json()["code"], answer.json()["field"]) == ("namespace_not_found",
                                                               "namespace")
    assert ns in answer.json()["detail"]


def test_a_restore_of_a_namespace_that_does_not_exist_is_namespace_not_found(
    client: httpx.Client, ns: str
) -> None:
    answer = client.post(f"/v1/namespaces/{ns}/restore", json={"position": 0,
                                                               "dry_run": True})
    assert answer.status_code == 404 and answer.json()["code"] == "namespace_not_found"


@contextmanager
def views_running(database_url: str) -> Iterator[None]:
    thread = ProjectionsThread(make_settings(database_url))
    thread.start()
    try:
        yield
    finally:
        thread.stop()


def test_settings_alone_make_a_namespace_exist(client: httpx.Client, ns: str,
                                               database_url: str) -> None:
    configured = client.put(f"/v1/namespaces/{ns}", json={"description": "soon"})
    shown = client.get(f"/v1/namespaces/{ns}")
    assert shown.status_code == 200
    assert (shown.json()["settings_version"], shown.json()["entries"],
            shown.json()["last_position"]) == (1, 0, None)
    assert client.get(f"/v1/namespaces/{ns}/entries").json()["items"] == []
    with views_running(database_url):
        stats = client.get(f"/v1/namespaces/{ns}/stats",
                           params={"min_position": configured.json()["position"]})
    assert stats.status_code == 200, stats.text
    assert (stats.json()["entries"], stats.json()["writes"], stats.json()["last_position"]) \
        == (0, 0, None)
    listed = client.get("/v1/namespaces", params={"limit": 1000}).json()["items"]
    assert {"namespace": ns, "entries": 0, "deleted": 0, "last_position": None,
            "last_recorded_at": None} in listed
    missing = client.get(f"/v1/namespaces/{ns}/entries/k")
    assert missing.json()["code"] == "entry_not_found"  # the namespace is there, k is not


def test_a_namespace_whose_entries_were_all_deleted_still_exists(client: httpx.Client,
                                                                 ns: str) -> None:
    client.put(f"/v1/namespaces/{ns}/entries/k", json={})
    client.delete(f"/v1/namespaces/{ns}/entries/k")
    shown = client.get(f"/v1/namespaces/{ns}")
    assert shown.status_code == 200 and (shown.json()["entries"], shown.json()["deleted"]) \
        == (0, 1)
    assert client.get(f"/v1/namespaces/{ns}/entries").json()["items"] == []
    assert client.get(f"/v1/namespaces/{ns}/settings/history").json()["items"] == []
    assert client.get(f"/v1/audit?namespace={ns}").status_code == 200


def test_read_at_a_past_point_the_namespace_exists_from_its_first_event(
    client: httpx.Client, ns: str
) -> None:
    first = client.put(f"/v1/namespaces/{ns}/entries/k", json={"v": 1}).json()
    before = {"position": first["position"] - 1}
    listing = client.get(f"/v1/namespaces/{ns}/entries", params=before)
    assert listing.status_code == 404, listing.text
    assert listing.json()["code"] == "namespace_not_found"
    assert listing.json()["position"] == first["position"] - 1
    assert "did not exist yet at position" in listing.json()["detail"]
    one = client.get(f"/v1/namespaces/{ns}/entries/k", params=before)
    assert one.json()["code"] == "namespace_not_found"
    then = client.get(f"/v1/namespaces/{ns}/entries", params={"as_of": first["recorded_at"]})
    assert [e["key"] for e in then.json()["items"]] == ["k"]
    assert client.get(f"/v1/namespaces/{ns}/entries/j", params={
        "position": first["position"]}).json()["code"] == "entry_not_found"


def test_the_cli_exits_3_for_a_namespace_that_does_not_exist(api: Any, ns: str) -> None:
    for args in (["ls", ns], ["namespace", "show", ns], ["get", f"{ns}/k"]):
        done = ssot(api, *args)
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: namespace_not_found: namespace "), done.stderr
    made = ssot(api, "namespace", "set", ns, "--conflict-policy", "strict")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"{ns}: settings version 1 ")
    assert ssot(api, "ls", ns).returncode == 0
    same = ssot(api, "namespace", "set", ns, "--conflict-policy", "strict")
    assert same.stdout.startswith(f"{ns}: settings version 1 unchanged ")


@pytest.fixture(scope="module")
def explicit(database_url: str) -> Iterator[httpx.Client]:
    """A server that creates no namespace by writing into it (a writer thread of its own)."""
    settings = make_settings(database_url, implicit_namespaces=False)
    with RunningServer(settings) as server, \
            httpx.Client(headers=AUTH, base_url=server.url, timeout=30) as client:
        yield client


def test_without_implicit_namespaces_a_first_write_needs_the_namespace_created_first(
    explicit: httpx.Client, ns: str
) -> None:
    put = explicit.put(f"/v1/namespaces/{ns}/entries/k", json={})
    assert put.status_code == 404
    assert (put.json()["code"], put.json()["field"]) == ("namespace_not_found", "namespace")
    assert f"PUT /v1/namespaces/{ns}" in put.json()["detail"]
    batch = explicit.post("/v1/batch", json={"operations": [
        {"op": "put", "namespace": ns, "key": "k", "document": {}}]})
    assert batch.status_code == 404 and batch.json()["operation"] == 0
    assert explicit.get(f"/v1/namespaces/{ns}").status_code == 404  # nothing was made
    assert explicit.put(f"/v1/namespaces/{ns}", json={}).status_code == 201
    assert explicit.put(f"/v1/namespaces/{ns}/entries/k", json={}).status_code == 201
    # the system namespaces are no client's: the access routes still write theirs
    policy = explicit.put(f"/v1/access/policies/{ns}", json={"rules": []})
    assert policy.status_code in (200, 201), policy.text
