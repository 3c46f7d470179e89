"""Time travel equals the fold of the log: a property test over random write sequences,
checking every coordinate form (position, as-of time, version; entry and namespace)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.examples import examples

KEYS = ["a", "b", "c/d"]
DELETED = object()

ops = st.lists(st.tuples(st.sampled_from(["put", "merge", "delete"]), st.sampled_from(KEYS),
                         st.integers(0, 3)), min_size=1, max_size=12)


@dataclass
class Event:
    position: int
    recorded_at: str
    key: str
    version: int
    document: Any  # DELETED for a tombstone


def apply(client: httpx.Client, ns: str, script: list[tuple[str, str, int]]) -> list[Event]:
    events = []
    for kind, key, value in script:
        path = f"/v1/namespaces/{ns}/entries/{key}"
        if kind == "put":
            r = client.put(path, json={"v": value, "k": key})
        elif kind == "merge":
            r = client.patch(path, content=f'{{"m{value}": {value}}}'.encode(),
                             headers={"Content-Type": "application/merge-patch+json"})
        else:
            r = client.delete(path)
        if r.status_code == 404:
            continue  # nothing to patch or delete: rejected, nothing appended
        assert r.status_code in (200, 201), r.text
        body = r.json()
        if body.get("unchanged"):  # the same document again: nothing appended
            last = [e for e in events if e.key == key][-1]
            assert (body["version"], body["position"]) == (last.version, last.position)
            continue
        events.append(Event(body["position"], body["recorded_at"], key, body["version"],
                            DELETED if kind == "delete" else body["document"]))
    return events


def fold(events: list[Event]) -> dict[str, tuple[int, Any]]:
    """key -> (version, document or DELETED), the pure in-memory fold."""
    state: dict[str, tuple[int, Any]] = {}
    for e in events:
        state[e.key] = (e.version, e.document)
    return state


def check_entry(client: httpx.Client, ns: str, key: str, params: dict[str, Any],
                expected: tuple[int, Any] | None) -> None:
    r = client.get(f"/v1/namespaces/{ns}/entries/{key}", params=params)
    if expected is None:
        assert r.status_code == 404 and r.json()["code"] == "entry_not_found", (params, r.text)
    elif expected[1] is DELETED:
        assert r.status_code == 404 and r.json()["code"] == "entry_deleted", (params, r.text)
        assert r.json()["deleted_version"] == expected[0]
    else:
        assert r.status_code == 200, (params, r.text)
        assert (r.json()["version"], r.json()["document"]) == expected, params


def check_namespace(client: httpx.Client, ns: str, params: dict[str, Any],
                    expected: dict[str, tuple[int, Any]], cut: int) -> None:
    live = {k: v for k, v in expected.items() if v[1] is not DELETED}
    seen: dict[str, tuple[int, Any]] = {}
    query = {**params, "limit": 1}  # one per page: the cursor must keep the cut
    while True:
        page = client.get(f"/v1/namespaces/{ns}/entries", params=query).json()
        assert page["position"] == cut
        seen.update({e["key"]: (e["version"], e["document"]) for e in page["items"]})
        if page["next_cursor"] is None:
            break
        query = {"cursor": page["next_cursor"], "limit": 1}
    assert seen == live, params


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
def test_every_past_state_is_the_fold_of_the_log_up_to_there(
    client: httpx.Client, script: list[tuple[str, str, int]]
) -> None:
    ns = f"tt{secrets.token_hex(5)}"
    events = apply(client, ns, script)
    for i, event in enumerate(events):
        by_position = fold(events[: i + 1])
        moment = datetime.fromisoformat(event.recorded_at.replace("Z", "+00:00"))
        by_time = fold([e for e in events if datetime.fromisoformat(
            e.recorded_at.replace("Z", "+00:00")) <= moment])
        for key in KEYS:
            check_entry(client, ns, key, {"position": event.position}, by_position.get(key))
            check_entry(client, ns, key, {"as_of": event.recorded_at}, by_time.get(key))
        check_namespace(client, ns, {"position": event.position}, by_position, event.position)
    for event in events:  # and every version of every key
        check_entry(client, ns, event.key, {"version": event.version},
                    (event.version, event.document))
    if events:  # before the first event nothing existed, not even the namespace
        before = {"position": events[0].position - 1}
        for path in (f"entries/{events[0].key}", "entries"):
            r = client.get(f"/v1/namespaces/{ns}/{path}", params=before)
            assert r.status_code == 404 and r.json()["code"] == "namespace_not_found", r.text


def test_one_coordinate_at_a_time(client: httpx.Client, ns: str) -> None:
    client.put(f"/v1/namespaces/{ns}/entries/k", json={})
    r = client.get(f"/v1/namespaces/{ns}/entries/k", params={"version": 1, "position": 1})
    assert r.status_code == 400 and r.json()["code"] == "conflicting_parameters"
    naive = client.get(f"/v1/namespaces/{ns}/entries/k", params={"as_of": "2026-01-01T00:00"})
    assert naive.status_code == 400 and naive.json()["field"] == "as_of"
