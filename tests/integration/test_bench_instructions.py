"""``make bench-instructions``: the HTTP worker it starts under valgrind has the environment
of serve's workers, but watches the bench as its parent (else it stops at once)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any, cast

from nexus_ssot.ops.bench import instructions
from nexus_ssot.ops.children import PARENT_PID


def test_the_worker_counted_takes_its_peers_environment_and_watches_the_bench() -> None:
    # a stand-in for serve's worker: a child of this process named like one
    peer = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "http-worker"],
        stdin=subprocess.PIPE, env={**os.environ, PARENT_PID: "1", "SSOT_HTTP_PORT": "8123"})
    try:
        server = cast(Any, SimpleNamespace(pid=os.getpid()))
        environment = instructions._worker_environment(server)
    finally:
        assert peer.stdin is not None
        peer.stdin.close()
        peer.wait(30)
    assert environment["SSOT_HTTP_PORT"] == "8123"
    assert environment[PARENT_PID] == str(os.getpid())
