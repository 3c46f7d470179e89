"""Namespace settings as events, and conflict resolution by replay under each policy."""

from __future__ import annotations

import copy
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import json_merge_patch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonpointer import resolve_pointer

from nexus_ssot.ledger.commands import Context, Expectation, MergePatch, Put
from nexus_ssot.ledger.documents import Limits, diff, surrogate_refusal
from nexus_ssot.ledger.domain import Unchanged, decide
from nexus_ssot.ledger.errors import EditConflict, InvalidUnicode
from nexus_ssot.ledger.events import EntryState
from nexus_ssot.ledger.merge import Replay
from tests.examples import examples
from tests.integration.conftest import AUTH, event_count

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def entry(ns: str, key: str = "k") -> str:
    return f"/v1/namespaces/{ns}/entries/{key}"


def set_policy(client: httpx.Client, ns: str, policy: str) -> None:
    r = client.put(f"/v1/namespaces/{ns}", json={"conflict_policy": policy})
    assert r.status_code in (200, 201), r.text


# --- namespace settings ---------------------------------------------------------------


def test_namespace_settings_are_events_with_their_own_history(client: httpx.Client,
                                                              ns: str, db: Any) -> None:
    fresh = client.get(f"/v1/namespaces/{ns}")  # no settings, no entries: no namespace
    assert fresh.status_code == 404 and fresh.json()["code"] == "namespace_not_found"
    client.put(entry(ns, "first"), json={})  # an entry makes it exist, with the defaults
    implicit = client.get(f"/v1/namespaces/{ns}")
    assert implicit.status_code == 200 and implicit.headers["etag"] == '"0"'
    assert implicit.json() == {"namespace": ns, "settings": {"conflict_policy": "merge",
                               "description": None}, "settings_version": 0, "entries": 1,
                               "deleted": 0, "last_position": implicit.json()["last_position"]}
    first = client.put(f"/v1/namespaces/{ns}", json={"conflict_policy": "strict"},
                       headers={"X-Reason": "payments wants no merges"})
    assert first.status_code == 201, first.text
    assert first.json()["settings"] == {"conflict_policy": "strict", "description": None}
    assert first.json()["settings_version"] == 1 and first.headers["etag"] == '"1"'
    stale = client.put(f"/v1/namespaces/{ns}", json={"conflict_policy": "merge"},
                       headers={"If-Match": '"0"'})
    assert stale.status_code == 412 and stale.json()["code"] == "version_conflict"
    second = client.put(f"/v1/namespaces/{ns}", headers={"If-Match": '"1"'},
                        json={"conflict_policy": "last-writer-wins", "description": "flags"})
    assert second.status_code == 200 and second.json()["settings_version"] == 2
    client.put(entry(ns), json={"a": 1})
    got = client.get(f"/v1/namespaces/{ns}").json()
    assert got["settings"] == {"conflict_policy": "last-writer-wins", "description": "flags"}
    assert (got["settings_version"], got["entries"]) == (2, 2)
    history = client.get(f"/v1/namespaces/{ns}/settings/history").json()["items"]
    assert [h["event_type"] for h in history] == ["namespace.configured"] * 2
    assert history[0]["reason"] == "payments wants no merges"
    assert history[1]["patch"] == [
        {"op": "replace", "path": "/description", "value": "flags"},
        {"op": "replace", "path": "/conflict_policy", "value": "last-writer-wins"},
    ] or {tuple(sorted(p.items())) for p in history[1]["patch"]} == {
        tuple(sorted(p.items())) for p in [
            {"op": "replace", "path": "/description", "value": "flags"},
            {"op": "replace", "path": "/conflict_policy", "value": "last-writer-wins"}]}
    # the settings are in the log like everything else, and in the audit trail
    audit = client.get("/v1/audit", params={"type": "namespace.configured",
                                            "correlation_id": history[0]["correlation_id"]})
    assert [e["key"] for e in audit.json()["items"]] == [ns]
    # the system namespace is not a namespace clients list or write
    names = [n["namespace"] for n in client.get("/v1/namespaces",
                                                params={"limit": 1000}).json()["items"]]
    assert "_namespaces" not in names and ns in names
    assert client.put(entry("_namespaces", ns), json={}).status_code == 400


@pytest.mark.parametrize(("body", "field"), [
    ({"conflict_policy": "yolo"}, "conflict_policy"),
    ({"conflict_policy": "merge", "colour": "red"}, "colour"),
    ({"description": 7}, "description"),
    ([], "settings"),
])
def test_bad_settings_are_refused_and_change_nothing(client: httpx.Client, ns: str, db: Any,
                                                     body: Any, field: str) -> None:
    before = event_count(db)
    r = client.put(f"/v1/namespaces/{ns}", json=body)
    assert r.status_code == 400, r.text
    assert (r.json()["code"], r.json()["field"]) == ("invalid_settings", field)
    assert field in r.json()["detail"]
    assert event_count(db) == before


# --- merge (the default) --------------------------------------------------------------


def test_a_stale_patch_on_other_paths_is_merged_and_says_so(client: httpx.Client,
                                                            ns: str) -> None:
    client.put(entry(ns), json={"db": {"host": "a", "port": 5432}, "replicas": 1})
    assert client.patch(entry(ns), content=b'{"replicas": 3}',
                        headers={**MERGE_PATCH, "If-Match": '"1"'}).status_code == 200
    assert client.patch(entry(ns), content=b'{"db": {"host": "b"}}',
                        headers=MERGE_PATCH).status_code == 200
    # this writer still has version 1 and changes the port only
    r = client.patch(entry(ns), content=b'{"db": {"port": 6432}}',
                     headers={**MERGE_PATCH, "If-Match": '"1"'})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["document"] == {"db": {"host": "b", "port": 6432}, "replicas": 3}
    assert (body["version"], body["merged"], body["base_version"],
            body["rebased_over"]) == (4, True, 1, [2, 3])
    assert r.headers["etag"] == '"4"'
    history = client.get(entry(ns) + "/history").json()["items"]
    assert history[3]["resolution"] == {"policy": "merge", "base_version": 1,
                                        "rebased_over": [2, 3]}
    assert history[3]["patch"] == [{"op": "replace", "path": "/db/port", "value": 6432}]
    assert history[1]["resolution"] is None


def test_a_stale_write_on_a_path_changed_since_is_a_409_listing_it(
        client: httpx.Client, ns: str, db: Any) -> None:
    client.put(entry(ns), json={"level": "info", "tags": {"a": 1}})
    client.patch(entry(ns), content=b'{"level": "warn"}', headers=MERGE_PATCH)
    before = event_count(db)
    r = client.patch(entry(ns), content=b'{"level": "debug", "tags": {"b": 2}}',
                     headers={**MERGE_PATCH, "If-Match": '"1"'})
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["code"] == "edit_conflict" and problem["field"] == "If-Match"
    assert problem["conflicts"] == [
        {"path": "/level", "base": "info", "theirs": "warn", "ours": "debug"}]
    assert (problem["base_version"], problem["current_version"]) == (1, 2)
    assert "/level" in problem["detail"]
    assert event_count(db) == before
    # a conflict answer is deterministic
    again = client.patch(entry(ns), content=b'{"level": "debug", "tags": {"b": 2}}',
                         headers={**MERGE_PATCH, "If-Match": '"1"'})
    assert again.json()["conflicts"] == problem["conflicts"]


def test_a_removed_member_and_a_change_under_it_collide(client: httpx.Client,
                                                        ns: str) -> None:
    client.put(entry(ns), json={"feature": {"on": True, "pct": 5}})
    client.patch(entry(ns), content=b'{"feature": null}', headers=MERGE_PATCH)
    r = client.patch(entry(ns), content=b'{"feature": {"pct": 50}}',
                     headers={**MERGE_PATCH, "If-Match": '"1"'})
    assert r.status_code == 409
    assert r.json()["conflicts"] == [{"path": "/feature", "base": {"on": True, "pct": 5},
                                      "ours": {"on": True, "pct": 50}}]  # theirs: absent


def test_array_changes_collide_at_the_array(client: httpx.Client, ns: str) -> None:
    """Indexes shift when another writer inserts: an element is never merged by index."""
    client.put(entry(ns), json={"hosts": ["a", "b", "c"], "port": 1})
    client.patch(entry(ns), content=b'[{"op": "add", "path": "/hosts/0", "value": "z"}]',
                 headers=JSON_PATCH)
    r = client.patch(entry(ns), content=b'[{"op": "replace", "path": "/hosts/2", '
                     b'"value": "C"}]', headers={**JSON_PATCH, "If-Match": '"1"'})
    assert r.status_code == 409
    assert [c["path"] for c in r.json()["conflicts"]] == ["/hosts"]
    ok = client.patch(entry(ns), content=b'[{"op": "replace", "path": "/port", "value": 2}]',
                      headers={**JSON_PATCH, "If-Match": '"1"'})
    assert ok.status_code == 200 and ok.json()["document"] == {
        "hosts": ["z", "a", "b", "c"], "port": 2}


def test_a_stale_put_is_merged_as_the_diff_from_its_base(client: httpx.Client,
                                                         ns: str) -> None:
    client.put(entry(ns), json={"a": 1, "b": 1, "c": 1})
    client.patch(entry(ns), content=b'{"a": 2}', headers=MERGE_PATCH)
    # ours (from version 1): b changed, c removed; a untouched
    r = client.put(entry(ns), json={"a": 1, "b": 5}, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["document"] == {"a": 2, "b": 5} and r.json()["merged"] is True
    conflict = client.put(entry(ns), json={"a": 9, "b": 1, "c": 1},
                          headers={"If-Match": '"1"'})
    assert conflict.status_code == 409
    # ours changed only /a from version 1; theirs changed /a, /b and /c since
    assert conflict.json()["conflicts"] == [{"path": "/a", "base": 1, "theirs": 2, "ours": 9}]


def test_a_stale_delete_is_refused_when_anything_changed_since(client: httpx.Client,
                                                               ns: str) -> None:
    client.put(entry(ns), json={"a": 1})
    client.put(entry(ns), json={"a": 2})
    r = client.delete(entry(ns), headers={"If-Match": '"1"'})
    assert r.status_code == 409 and r.json()["conflicts"][0]["path"] == ""


def test_an_if_match_beyond_the_current_version_or_on_a_deleted_entry_is_412(
        client: httpx.Client, ns: str) -> None:
    client.put(entry(ns), json={"a": 1})
    assert client.put(entry(ns), json={"a": 2},
                      headers={"If-Match": '"7"'}).status_code == 412
    client.delete(entry(ns))
    r = client.patch(entry(ns), content=b'{"a": 3}', headers={**MERGE_PATCH,
                                                              "If-Match": '"1"'})
    assert r.status_code == 412 and r.json()["code"] == "version_conflict"


def test_sixteen_writers_of_their_own_fields_all_merge_and_lose_nothing(
        client: httpx.Client, ns: str, api: Any) -> None:
    """Every client writes its own field, each time with the version its previous write
    answered (stale: the others have moved on since): under merge none is refused and
    the final document has every write."""
    client.put(entry(ns), json={"title": "shared"})
    errors: list[str] = []
    rounds = 10

    def writer(i: int) -> None:
        seen = '"1"'
        with httpx.Client(headers=AUTH, base_url=api.url, timeout=30) as c:
            for n in range(1, rounds + 1):
                r = c.patch(entry(ns), content=f'{{"w{i}": {n}}}'.encode(),
                            headers={**MERGE_PATCH, "If-Match": seen})
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text}")
                    return
                seen = r.headers["etag"]

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = client.get(entry(ns))
    assert final.json()["document"] == {"title": "shared",
                                        **{f"w{i}": rounds for i in range(16)}}
    assert final.headers["etag"] == f'"{1 + 16 * rounds}"'


# --- strict and last-writer-wins ----------------------------------------------------


def test_strict_refuses_any_stale_if_match(client: httpx.Client, ns: str, db: Any) -> None:
    set_policy(client, ns, "strict")
    client.put(entry(ns), json={"a": 1, "b": 1})
    client.patch(entry(ns), content=b'{"a": 2}', headers=MERGE_PATCH)
    before = event_count(db)
    r = client.patch(entry(ns), content=b'{"b": 2}', headers={**MERGE_PATCH,
                                                              "If-Match": '"1"'})
    assert r.status_code == 412 and r.json()["current_version"] == 2
    assert event_count(db) == before


def test_last_writer_wins_applies_and_records_what_it_overwrote(client: httpx.Client,
                                                                ns: str) -> None:
    set_policy(client, ns, "last-writer-wins")
    client.put(entry(ns), json={"a": 1})
    client.put(entry(ns), json={"a": 2})
    r = client.put(entry(ns), json={"a": 3}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["document"] == {"a": 3}
    assert r.json()["resolution"] == {"policy": "last-writer-wins", "expected_version": 1,
                                      "overwritten_version": 2}
    assert "merged" not in r.json()
    history = client.get(entry(ns) + "/history").json()["items"]
    assert history[-1]["resolution"]["overwritten_version"] == 2
    # a policy change applies to the next write
    set_policy(client, ns, "strict")
    assert client.put(entry(ns), json={"a": 4},
                      headers={"If-Match": '"1"'}).status_code == 412


def test_an_idempotent_retry_of_a_merged_write_answers_the_merge(client: httpx.Client,
                                                                 ns: str) -> None:
    client.put(entry(ns), json={"a": 1, "b": 1})
    client.patch(entry(ns), content=b'{"a": 2}', headers=MERGE_PATCH)
    headers = {**MERGE_PATCH, "If-Match": '"1"', "Idempotency-Key": f"m-{ns}"}
    first = client.patch(entry(ns), content=b'{"b": 2}', headers=headers)
    retry = client.patch(entry(ns), content=b'{"b": 2}', headers=headers)
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json() and first.json()["merged"] is True


# --- properties of the merge (pure) -------------------------------------------------

_KEYS = [f"k{i}" for i in range(6)]
# any text but U+0000, which check_document refuses; lone surrogates too, which every
# write refuses before it merges anything
_values = st.one_of(st.integers(-3, 3),
                    st.text(st.characters(exclude_characters="\x00"), max_size=3),
                    st.booleans(),
                    st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 3),
                                    max_size=2))
_docs = st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6)
_patch = st.dictionaries(st.sampled_from(_KEYS), st.one_of(st.none(), _values),
                         min_size=1, max_size=3)


def _ctx() -> Context:
    return Context(event_id=uuid.uuid4(), timestamp=datetime.now(UTC), actor="p",
                   correlation_id="c")


def _apply(state: EntryState, patch: dict[str, Any], if_match: int,
           history: list[Any]) -> EntryState:
    """Write ``patch`` with If-Match ``if_match`` under merge, replaying ``history``
    (the documents of versions 1…current); a patch that changes nothing leaves them."""
    command = MergePatch("p", "k", Expectation(if_match=if_match), patch=patch)
    replay = Replay(if_match, tuple(history[if_match - 1:]), tuple(
        diff(a, b) for a, b in zip(history[if_match - 1:], history[if_match:], strict=False)))
    event = decide(state, command, _ctx(), Limits(), policy="merge", replay=replay)
    if isinstance(event, Unchanged):
        return state
    history.append(event.document)
    return EntryState("p", "k", event.originator_version, event.document)


def _start(base: dict[str, Any]) -> tuple[EntryState, list[Any]]:
    event = decide(None, Put("p", "k", document=base), _ctx(), Limits())
    return EntryState("p", "k", 1, event.document), [event.document]


def _refused_if_unstorable(base: dict[str, Any], *patches: dict[str, Any]) -> bool:
    """Whether some text of ``base`` or ``patches`` is a lone surrogate, after checking that
    then the first write holding one is refused (``InvalidUnicode``), merge or not."""
    if all(surrogate_refusal(value, "") is None for value in (base, *patches)):
        return False
    with pytest.raises(InvalidUnicode):
        state, history = _start(base)
        for patch in patches:
            state = _apply(state, patch, 1, history)
    return True


@settings(max_examples=examples(100), deadline=None)
@given(base=_docs, theirs=_patch, ours=_patch)
def test_disjoint_patches_commute_and_conflicts_are_deterministic(
        base: dict[str, Any], theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    if _refused_if_unstorable(base, theirs, ours):
        return
    disjoint = not set(theirs) & set(ours)
    results = []
    for first, second in ((theirs, ours), (ours, theirs)):
        state, history = _start(base)
        state = _apply(state, first, 1, history)
        try:
            results.append(_apply(state, second, 1, history).document)
        except EditConflict as e:
            assert not disjoint
            again_state, again_history = _start(base)
            again_state = _apply(again_state, first, 1, again_history)
            with pytest.raises(EditConflict) as again:
                _apply(again_state, second, 1, again_history)
            assert again.value.extra == e.extra  # deterministic
            results.append(None)
    if disjoint:
        assert results[0] is not None
        assert results[0] == results[1]  # either order, the same document


@settings(max_examples=examples(100), deadline=None)
@given(base=_docs, theirs=_patch, ours=_patch)
def test_a_merge_never_drops_a_change_another_writer_made(
        base: dict[str, Any], theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    if _refused_if_unstorable(base, theirs, ours):
        return
    state, history = _start(base)
    state = _apply(state, theirs, 1, history)
    their_document = state.document
    their_paths = _paths(diff(base, their_document))
    our_paths = _paths(diff(base, _merge(base, ours)))
    try:
        merged = _apply(state, ours, 1, history).document
    except EditConflict as e:
        # refused only where ours really touches what theirs changed
        for conflict in e.extra["conflicts"]:
            assert any(_related(conflict["path"], p) for p in their_paths)
            assert any(_related(conflict["path"], p) for p in our_paths)
        return
    for path in their_paths:  # every change theirs made survives, value for value
        assert resolve_pointer(merged, path, "∅") == resolve_pointer(their_document, path,
                                                                     "∅")
    for path in our_paths:  # and so does ours
        assert resolve_pointer(merged, path, "∅") == resolve_pointer(
            _merge(base, ours), path, "∅")


def _paths(patch: list[dict[str, Any]]) -> list[str]:
    return [op[m] for op in patch for m in ("path", "from") if m in op]


def _related(a: str, b: str) -> bool:
    x, y = a.split("/")[1:], b.split("/")[1:]
    n = min(len(x), len(y))
    return x[:n] == y[:n]


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> Any:
    return json_merge_patch.merge(copy.deepcopy(base), copy.deepcopy(patch))
