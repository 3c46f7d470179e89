"""A write the writer has not committed within the write timeout (``SSOT_WRITE_TIMEOUT``)
is answered 503 at its deadline, saying it may still commit; it commits once the log is
free, and the same request again with its Idempotency-Key learns that outcome."""

from __future__ import annotations

import time

import httpx
import psycopg

from .conftest import AUTH, make_settings, serving


def test_a_write_held_past_the_timeout_is_answered_503_and_commits_later(
        database_url: str, ns: str) -> None:
    path = f"/v1/namespaces/{ns}/entries/held"
    retry = {"Idempotency-Key": "held-once"}
    with serving(make_settings(database_url, write_timeout=0.5)) as api, \
            httpx.Client(headers=AUTH, base_url=api.url, timeout=30) as client:
        with psycopg.connect(database_url) as holder:
            holder.execute("LOCK TABLE ssot_events IN SHARE MODE")  # appends wait for it
            started = time.monotonic()
            held = client.put(path, json={"a": 1}, headers=retry)
            waited = time.monotonic() - started
            assert held.status_code == 503, held.text
            problem = held.json()
            assert problem["code"] == "unavailable"
            assert "within 0.5s" in problem["detail"]
            assert "Idempotency-Key" in problem["detail"]
            assert 0.5 <= waited < 10
            holder.rollback()  # the log is free: the held write commits
        again = client.put(path, json={"a": 1}, headers=retry)
        assert again.status_code == 201, again.text
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.json()["version"] == 1
        assert client.get(path).json()["document"] == {"a": 1}
