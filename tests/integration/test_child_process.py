"""A child of ``ssot serve`` (the writer) is restarted when it dies, and never once serve
is stopping: a restart racing the stop used to leave a new child running after it."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from nexus_ssot.ops.children import ChildProcess
from tests.integration.conftest import make_settings

WAIT = 30.0


class Sleeper(ChildProcess):
    """A child that sleeps until stopped; its restart waits for the test's word."""

    what = "sleeper"

    def __init__(self) -> None:
        super().__init__(make_settings("postgresql://127.0.0.1:1/none"), [])
        self.spawned: list[subprocess.Popen[bytes]] = []
        self.restarting = threading.Event()
        self.go_on = threading.Event()

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self.spawned:  # a restart: hold it until the test has called stop
            self.restarting.set()
            assert self.go_on.wait(WAIT)
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        self.spawned.append(proc)
        return proc


def test_a_restart_under_way_when_serve_stops_leaves_no_child_running() -> None:
    child = Sleeper()
    child.start()
    try:
        child.spawned[0].send_signal(signal.SIGKILL)
        assert child.restarting.wait(WAIT), "the dead child was not restarted"
        stopping = threading.Thread(target=child.stop, args=(WAIT,))
        stopping.start()
        stopping.join(0.5)  # blocked until the restart has its process, or done: either way
        child.go_on.set()
        stopping.join(WAIT)
        assert not stopping.is_alive()
        assert len(child.spawned) == 2
        assert [p.poll() is not None for p in child.spawned] == [True, True], \
            "a child started while serve stopped is still running"
    finally:
        child.go_on.set()
        for proc in child.spawned:
            proc.kill()
            proc.wait()

