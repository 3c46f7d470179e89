"""The HTTP worker processes of ``ssot serve --workers N`` (ops/http_workers.py): only
serve, the writer and the workers run (no resource tracker); a worker that dies is
replaced while the others serve; SIGHUP replaces them one at a time and every request
is answered; and a serve killed outright takes its workers with it."""

from __future__ import annotations

import asyncio
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


class Serving:
    """A running ``ssot serve --workers 2`` and everything it printed so far."""

    def __init__(self, database_url: str, nats_url: str, data: Path) -> None:
        port = free_port()
        env = {**os.environ, "SSOT_DATABASE_URL": database_url,
               "SSOT_HTTP_PORT": str(port), "SSOT_DATA_DIR": str(data),
               # the run's NATS (nothing embedded: serve's children are the writer and
               # the workers alone), on which it never publishes
               "SSOT_NATS_URL": nats_url, "SSOT_BROADCAST": "false",
               "SSOT_PROJECTIONS": "false"}
        self.proc, self.url = start_serve(["--workers", "2"], env, port)
        self.pid = self.proc.pid
        self.output: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()
        # /v1/health answers once one worker serves: wait for both
        self.wait_serving(since=0, started=2)

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.decode(errors="replace"))

    def printed(self, since: int) -> str:
        return "".join(self.output[since:])

    def wait_serving(self, since: int, started: int) -> None:
        """Until ``started`` workers said they serve since line ``since``, and two run."""
        try:
            wait_until(lambda: self.printed(since).count("Application startup complete")
                       == started and len(workers_of(self.pid)) == 2,
                       f"{started} workers to start", timeout=60)
        except AssertionError as e:
            raise AssertionError(f"{e}; serve printed:\n{self.printed(since)}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


@pytest.fixture(scope="module")
def shared(database_url: str, nats_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    """One serve for the tests that leave two workers serving."""
    serving = Serving(database_url, nats_url, tmp_path_factory.mktemp("serve"))
    try:
        yield serving
    finally:
        serving.stop()


@pytest.fixture()
def own(database_url: str, nats_url: str, tmp_path: Path) -> Iterator[Serving]:
    serving = Serving(database_url, nats_url, tmp_path)
    try:
        yield serving
    finally:
        serving.stop()


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


def test_serve_runs_its_workers_and_the_writer_and_nothing_else(shared: Serving) -> None:
    pid = shared.pid
    children = sorted(cmdline(p) for p in descendants(pid, process_table()) - {pid})
    assert len(children) == 3, children
    assert sum(" http-worker " in c for c in children) == 2, children
    assert sum(" writer " in c for c in children) == 1, children
    assert not [c for c in children if "multiprocessing" in c], children


def connections_of(pids: list[int], port: int) -> list[int]:
    """How many established TCP connections to ``port`` each of ``pids`` holds."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(f"socket:[{fields[9]}]")
    held = []
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        held.append(sum(1 for fd in fds.iterdir() if _link(fd) in inodes))
    return held


def _link(fd: Path) -> str | None:
    try:
        return os.readlink(fd)
    except FileNotFoundError:  # closed meanwhile
        return None


async def burst(url: str, n: int, pids: list[int], port: int) -> list[int]:
    """``n`` connections opened at once, each answered once and kept open while the
    connections each worker holds are counted."""
    host, port_text = url.removeprefix("http://").rsplit(":", 1)
    opened = await asyncio.gather(*(asyncio.open_connection(host, int(port_text))
                                    for _ in range(n)))
    try:
        for _, writer in opened:
            writer.write(f"GET /v1/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        for reader, _ in opened:
            assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        return connections_of(pids, port)
    finally:
        for _, writer in opened:
            writer.close()


#: Bursts of connections opened together; the median one is judged.
BURSTS = 9


def test_connections_opened_together_are_spread_over_the_workers(shared: Serving) -> None:
    """Each connection goes to the worker holding fewer (ops/accepting.py). Before, the
    first worker to wake accepted every connection waiting: 16 / 0 in most bursts."""
    port = int(shared.url.rsplit(":", 1)[1])
    pids = workers_of(shared.pid)
    # each worker past its first requests (lazy imports and the like: a worker busy for
    # milliseconds leaves what comes meanwhile to the other, as it should)
    clients: list[httpx.Client] = []
    try:
        while len(clients) < 8 and min(connections_of(pids, port)) < 1:
            c = httpx.Client(base_url=shared.url, headers=AUTH, timeout=10)
            clients.append(c)  # opened one after another and kept: they alternate
            assert c.get("/v1/health").status_code == 200
            assert c.get("/v1/namespaces").status_code == 200
        assert min(connections_of(pids, port)) >= 1
    finally:
        for c in clients:
            c.close()
    wait_until(lambda: sum(connections_of(pids, port)) == 0, "the connections to close")
    splits = []
    for _ in range(BURSTS):
        splits.append(asyncio.run(burst(shared.url, 16, pids, port)))
        wait_until(lambda: sum(connections_of(pids, port)) == 0, "the connections to close")
    # A worker that is not woken within the 2 ms the other leaves it may miss part of a
    # burst: one in thirty on a machine whose cores a CPU hog kept busy, more beside the
    # rest of the suite on a host slow to wake processes (the median burst of five was
    # once 10 / 6 there). The median burst keeps at least 5 on each worker; the first
    # to wake taking everything (16 / 0 in most bursts) fails it.
    assert all(sum(split) == 16 for split in splits), splits
    assert sorted(min(split) for split in splits)[BURSTS // 2] >= 5, splits


def test_a_worker_that_dies_is_replaced_while_the_other_serves(shared: Serving) -> None:
    pid, since = shared.pid, len(shared.output)
    first, second = workers_of(pid)
    reader = Reader(shared.url)
    reader.start()
    try:
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: gone(first), "the worker to die")
        shared.wait_serving(since, started=1)
        assert second in workers_of(pid)
        answered = len(reader.answers)
        wait_until(lambda: len(reader.answers) > answered + 20, "more answers")
    finally:
        reader.stop.set()
        reader.join(30)
    printed = shared.printed(since)
    assert len(re.findall(rf"HTTP worker \d \(pid {first}\) exited with -9; restarting it",
                          printed)) == 1, printed
    # a connection the killed worker had accepted may fail; afterwards every one answers
    assert set(reader.answers[-20:]) == {200}, reader.answers


def test_sighup_replaces_the_workers_one_at_a_time_and_every_request_is_answered(
        shared: Serving) -> None:
    pid, since = shared.pid, len(shared.output)
    before = set(workers_of(pid))
    reader = Reader(shared.url)
    reader.start()
    try:
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: not before & set(workers_of(pid)), "both workers to be replaced",
                   timeout=60)
        shared.wait_serving(since, started=2)
    finally:
        reader.stop.set()
        reader.join(30)
    # never a refused connection (the socket stays open throughout), and every request
    # answered, some after the one retry a client makes when a connection closes unused
    assert reader.answers and set(reader.answers) == {200}, reader.answers
    assert reader.retried <= 2, reader.retried  # at most one per stopping worker
    printed = shared.printed(since)
    assert printed.count("stopped to restart") == 2, printed
    assert "exited with" not in printed, printed


def test_a_serve_killed_outright_takes_its_workers_with_it(own: Serving) -> None:
    children = descendants(own.pid, process_table()) - {own.pid}
    assert len(children) == 3
    os.kill(own.pid, signal.SIGKILL)  # serve alone, not its process group
    wait_until(lambda: all(gone(child) for child in children),
               "the workers and the writer to exit with serve", timeout=60)
