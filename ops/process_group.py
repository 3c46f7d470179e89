"""A process the harnesses (``ssot chaos``, the cluster) start in a process group of its
own, so SIGKILL, SIGSTOP and SIGCONT reach every process it forks; and the ``/proc``
look-ups they share (is a process alive, which children has it, a free port)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from .embedded.processes import alive, free_port, free_ports

__all__ = ["Group", "alive", "child_processes", "free_port", "free_ports"]

log = logging.getLogger("nexus_ssot.chaos")


class Group:
    """A process the harness starts in a process group of its own (so SIGKILL, SIGSTOP
    and SIGCONT reach every process it forks)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        if self.alive:
            return
        if self._log is not None:  # of the process before a kill
            self._log.close()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def wait_healthy(self, url: str, timeout: float = 120.0) -> None:
        """Until ``GET {url}/v1/health`` answers 200 (an ``ssot serve``); raises when the
        process exits first or ``timeout`` passes."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/health", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not healthy in {timeout:.0f} s")

    def stop(self, timeout: float = 40.0) -> None:
        """SIGCONT (a paused group cannot stop), SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop in %.0f s: killing it", self.name, timeout)
        self.signal(signal.SIGKILL)  # whatever of the group is left
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()


def child_processes(parent: int, word: str) -> list[int]:
    """Processes whose parent is ``parent`` and whose command line holds ``word``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and word.encode() in argv:
            found.append(int(entry.name))
    return found
