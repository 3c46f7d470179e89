"""`ssot serve` and its followers of the log: on a database never migrated with a writer in
each HTTP worker, the followers start on a schema serve made first; and when their thread
ends on an error none of them handles, serve stops and exits 1 instead of answering writes
that nothing will broadcast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.integration.conftest import AUTH, free_port, own_database, start_serve, wait_until


def test_serve_with_the_writer_in_each_worker_follows_a_new_database(
        server_url: str, tmp_path: Path) -> None:
    """``SSOT_WRITER_PROCESS=false`` on a database never migrated: serve makes the schema
    before its followers start (they read tables the HTTP workers would make only as they
    start), so the views follow the writes; with ``SSOT_FOLLOWERS_NICE=10`` their thread
    runs at the process's nice value + 10, and the process's main thread at its own."""
    with own_database(server_url, "ssot_thread_writer", migrated=False) as database_url:
        port = free_port()
        env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_HTTP_PORT": str(port),
               "SSOT_DATA_DIR": str(tmp_path), "SSOT_WRITER_PROCESS": "false",
               "SSOT_BROADCAST": "false",  # never publish on a NATS server we did not start
               "SSOT_FOLLOWERS_NICE": "10"}
        proc, url = start_serve(["--workers", "2"], env, port)
        try:
            for i in range(5):
                put = httpx.put(f"{url}/v1/namespaces/threads/entries/k{i}", json={"i": i},
                                headers=AUTH)
                assert put.status_code == 201, put.text
            last = put.json()["position"]

            def followed() -> bool:
                with psycopg.connect(database_url) as conn:
                    row = conn.execute("SELECT notification_id FROM projection_tracking"
                                       " WHERE application_name = 'namespace_stats'"
                                       ).fetchone()
                return row is not None and row[0] >= last

            wait_until(followed, "namespace_stats to follow the writes", timeout=30)
            nice = _nice_by_thread(proc.pid)
            assert nice["ssot-followers"] == min(19, nice["main"] + 10), nice
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "UndefinedTable" not in output, output  # not even for a while


def _nice_by_thread(pid: int) -> dict[str, int]:
    """The nice value of each thread of process ``pid`` by its name (``main``: the
    process's first thread), from ``/proc/PID/task/TID/stat``."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        name = "main" if task.name == str(pid) else stat[stat.index("(") + 1:stat.rindex(")")]
        found[name] = int(stat[stat.rindex(")") + 2:].split()[16])  # field 19, nice
    return found


#: ``ssot serve`` whose followers' thread fails at once, or once the file named by its
#: first argument exists: the class is patched once serve has set its metrics folder
#: (before it, nothing may import prometheus-client).
FAILING_FOLLOWERS = """
import asyncio, os, runpy, sys
from nexus_ssot.ops import metrics_folder

TRIGGER = sys.argv[1]

async def broken(self, stop):
    while TRIGGER and not os.path.exists(TRIGGER):
        await asyncio.sleep(0.05)
    raise RuntimeError("a follower's bug")

def with_metrics_folder(settings, set_folder=metrics_folder.with_metrics_folder):
    settings = set_folder(settings)
    from nexus_ssot.ops import followers
    followers.FollowersThread._follow = broken
    return settings

metrics_folder.with_metrics_folder = with_metrics_folder
sys.argv = ["ssot", "serve", "--workers", sys.argv[2]]
runpy.run_module("nexus_ssot.ops.cli", run_name="__main__")
"""


@pytest.mark.parametrize(("serving", "workers"), [(False, 2), (True, 2), (True, 1)],
                         ids=["before-serving", "serving", "serving-one-worker"])
def test_serve_stops_and_exits_1_when_its_followers_thread_dies(
        database_url: str, tmp_path: Path, serving: bool, workers: int) -> None:
    """Every follower handles its own errors; one none of them handles (a bug) ends the
    followers' thread, and serve does not go on answering writes that nothing will
    broadcast: it stops as on SIGTERM and exits 1, for its supervisor to start it again
    (also when it happens before serving has begun)."""
    script = tmp_path / "failing_followers.py"
    script.write_text(FAILING_FOLLOWERS)
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_HTTP_PORT": str(port),
           "SSOT_DATA_DIR": str(tmp_path / "data"), "SSOT_BROADCAST": "false"}
    trigger = tmp_path / "fail-now" if serving else None
    proc = subprocess.Popen([sys.executable, str(script), str(trigger or ""), str(workers)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        if trigger is not None:
            wait_until(lambda: _answers(port), "serve to answer", timeout=60)
            trigger.touch()
        assert proc.wait(60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert "the followers of the log stopped (RuntimeError: a follower's bug)" in output, output
    assert output.rstrip().splitlines()[-1].startswith("error: followers_stopped: "), output
    assert not _answers(port)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
