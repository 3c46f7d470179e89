"""``ssot status``: one screen of green, amber and red, read from a live database, NATS and
API; exit code 1 when anything is red. An export and a verify record their runs for it."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from nexus_ssot.ledger.writer_service import RemoteWriter
from tests.integration.conftest import AUTH, RunningServer, free_port, own_database
from tests.integration.test_access import as_, make_token

SSOT = str(Path(sys.executable).parent / "ssot")


@pytest.fixture()
def fresh_database(server_url: str) -> Iterator[str]:
    """A database of this test's own (its operation runs are its own)."""
    with own_database(server_url, "ssot_status") as url:
        yield url


def status(database_url: str, nats_url: str, api_url: str, *args: str,
           **env: str) -> tuple[int, dict[str, Any]]:
    run = subprocess.run(
        # a loaded machine can take seconds to connect: the default 2 s would judge it red
        [SSOT, "--url", api_url, "status", "--json", "--timeout", "30", *args],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_NATS_URL": nats_url,
             "SSOT_NATS_STREAM": f"NONE_{secrets.token_hex(3)}", **env})
    body = orjson.loads(run.stdout)
    return run.returncode, body


def test_a_writer_process_that_is_gone_is_unreachable() -> None:
    gone = RemoteWriter(f"/tmp/ssot-writer-{secrets.token_hex(6)}.sock", connect_timeout=1)
    assert asyncio.run(gone.reachable()) is False


def levels(body: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["level"] for c in body["checks"]}


def test_status_judges_each_part_and_exits_1_when_one_is_red(
        fresh_database: str, nats_url: str, api: RunningServer, tmp_path: Path) -> None:
    code, body = status(fresh_database, nats_url, api.url)
    found = levels(body)
    assert found["postgresql"] == found["api"] == found["writer"] == "green"
    assert found["nats"] == "amber"  # no stream of that name: nothing broadcast yet
    assert found["broadcaster"] == "amber"  # never ran on this database
    assert found["last backup"] == found["last verify"] == "amber"  # never run
    assert found["schemas"] == "amber"  # the quality view is not built on this database
    assert all("threshold" in c and c["threshold"] for c in body["checks"])
    assert code == 0 and body["status"] == "amber"

    export = subprocess.run([SSOT, "export", "--out", str(tmp_path / "b.ndjson.gz")],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SSOT_DATABASE_URL": fresh_database})
    assert export.returncode == 0, export.stderr
    verify = subprocess.run([SSOT, "verify"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SSOT_DATABASE_URL": fresh_database})
    assert verify.returncode == 0, verify.stderr
    code, body = status(fresh_database, nats_url, api.url, SSOT_BROADCAST="false",
                        SSOT_PROJECTIONS="false")
    found = levels(body)
    assert found["last backup"] == found["last verify"] == "green", body
    assert found["broadcaster"] == "green"  # off, as configured
    assert code == 0

    with psycopg.connect(fresh_database, autocommit=True) as conn:  # a verify that failed
        conn.execute("UPDATE operation_runs SET ok = false WHERE operation = 'verify'")
    code, body = status(fresh_database, nats_url, f"http://127.0.0.1:{free_port()}")
    found = levels(body)
    assert found["last verify"] == found["api"] == found["writer"] == "red"
    assert code == 1 and body["status"] == "red"


def test_the_status_route_judges_as_ssot_status_does_for_a_caller_allowed_metrics(
        api: RunningServer, ns: str) -> None:
    with httpx.Client(headers=AUTH, base_url=api.url, timeout=30) as admin:
        body = admin.get("/v1/status").json()
        assert body["status"] in ("green", "amber", "red")
        names = [c["name"] for c in body["checks"]]
        assert names[:2] == ["postgresql", "writer"]
        assert {"broadcaster", "digests", "last backup", "last verify", "schemas"} <= set(names)
        assert all(set(c) == {"name", "level", "value", "threshold"} for c in body["checks"])
        writer = next(c for c in body["checks"] if c["name"] == "writer")
        assert (writer["level"], writer["value"]) == ("green", "ok")
        assert httpx.get(api.url + "/v1/status").status_code == 401
        reader = make_token(admin, f"reader-{ns}")
    with as_(api, reader) as caller:  # no policy grants it the action metrics
        assert caller.get("/v1/status").status_code in (403, 404)
