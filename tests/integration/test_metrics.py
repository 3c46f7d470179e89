"""``GET /metrics``: Prometheus text that needs a token allowed the action ``metrics``,
labels requests by route template, exports the log's followers as PostgreSQL sees them,
and, under ``ssot serve --workers 2``, adds up what every process counted."""

from __future__ import annotations

import os
import secrets
import signal
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import AUTH, RunningServer, free_port, start_serve, wait_until
from tests.integration.test_access import as_, bearer, make_token, set_policy

Samples = dict[str, list[tuple[dict[str, str], float]]]


def samples(text: str) -> Samples:
    found: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[s.name].append((s.labels, s.value))
    return found


def total(found: Samples, name: str, **labels: str) -> float:
    return sum(v for ls, v in found.get(name, []) if all(ls.get(k) == w
                                                          for k, w in labels.items()))


def scrape(url: str, headers: dict[str, str] = AUTH) -> Samples:
    r = httpx.get(url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(r.text)


ENTRY = "/v1/namespaces/{namespace}/entries/{key:path}"


def test_metrics_are_for_callers_allowed_to_read_them(api: RunningServer) -> None:
    assert httpx.get(api.url + "/metrics").status_code == 401
    with httpx.Client(headers=AUTH, base_url=api.url, timeout=30) as admin:
        subject = f"prom{secrets.token_hex(3)}"
        reader = make_token(admin, f"{subject}-reader")
        prometheus = make_token(admin, subject)
        set_policy(admin, f"scrape-{subject}", {"effect": "allow", "subjects": [f"user:{subject}"],
                                                "actions": ["metrics"],
                                                "namespaces": ["_system"]})
    with as_(api, reader) as c:
        assert c.get("/metrics").status_code in (403, 404)
    wait_until(lambda: httpx.get(api.url + "/metrics",
                                 headers=bearer(prometheus)).status_code == 200,
               "the scrape policy to apply")
    with as_(api, prometheus) as c:  # a metrics token reads nothing else
        assert c.get("/v1/namespaces").json().get("items", []) == []


def test_requests_count_by_route_template_and_errors_by_code(api: RunningServer,
                                                             client: httpx.Client,
                                                             ns: str) -> None:
    before = scrape(api.url)
    written = client.put(f"/v1/namespaces/{ns}/entries/a/b", json={"v": 1})
    assert written.status_code == 201
    assert client.put(f"/v1/namespaces/{ns}/entries/a/b", json={"v": 1}).status_code == 200
    assert client.get(f"/v1/namespaces/{ns}/entries/missing").status_code == 404
    assert httpx.get(api.url + f"/v1/namespaces/{ns}/entries/a/b").status_code == 401
    after = scrape(api.url)
    text = httpx.get(api.url + "/metrics", headers=AUTH).text
    assert ns not in text  # a template, never the raw path

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("ssot_http_requests_total", route=ENTRY, method="PUT", status="201") == 1
    assert grew("ssot_http_requests_total", route=ENTRY, method="PUT", status="200") == 1
    assert grew("ssot_http_requests_total", route=ENTRY, method="GET", status="404") == 1
    assert grew("ssot_http_requests_total", route="unrouted", status="401") >= 1
    assert grew("ssot_http_request_duration_seconds_count", route=ENTRY, method="PUT") == 2
    assert grew("ssot_http_errors_total", code="entry_not_found") == 1
    assert grew("ssot_auth_denials_total", reason="missing") >= 1
    assert grew("ssot_writes_total", event_type="entry.created", outcome="appended") == 1
    assert grew("ssot_writes_total", outcome="unchanged") == 1
    assert total(after, "ssot_store_up") == 1
    assert total(after, "ssot_log_head_position") >= written.json()["position"]


def test_change_feed_clients_are_counted_while_connected(api: RunningServer) -> None:
    def clients() -> float:
        return total(scrape(api.url), "ssot_sse_clients")

    before = clients()
    with httpx.stream("GET", api.url + "/v1/events/stream", headers=AUTH,
                      timeout=30) as feed:
        assert feed.status_code == 200
        lines = feed.iter_lines()  # kept: a dropped iterator closes the response
        assert next(lines) == ": nexus-ssot event stream"
        assert clients() == before + 1
    wait_until(lambda: clients() == before, "the closed feed to be uncounted")


def test_serve_adds_up_every_process_in_one_scrape(database_url: str, nats_url: str,
                                                   stream: tuple[str, str],
                                                   tmp_path: Path) -> None:
    name, prefix = stream
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_NATS_URL": nats_url,
           "SSOT_DATA_DIR": str(tmp_path), "SSOT_HTTP_PORT": str(port),
           "SSOT_NATS_STREAM": name, "SSOT_NATS_SUBJECT_PREFIX": prefix,
           "SSOT_BROADCASTER_NAME": f"metrics-{name}", "SSOT_DIGESTS": "false",
           "SSOT_PROJECTIONS": "false"}
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"left by an earlier serve")
    proc, url = start_serve(["--workers", "2"], env, port)
    ns = f"m{secrets.token_hex(4)}"

    def put(i: int) -> int:  # a connection each, so that either worker may accept it
        r = httpx.put(f"{url}/v1/namespaces/{ns}/entries/k{i}", json={"i": i},
                      headers=AUTH)
        assert r.status_code == 201, r.text
        return int(r.json()["position"])

    def pids() -> set[str]:
        return {p.stem.rsplit("_", 1)[1] for p in folder.glob("*.db")}

    try:
        # Which worker accepts a connection is the kernel's choice: one may take forty in a
        # row. Eight at a time, until both workers have served one (a metrics file each,
        # beside serve's and the writer's), at least forty writes, at most four hundred.
        writes, last = 0, 0
        with ThreadPoolExecutor(8) as pool:
            while writes < 40 or (len(pids()) < 4 and writes < 400):
                last = max(last, *pool.map(put, range(writes, writes + 8)))
                writes += 8
        found = scrape(url)
        assert total(found, "ssot_http_requests_total", route=ENTRY, method="PUT") == writes
        assert total(found, "ssot_writer_batch_size_sum") == writes  # the writer process
        assert total(found, "ssot_writes_total", outcome="appended") == writes
        # the broadcaster, a thread of serve itself, times each event to its PubAck
        wait_until(lambda: total(scrape(url), "ssot_broadcaster_delivery_seconds_count")
                   >= writes, "the broadcaster's deliveries in the scrape", timeout=60)
        # its tracked position, read from the database at the scrape, is saved at most
        # every 200 ms (ledger/broadcaster.py), so it may follow the deliveries a little
        wait_until(lambda: total(scrape(url), "ssot_broadcaster_position") >= last,
                   "the broadcaster's saved position in the scrape", timeout=30)
        assert folder.stat().st_mode & 0o777 == 0o700
        assert "1" not in pids()  # the earlier serve's files were removed at start
        assert len(pids()) >= 4, pids()  # two HTTP workers, the writer and serve itself
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output


def test_every_metric_a_scrape_shows_is_in_the_documented_table(api: RunningServer) -> None:
    from tests.unit.test_monitoring import documented_metrics

    text = httpx.get(api.url + "/metrics", headers=AUTH, timeout=10).text
    shown = {f.name for f in text_string_to_metric_families(text)
             if f.name.startswith("ssot_")}
    known = documented_metrics()
    assert shown - known == set(), "metrics missing from docs/metrics.md"
    # all but those that need a digest, a verify or an export to exist
    assert known - shown <= {"ssot_digest_age_seconds"}
