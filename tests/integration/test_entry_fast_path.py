"""GET and PUT of one entry answer the same whether they take the fast path
(api/entry_fast_path.py) or the framework's: a query string the routes ignore sends the
same request the framework's way."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.integration.conftest import AUTH, RunningServer, free_port

#: Header fields that differ between any two answers.
_VARYING = {"x-correlation-id", "date", "server", "ratelimit-remaining", "ratelimit-reset"}


def answer(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in response.headers.items() if k not in _VARYING}
    body: Any = response.content
    # right for its own body, which varies in length with the fields set aside below (a
    # position of one digit more, say, when the log crosses 1,000 between two writes)
    if "content-length" in headers:
        assert int(headers.pop("content-length")) == len(body)
    if response.headers.get("content-type", "").endswith("json") and body:
        body = orjson.loads(body)
        if isinstance(body, dict):
            body.pop("correlation_id", None)
            for varying in ("position", "recorded_at", "key"):
                body.pop(varying, None)
    if "location" in headers:
        headers["location"] = headers["location"].rsplit("/", 1)[0]
    return response.status_code, headers, body


def both_ways(client: httpx.Client, method: str, url: str, **kwargs: Any) -> None:
    fast = client.request(method, url, **kwargs)
    framework = client.request(method, url, params={"ignored": "1"}, **kwargs)
    assert answer(fast) == answer(framework)


@pytest.mark.parametrize("headers", [
    {}, {"Accept": "application/json"}, {"Accept": "text/html"}, {"Accept": "*/*;q=0"},
    {"If-None-Match": '"1"'}, {"If-None-Match": 'W/"1", "7"'},
])
def test_reads_answer_alike(client: httpx.Client, ns: str, headers: dict[str, str]) -> None:
    client.put(f"/v1/namespaces/{ns}/entries/a/b", json={"x": [1, 2]}).raise_for_status()
    client.put(f"/v1/namespaces/{ns}/entries/gone", json={"y": 1})
    client.delete(f"/v1/namespaces/{ns}/entries/gone").raise_for_status()
    for key in ("a/b", "missing", "gone", "a/b/revert", "bad$key", "a/"):
        both_ways(client, "GET", f"/v1/namespaces/{ns}/entries/{key}", headers=headers)
    both_ways(client, "GET", f"/v1/namespaces/{ns}x/entries/k", headers=headers)


def test_writes_answer_alike(client: httpx.Client, ns: str) -> None:
    url = f"/v1/namespaces/{ns}/entries"
    created = client.put(f"{url}/one", json={"a": 1})
    framework = client.put(f"{url}/two", json={"a": 1}, params={"ignored": "1"})
    assert answer(created) == answer(framework)
    replaced = client.put(f"{url}/one", json={"a": 2}, headers={"If-Match": '"1"'})
    framework = client.put(f"{url}/two", json={"a": 2}, headers={"If-Match": '"1"'},
                           params={"ignored": "1"})
    assert answer(replaced) == answer(framework)
    json_headers = {"Content-Type": "application/json"}
    for content, headers in [
        (b'{"a": 2}', {"If-Match": '"1"'}),  # stale
        (b'{"a": 2}', {"If-Match": 'W/"2"'}),
        (b'{"a": 2}', {"If-Match": "nonsense"}),
        (b'{"a": 2}', {"If-None-Match": "*"}),
        (b'{"a": 1, "a": 2}', {}),
        (b"", {}),
        (b"{", {}),
        (b'{"a": 2}', {"Content-Type": "text/plain"}),
        (b'{"a": 2}', {"Content-Encoding": "gzip"}),
        (b'{"a": 2}', {"Idempotency-Key": "\x01"}),
    ]:
        for key in ("one", "one/history", "bad$key"):
            both_ways(client, "PUT", f"{url}/{key}", content=content,
                      headers={**json_headers, **headers})


def test_a_refused_write_answers_alike(api: Any, ns: str) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as anonymous:
        both_ways(anonymous, "PUT", f"/v1/namespaces/{ns}/entries/k", json={"a": 1})
        both_ways(anonymous, "GET", f"/v1/namespaces/{ns}/entries/k")


def test_reads_with_a_coordinate_answer_alike(client: httpx.Client, ns: str) -> None:
    url = f"/v1/namespaces/{ns}/entries"
    written = [client.put(f"{url}/k", json={"v": n}).json() for n in range(3)]
    client.put(f"{url}/gone", json={"y": 1}).raise_for_status()
    client.delete(f"{url}/gone").raise_for_status()
    first, last = written[0], written[-1]
    before = first["recorded_at"].replace(first["recorded_at"][:4],
                                          str(int(first["recorded_at"][:4]) - 1), 1)
    coordinates: list[dict[str, str]] = [
        *({"version": str(v)} for v in (1, 2, 3, 4, 99)),
        *({"position": str(p)} for p in (0, first["position"], last["position"],
                                         last["position"] + 10**6)),
        *({"as_of": t} for t in (before, first["recorded_at"], last["recorded_at"],
                                 "2999-01-01T00:00:00Z", "2999-01-01T00:00:00.5+05:30")),
        *({"min_position": str(p)} for p in (0, first["position"], last["position"],
                                             last["position"] + 10**6)),
        # spellings the fast path leaves to the framework, refused or not
        {"version": "0"}, {"version": "05"}, {"position": "-1"}, {"min_position": "-1"},
        {"min_position": "01"},
        {"as_of": "2026-12-01T08:00:00"}, {"as_of": "2026-02-30T08:00:00Z"},
    ]
    for key in ("k", "gone", "missing", "bad$key", "k/history"):
        for coordinate in coordinates:
            for headers in ({}, {"Accept": "text/html"}, {"If-None-Match": '"2"'}):
                fast = client.get(f"{url}/{key}", params=coordinate, headers=headers)
                framework = client.get(f"{url}/{key}", params={**coordinate, "ignored": "1"},
                                       headers=headers)
                assert answer(fast) == answer(framework), (key, coordinate, headers)
    # and the fast path's answers are the reads' own: the versions written, and their time
    assert [client.get(f"{url}/k", params={"version": str(v)}).json()["document"]
            for v in (1, 2, 3)] == [{"v": 0}, {"v": 1}, {"v": 2}]
    assert client.get(f"{url}/k", params={"as_of": written[1]["recorded_at"]}).json()[
        "version"] == 2
    deleted = client.get(f"{url}/gone", params={"version": "2"})
    assert (deleted.status_code, deleted.json()["code"]) == (404, "entry_deleted")


def test_a_read_of_a_write_through_another_worker_asks_the_head(api: RunningServer,
                                                                client: httpx.Client,
                                                                ns: str) -> None:
    """A ``min_position`` this worker has seen (its writes' answers, a head it read) is
    read as the current state, without asking the log's head; one it has not seen asks
    the head first, and one beyond the head is refused, as ever."""
    url = f"/v1/namespaces/{ns}/entries/k"
    head = api.app.state.service.log_head
    mine = client.put(url, json={"v": 0}).json()["position"]
    assert head.holds(mine)
    other = RunningServer(api.settings.model_copy(update={"http_port": free_port()}))
    with other, httpx.Client(headers=AUTH, base_url=other.url, timeout=30) as elsewhere:
        theirs = elsewhere.put(url, json={"v": 1}).json()["position"]
    assert not head.holds(theirs)
    for params in ({"min_position": str(theirs)}, {"min_position": theirs, "ignored": 1}):
        read = client.get(url, params=params)
        assert (read.status_code, read.json()["document"]) == (200, {"v": 1})
    assert head.holds(theirs)  # the head it read
    beyond = client.get(url, params={"min_position": str(head.seen + 1)})
    assert (beyond.status_code, beyond.json()["code"]) == (400, "position_beyond_head")
    assert not head.holds(head.seen + 1)
