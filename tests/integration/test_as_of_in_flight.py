"""A read as of a moment waits for the appends in flight: an append stamps its commit time
before its commit returns (longer with a synchronous standby), so a read as of a moment
after that stamp, answered while the append is still in flight, would miss an event that
the same read finds later (found by the cluster harness, docs/cluster.md)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import httpx
import psycopg


def test_a_read_as_of_now_waits_until_the_append_in_flight_has_committed(
        client: httpx.Client, ns: str, database_url: str) -> None:
    assert client.put(f"/v1/namespaces/{ns}/entries/k", json={"v": 1}).status_code == 201
    answers: list[httpx.Response] = []
    with psycopg.connect(database_url) as append:  # an append holding the table's lock
        append.execute("LOCK TABLE ssot_events IN EXCLUSIVE MODE")
        moment = datetime.now(UTC).isoformat()
        reader = threading.Thread(target=lambda: answers.append(client.get(
            f"/v1/namespaces/{ns}/entries/k", params={"as_of": moment})))
        reader.start()
        time.sleep(0.5)
        assert not answers  # still waiting for the append in flight
        append.rollback()
    reader.join(10)
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["document"] == {"v": 1}
