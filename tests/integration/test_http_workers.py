"""The HTTP worker processes of ``ssot serve --workers N`` (ops/http_workers.py): only
serve, the writer and the workers run (no resource tracker); a worker that dies is
replaced while the others serve; SIGHUP replaces them one at a time and every request
is answered; and a serve killed outright takes its workers with it."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus_ssot.ops.bench.measuring import descendants, process_table
from nexus_ssot.ops.bench.server import gone
from tests.integration.conftest import AUTH, free_port, start_serve, wait_until


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def workers_of(serve: int) -> list[int]:
    """The pids of serve's HTTP workers."""
    tree = descendants(serve, process_table()) - {serve}
    return sorted(pid for pid in tree if " http-worker " in cmdline(pid))


@pytest.fixture()
def serve(database_url: str, nats_url: str,
          tmp_path: Path) -> Iterator[tuple[int, str, list[str]]]:
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_HTTP_PORT": str(port),
           "SSOT_DATA_DIR": str(tmp_path),
           # the run's NATS (nothing embedded: serve's children are the writer and the
           # workers alone), on which it never publishes
           "SSOT_NATS_URL": nats_url, "SSOT_BROADCAST": "false", "SSOT_PROJECTIONS": "false"}
    proc, url = start_serve(["--workers", "2"], env, port)
    output: list[str] = []

    def collect() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line.decode(errors="replace"))

    threading.Thread(target=collect, daemon=True).start()
    # /v1/health answers once one worker serves: wait for both
    wait_until(lambda: "".join(output).count("Application startup complete") == 2,
               "both workers to serve", timeout=60)
    try:
        yield proc.pid, url, output
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


class Reader(threading.Thread):
    """GETs in a loop on fresh connections until stopped: what each answered. A GET whose
    connection closes before an answer is sent again once, as browsers and HTTP client
    libraries do for an idempotent request (a stopping worker closes the connections it
    accepted but has read no request from yet); ``retried`` counts them."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.answers: list[int | str] = []
        self.retried = 0

    def get(self) -> int:
        with httpx.Client(headers=AUTH, timeout=10) as c:
            return c.get(self.url + "/v1/namespaces").status_code

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                try:
                    self.answers.append(self.get())
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    self.retried += 1
                    self.answers.append(self.get())
            except httpx.HTTPError as e:
                self.answers.append(type(e).__name__)


def test_serve_runs_its_workers_and_the_writer_and_nothing_else(
        serve: tuple[int, str, list[str]]) -> None:
    pid, _url, _output = serve
    children = sorted(cmdline(p) for p in descendants(pid, process_table()) - {pid})
    assert len(children) == 3, children
    assert sum(" http-worker " in c for c in children) == 2, children
    assert sum(" writer " in c for c in children) == 1, children
    assert not [c for c in children if "multiprocessing" in c], children


def test_a_worker_that_dies_is_replaced_while_the_other_serves(
        serve: tuple[int, str, list[str]]) -> None:
    pid, url, output = serve
    first, second = workers_of(pid)
    reader = Reader(url)
    reader.start()
    try:
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: gone(first) and len(workers_of(pid)) == 2
                   and "".join(output).count("Application startup complete") == 3,
                   "a new worker to serve", timeout=60)
        assert second in workers_of(pid)
        answered = len(reader.answers)
        wait_until(lambda: len(reader.answers) > answered + 20, "more answers")
    finally:
        reader.stop.set()
        reader.join(30)
    assert len(re.findall(rf"HTTP worker \d \(pid {first}\) exited with -9; restarting it",
                          "".join(output))) == 1, "".join(output)
    # a connection the killed worker had accepted may fail; afterwards every one answers
    assert set(reader.answers[-20:]) == {200}, reader.answers


def test_sighup_replaces_the_workers_one_at_a_time_and_every_request_is_answered(
        serve: tuple[int, str, list[str]]) -> None:
    pid, url, output = serve
    before = set(workers_of(pid))
    reader = Reader(url)
    reader.start()
    try:
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: len(workers_of(pid)) == 2 and not before & set(workers_of(pid)),
                   "both workers to be replaced", timeout=60)
    finally:
        reader.stop.set()
        reader.join(30)
    # never a refused connection (the socket stays open throughout), and every request
    # answered, some after the one retry a client makes when a connection closes unused
    assert reader.answers and set(reader.answers) == {200}, reader.answers
    assert reader.retried <= 2, reader.retried  # at most one per stopping worker
    text = "".join(output)
    assert text.count("stopped to restart") == 2, text
    assert "exited with" not in text, text


def test_a_serve_killed_outright_takes_its_workers_with_it(
        serve: tuple[int, str, list[str]]) -> None:
    pid, _url, _output = serve
    children = descendants(pid, process_table()) - {pid}
    assert len(children) == 3
    os.kill(pid, signal.SIGKILL)  # serve alone, not its process group
    wait_until(lambda: all(gone(child) for child in children),
               "the workers and the writer to exit with serve", timeout=60)
