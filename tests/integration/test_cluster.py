"""The cluster (docs/cluster.md) in a short run of make test: two API nodes, followers
with standbys, PostgreSQL with a synchronous standby and a read replica, three NATS nodes;
the leading broadcaster, projector and digester killed under load; the chaos checker
finds nothing wrong and the standbys took over within the documented time. The long runs
of every fault are in test_cluster_faults.py (make test-cluster)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from psycopg.conninfo import make_conninfo

from nexus_ssot.ledger.store import open_application
from nexus_ssot.ops.cluster.topology import OWNER, sweep

#: The documented takeover time of a follower standby (docs/cluster.md).
TAKEOVER_TARGET_S = 5.0
SEED = 20261203


def chaos_on_the_cluster(run: Path, duration: int, faults: list[str], clients: int = 6,
                         timeout: float = 240) -> dict[str, Any]:
    """``ssot chaos --topology cluster`` with only ``faults``; its report (the run must
    end with exit 0: no anomaly). Past ``timeout`` it is stopped with SIGTERM, which
    stops the cluster it started (pytest's own timeout, 300 s, would not)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSOT_")}
    command = [sys.executable, "-m", "nexus_ssot.ops.cli", "chaos", "--topology", "cluster",
               "--duration", str(duration), "--clients", str(clients), "--seed", str(SEED),
               "--dir", str(run)]
    for fault in faults:
        command += ["--fault", fault]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=120)
        pytest.fail(f"the run took more than {timeout:.0f} s:\n{out}{err[-4000:]}"
                    f"{kept(run)}")
    assert proc.returncode == 0, out + err[-4000:] + kept(run)
    report: dict[str, Any] = orjson.loads((run / "report.json").read_bytes())
    assert report["ok"] and report["anomalies"] == {}
    return report


def kept(run: Path) -> str:
    """A failed run's folder copied where pytest's rotation of its temporary folders
    will not remove it (the evidence of a rare anomaly); says where."""
    keep = Path(tempfile.gettempdir()) / "ssot-cluster-failures" / \
        f"{run.parent.name}-{time.time():.0f}"
    with contextlib.suppress(OSError):
        shutil.copytree(run, keep, ignore=shutil.ignore_patterns("data"))
        return f"\nthe run folder is kept in {keep}"
    return ""


def measured(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    found = [m for m in report["faults"]["measured"] if m["kind"] == kind]
    assert found, report["faults"]
    return found


@pytest.mark.e2e
def test_the_leading_followers_killed_under_load_are_replaced_within_five_seconds(
        tmp_path: Path) -> None:
    report = chaos_on_the_cluster(tmp_path / "run", 10, ["kill_followers"], clients=4)
    assert report["operations"]["writes_acknowledged"] > 0
    for fault in measured(report, "kill_followers"):
        assert set(fault["takeover_s"]) == {"broadcaster", "projector", "digester"}
        assert max(fault["takeover_s"].values()) < TAKEOVER_TARGET_S, fault
    cluster = orjson.loads((tmp_path / "run" / "cluster.json").read_bytes())
    streams = cluster["streams"]
    ledger = [name for name in streams if name.startswith("CHAOS_")]
    buckets = [name for name in streams if name.startswith("KV_")]
    assert ledger and buckets, streams
    assert all(streams[name] == 3 for name in ledger + buckets), streams


def test_the_leftovers_of_a_killed_harness_are_removed_and_a_live_ones_kept(
        tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / OWNER).write_text(f"{dead.pid}\n")
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / OWNER).write_text(f"{os.getpid()}\n")
    (tmp_path / "new").mkdir()  # its owner has not written its pid yet
    assert sweep(tmp_path) == ["gone"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "new"]


def test_the_writers_pool_connects_with_every_parameter_of_the_database_url(
        database_url: str) -> None:
    """target_session_attrs of a multi-host URL is what makes the writer find a promoted
    standby; the library's pool took only dbname, host, port, user and password."""
    url = make_conninfo(database_url, application_name="ssot-writer-probe",
                        target_session_attrs="read-write")
    application = open_application(url, pool_size=1)
    try:
        with application.recorder.datastore.get_connection() as conn:
            row = conn.execute("SHOW application_name").fetchone()
    finally:
        application.close()
    assert row is not None and row["application_name"] == "ssot-writer-probe"
