"""Child processes of ``ssot serve``: started, watched, restarted, stopped."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from nexus_ssot.ledger.settings import Settings

log = logging.getLogger("nexus_ssot.serve")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: The environment variable in which `ssot serve` gives its children its pid: a child
#: whose serve died before the child could watch for that (while it started) stops.
PARENT_PID = "SSOT_SERVE_PID"


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment of a child of this `ssot serve`: its own, ``settings``, and
    ``PARENT_PID``."""
    return {**os.environ, **settings.as_environment(), PARENT_PID: str(os.getpid())}


class ChildExited(RuntimeError):
    """A child exited before it was ready; it said why on stderr (stderr is shared)."""

    def __init__(self, what: str, returncode: int) -> None:
        super().__init__(f"the {what} process exited with {returncode}")
        self.returncode = returncode


class ChildProcess:
    """``ssot ARGS…`` as a child of ``ssot serve``; restarted if it dies while serving."""

    what = "child"

    def __init__(self, settings: Settings, args: list[str]) -> None:
        self.settings = settings
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        #: Held to start a process and to stop: none is started once stopping (a restart
        #: racing ``stop`` would otherwise leave a child running past serve's stop).
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name=f"ssot-{self.what}-watch",
                                         daemon=True)

    def ready(self) -> bool:
        """Whether a started child is ready for work (override for a real check)."""
        return True

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = child_environment(self.settings)
        return subprocess.Popen(
            [sys.executable, "-m", "nexus_ssot.ops.cli", *self.args],
            env=env, stdin=subprocess.DEVNULL,
            # Its own session: a Ctrl-C meant for `ssot serve` must not stop the child
            # before the HTTP side has drained; serve stops it afterwards.
            start_new_session=True,
        )

    def start(self, timeout: float = 60.0) -> None:
        self.proc = self._spawn()
        self._wait_ready(timeout)
        self._watcher.start()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ChildExited(self.what, self.proc.returncode)
            if self.ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.what} process did not become ready")
            time.sleep(0.05)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            assert self.proc is not None
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            log.error("the %s process exited with %s; restarting it", self.what, code)
            if self._stopping.wait(1.0) or not self._respawn():
                return
            try:
                self._wait_ready(60.0)
            except RuntimeError as e:
                if not self._stopping.is_set():  # else stop ended it: nothing went wrong
                    log.error("%s", e)

    def _respawn(self) -> bool:
        """Start the next process (False once stopping: then none is started)."""
        with self._lock:
            if self._stopping.is_set():
                return False
            self.proc = self._spawn()
            return True

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, then wait: the child finishes what it accepted and exits."""
        with self._lock:  # a restart under way has its process in self.proc first
            self._stopping.set()
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the %s process did not stop in %.0fs; killing it", self.what, timeout)
            proc.kill()
            proc.wait()


def exit_with_parent() -> None:
    """If `ssot serve` dies without stopping us (SIGKILL), stop as if asked to: at once
    through the kernel's parent-death signal (Linux; it follows the thread that started
    us, which lives as long as serve), else by noticing it within a second.
    Without the signal, a restarted `ssot serve` ran its new writer beside the old one
    for about a second (found by `ssot chaos`). A serve that died before this was called
    (while the child imported, seconds on a slow machine) sends no signal and is no longer
    the parent to watch: the child learns it from ``PARENT_PID`` and stops now (found by
    `ssot chaos`: a writer outlived its killed serve by 30 s and more)."""
    given = os.environ.get(PARENT_PID, "")
    parent = int(given) if given.isdigit() else os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # (checked after arming: no moment is left unwatched)
        log.warning("parent process %s is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        log.warning("parent process %s is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="ssot-parent-watch", daemon=True).start()
