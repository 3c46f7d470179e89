"""`ssot reconcile` compares the stream with the log and repairs a missing tail."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nats

from nexus_ssot.ledger.broadcaster import Broadcaster
from tests.integration.conftest import own_log
from tests.integration.test_broadcaster import InThread, head, wait_until_published

SSOT = str(Path(sys.executable).parent / "ssot")


database_url, api = own_log("ssot_rec")


def reconcile(database_url: str, nats_url: str, stream: tuple[str, str],
              *args: str) -> tuple[int, dict[str, Any]]:
    name, prefix = stream
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_NATS_URL": nats_url,
           "SSOT_NATS_STREAM": name, "SSOT_NATS_SUBJECT_PREFIX": prefix}
    done = subprocess.run([SSOT, "--json", "reconcile", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    return done.returncode, json.loads(done.stdout)


def test_reconcile_proves_equality_repairs_a_missing_tail_and_reports_a_hole(
    client: httpx.Client, database_url: str, nats_url: str, stream: tuple[str, str],
    ns: str,
) -> None:
    name, prefix = stream
    for i in range(4):
        client.put(f"/v1/namespaces/{ns}/entries/k", json={"i": i})
    end, positions = head(database_url)
    with InThread(Broadcaster(database_url, nats_url, stream=name, prefix=prefix,
                              name=f"rec-{name}")):
        wait_until_published(nats_url, name, end, timeout=30)

    code, report = reconcile(database_url, nats_url, stream)
    assert code == 0 and report["consistent"]
    # counted, not the last position: writes refused earlier in this database left gaps
    assert report["log_count"] == report["stream_count"] == len(positions)
    assert report["log_hash"] == report["stream_hash"]

    # the broadcaster is away: three events reach the log but not the stream
    later = [client.put(f"/v1/namespaces/{ns}/entries/k", json={"late": i}).json()["position"]
             for i in range(3)]
    code, report = reconcile(database_url, nats_url, stream)
    assert code == 1 and report["missing"] == later and report["republished"] == []
    code, report = reconcile(database_url, nats_url, stream, "--repair")
    assert code == 0 and report["republished"] == later
    code, report = reconcile(database_url, nats_url, stream)
    assert code == 0 and report["log_hash"] == report["stream_hash"]

    async def punch_a_hole() -> int:  # lose one message in the middle of the stream
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        lost = int((await js.get_msg(name, seq=2)).headers["Ssot-Position"])
        await js.delete_msg(name, 2)
        await nc.close()
        return lost

    lost = asyncio.run(punch_a_hole())
    code, report = reconcile(database_url, nats_url, stream, "--repair")
    assert code == 1 and not report["consistent"]
    assert report["gaps_inside"] == [lost] and report["republished"] == []
