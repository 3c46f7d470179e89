"""``ssot writer``: the group-commit writer as its own process, serving a Unix socket."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import uvloop
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.writer import GroupCommitWriter
from nexus_ssot.ledger.writer_service import serve_writer

log = logging.getLogger("nexus_ssot.writer")


def run_writer(settings: Settings, socket_path: str) -> None:
    """Run until SIGTERM/SIGINT; then commit what was accepted and exit."""
    if not settings.database_url:
        raise SystemExit("ssot writer needs SSOT_DATABASE_URL")
    migrate(settings.database_url)
    application = open_application(settings.database_url, pool_size=2)
    writer = GroupCommitWriter(application, settings.limits, max_batch=settings.max_batch,
                               cache_size=settings.state_cache_size)
    _exit_with_parent()
    Path(socket_path).unlink(missing_ok=True)
    try:
        uvloop.run(serve_writer(writer, socket_path))
    finally:
        application.close()
        Path(socket_path).unlink(missing_ok=True)


def _exit_with_parent() -> None:
    """If `ssot serve` dies without stopping us (SIGKILL), stop as if asked to."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        log.warning("parent process %s is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="ssot-parent-watch", daemon=True).start()


def new_socket_path() -> str:
    # Unix socket paths are limited to ~108 bytes: keep it short, in the temp folder.
    return os.path.join(tempfile.gettempdir(), f"ssot-writer-{uuid.uuid4().hex[:12]}.sock")


class WriterProcess:
    """``ssot writer`` as a child of ``ssot serve``; restarted if it dies while serving."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.socket_path = new_socket_path()
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="ssot-writer-watch",
                                         daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.settings.as_environment()}
        return subprocess.Popen(
            [sys.executable, "-m", "nexus_ssot.ops.cli", "writer", "--socket", self.socket_path],
            env=env, stdin=subprocess.DEVNULL,
            # Its own session: a Ctrl-C meant for `ssot serve` must not stop the writer
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
                raise RuntimeError(f"the writer process exited with {self.proc.returncode}")
            with socket.socket(socket.AF_UNIX) as s:
                if s.connect_ex(self.socket_path) == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("the writer process did not become ready")
            time.sleep(0.05)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            assert self.proc is not None
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            log.error("the writer process exited with %s; restarting it", code)
            time.sleep(1.0)
            if self._stopping.is_set():
                return
            self.proc = self._spawn()
            try:
                self._wait_ready(60.0)
            except RuntimeError as e:
                log.error("%s", e)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM: the writer commits what it accepted, answers, and exits."""
        self._stopping.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the writer process did not stop in %.0fs; killing it", timeout)
            self.proc.kill()
            self.proc.wait()

