"""What the embedded servers share: their error, their address, free ports, their logs'
last lines, pid files, and ending a process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
_LOG_LINES = 20
#: Starts tried on other free ports after a port taken meanwhile (ports are not reserved).
PORT_ATTEMPTS = 3


class EmbeddedError(RuntimeError):
    """An embedded server could not be prepared, started or stopped."""


class EmbeddedServer:
    """An embedded server; as a context manager, started on entry and stopped on exit."""

    def start(self) -> str:
        """Start the server and return its URL."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server; does nothing when it is not running."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Distinct ports the kernel considers free on ``host`` (127.0.0.1 unless told). Every
    socket stays bound until all are chosen, so the kernel never hands out one port twice
    (closed one by one, it may: a NATS server once got the same port for its monitor and
    its routes). A race with other processes remains; callers retry."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port(host: str = HOST) -> int:
    """One port the kernel considers free on ``host`` (see ``free_ports``)."""
    return free_ports(1, host)[0]


def read_from(path: Path, offset: int = 0) -> str:
    """The text of ``path`` from ``offset`` on ("" when unreadable)."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except OSError:
        return ""


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def last_lines(text: str, lines: int = _LOG_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def failure(what: str, log: Path, output: str = "") -> EmbeddedError:
    """The error saying ``what`` failed, with the last lines of ``output`` and ``log``."""
    parts = [what]
    if output.strip():
        parts.append(f"output:\n{last_lines(output)}")
    size = file_size(log)
    tail = last_lines(read_from(log, max(0, size - 64 * 1024)))
    parts.append(f"last lines of {log}:\n{tail}" if tail else f"{log} is empty or missing")
    return EmbeddedError("\n".join(parts))


def read_pid(path: Path) -> int | None:
    """The pid on the first line of the pid file ``path``, if there is one."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first) if first else None
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """True while the process runs; a zombie counts as gone."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return status.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def command_line(pid: int) -> list[str]:
    """The arguments process ``pid`` was started with ([] when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def end_process(pid: int, first: signal.Signals, grace: float) -> None:
    """Send `first`, then SIGKILL after `grace` seconds; return once the process is gone."""
    for sig, wait in ((first, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_gone(pid, wait):
            return
    raise EmbeddedError(f"process {pid} did not exit after SIGKILL")
