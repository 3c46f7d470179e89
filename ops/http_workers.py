"""The HTTP side of ``ssot serve``: uvicorn's options from the settings, the server that
finishes its own shutdown, and, for ``--workers N`` (N > 1), the worker processes.

The workers are ``ssot http-worker`` children sharing one listening socket that
``ssot serve`` binds (as uvicorn's own ``--workers`` does; which of them accepts a
connection: ``accepting.py``), but started as plain
processes: uvicorn starts its workers with multiprocessing's *spawn*, which also starts
multiprocessing's resource tracker, one more Python process (~12 MB) tracking nothing of
ours. Each worker is in serve's process group (a signal to the group reaches it; Ctrl-C
drains it at once), exits with serve (the parent-death signal), is restarted if it dies,
and tells serve when it has started through a pipe. SIGHUP restarts them one at a time
(a new TLS certificate is read then): the socket stays open, and a stopping worker
answers what it has read (uvicorn closes the connections it accepted but read nothing
from, which clients retry); stopping serve drains them first. serve answers once one
worker serves, so a stop may reach a worker still starting: it notes the signal and,
started, stops at once (``signals.note_interrupts``), and a worker that exits while
serve is already stopping is not a failed start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import click
import uvicorn

from nexus_ssot.ledger.settings import Settings

from .accepting import NOT_ACCEPTING, BalancedListener, ConnectionCounts
from .children import ChildExited, child_environment, exit_with_parent
from .heap import freeze_startup_heap

log = logging.getLogger("nexus_ssot.serve")

#: How long a worker may take to start (its app waits for nothing: api/starting.py).
START_TIMEOUT = 120.0
#: uvicorn's graceful shutdown of a worker, then this much more before it is killed.
GRACEFUL_SECONDS = 30
KILL_AFTER = GRACEFUL_SECONDS + 10.0
#: A worker that died is started again after this pause (no restart storm).
RESTART_PAUSE = 1.0


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for HTTPS (and mutual TLS) from the settings; none for HTTP."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise click.UsageError("SSOT_TLS_CLIENT_CA needs SSOT_TLS_CERT and SSOT_TLS_KEY")
        return {}
    if settings.tls_cert is None or settings.tls_key is None:
        raise click.UsageError("HTTPS needs both SSOT_TLS_CERT and SSOT_TLS_KEY")
    options: dict[str, Any] = {"ssl_certfile": str(settings.tls_cert),
                               "ssl_keyfile": str(settings.tls_key)}
    if settings.tls_client_ca is not None:
        options.update(ssl_ca_certs=str(settings.tls_client_ca),
                       ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def uvicorn_options(settings: Settings, *, access_log: bool) -> dict[str, Any]:
    """What every HTTP server of serve runs with (the one in process, or each worker)."""
    return {
        **tls_options(settings),
        "host": settings.http_host,
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or None,
        "port": settings.http_port,
        "loop": "uvloop",
        # httptools and what it lacks (api/http_protocol.py)
        "http": "nexus_ssot.api.http_protocol:HttpProtocol",
        "access_log": access_log,
        # no "server: uvicorn" on every answer: it tells a caller which software (and,
        # looked up, which flaws) to try, and costs each answer a header (the Date stays)
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
        "log_level": "info",
    }


class Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would kill the
    process before the embedded servers are stopped; we finish our own shutdown instead.
    With ``ready_fd``, it writes one byte there once it serves (and closes it)."""

    def __init__(self, config: uvicorn.Config, ready_fd: int | None = None,
                 early: Sequence[int] = (),
                 balance: tuple[ConnectionCounts, int] | None = None) -> None:
        super().__init__(config)
        self.ready_fd = ready_fd
        #: SIGINT received before uvicorn's own handlers took over (``note_interrupts``).
        self.early = early
        #: The workers' connection counts and this worker's slot: accept as
        #: ``accepting.BalancedListener`` does (None: as uvicorn does).
        self.balance = balance

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.balance is None or not sockets:
            await super().startup(sockets)
        else:
            await super().startup([])  # the app's lifespan, and no listener of uvicorn's
            if self.started:
                self.servers = [self._balanced(sockets[0], *self.balance)]  # type: ignore[list-item]
        if self.started and self.ready_fd is not None:
            os.write(self.ready_fd, b"1")
            os.close(self.ready_fd)
            self.ready_fd = None

    def _balanced(self, sock: socket.socket, counts: ConnectionCounts,
                  slot: int) -> BalancedListener:
        config, loop = self.config, asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:  # (as uvicorn's own listener makes it)
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state)

        def serve(conn: socket.socket) -> Awaitable[tuple[Any, Any]]:
            return loop.connect_accepted_socket(protocol, conn, ssl=config.ssl)

        listener = BalancedListener(sock, counts, slot, serve)
        self.server_state.connections = listener.connections  # (before any protocol)
        listener.start(loop, config.backlog)
        return listener

    def handle_exit(self, sig: int, frame: Any) -> None:
        """Ctrl-C reaches a worker twice: from the terminal (SIGINT to serve's process
        group) and from serve stopping it (SIGTERM), in either order. uvicorn takes a
        SIGINT after any stop signal for a second Ctrl-C and exits without the app's
        shutdown, which then ran under the loop's cancellation (the pool's close logged
        a traceback); only a SIGINT after a SIGINT is that here."""
        if sig == signal.SIGINT and self.should_exit \
                and signal.SIGINT not in self._captured_signals:
            self._captured_signals.append(sig)  # (a stop already under way)
            return
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            if self.early:  # asked to stop while it started: start, then stop at once
                self.handle_exit(self.early[0], None)
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if captured:
                    log.info("stopping on %s",
                             ", ".join(signal.Signals(s).name for s in captured))
                    captured.clear()


def run_http_worker(settings: Settings, fd: int, ready_fd: int, *, access_log: bool,
                    early: list[int], counts_fd: int | None = None, slot: int = 0) -> None:
    """One worker of ``ssot serve --workers N``: serve the inherited socket ``fd`` until
    SIGTERM/SIGINT (or serve's death), then drain and exit. ``early``: the stop signals
    noted since the process began (``signals.note_interrupts``). ``counts_fd``: the
    workers' ``ConnectionCounts``, this worker's at ``slot``."""
    exit_with_parent()  # first: importing the api takes seconds on a slow machine
    from nexus_ssot.api.app import create_app  # the worker's one place that builds the api

    listening = socket.socket(fileno=fd)
    config = uvicorn.Config(create_app(settings), **uvicorn_options(settings,
                                                                    access_log=access_log))
    # before it serves: frozen once it said so, a worker paused (~0.1 s) while the
    # others served, and one killed meanwhile had said it served but never told serve
    freeze_startup_heap()
    if early:
        log.info("stopping on %s before serving", signal.Signals(early[0]).name)
        return
    balance = (ConnectionCounts(counts_fd), slot) if counts_fd is not None else None
    Server(config, ready_fd, early, balance).run(sockets=[listening])


class HttpWorker:
    """One ``ssot http-worker`` child: started, watched and restarted, stopped."""

    def __init__(self, index: int, settings: Settings, listening: socket.socket,
                 access_log: bool, counts: ConnectionCounts | None = None) -> None:
        self.index = index
        self.settings = settings
        self.listening = listening
        #: The workers' connection counts (None: one worker, which accepts as uvicorn does).
        self.counts = counts
        self.access_log = access_log
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        #: Set by ``restart``: the exit that follows is asked for, not a crash.
        self.restarting = threading.Event()
        self.started = threading.Event()  # the current process serves
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name=f"ssot-http-worker-{index}-watch")
        self._ready_read: int | None = None
        #: Held to start a process and to stop: none is started once stopping.
        self._lock = threading.Lock()

    def spawn(self) -> bool:
        """Start a process (False once stopping: then none is started)."""
        with self._lock:
            if self.stopping.is_set():
                return False
            self.started.clear()
            ready_read, ready_write = os.pipe()
            fd = self.listening.fileno()
            args = [sys.executable, "-m", "nexus_ssot.ops.cli", "http-worker", "--fd",
                    str(fd), "--ready-fd", str(ready_write)]
            passed = [fd, ready_write]
            if self.counts is not None:
                args += ["--counts-fd", str(self.counts.fd), "--slot", str(self.index)]
                passed.append(self.counts.fd)
            try:
                self.proc = subprocess.Popen(
                    [*args, *(["--access-log"] if self.access_log else [])],
                    env=child_environment(self.settings),
                    stdin=subprocess.DEVNULL, pass_fds=passed)
            except BaseException:
                os.close(ready_read)
                raise
            finally:
                os.close(ready_write)
            self._ready_read = ready_read
            return True

    def wait_started(self, timeout: float = START_TIMEOUT) -> None:
        """Until the worker serves; ``ChildExited`` if it exits first."""
        assert self.proc is not None and self._ready_read is not None
        try:
            readable, _, _ = select.select([self._ready_read], [], [], timeout)
            said = os.read(self._ready_read, 1) if readable else b""
        finally:
            os.close(self._ready_read)
            self._ready_read = None
        if said == b"1":
            self.started.set()
            return
        if not readable:
            raise RuntimeError(f"HTTP worker {self.index} did not start in {timeout:.0f}s")
        raise ChildExited(f"HTTP worker {self.index}", self.proc.wait())

    def watch(self) -> None:
        self._watcher.start()

    def _watch(self) -> None:
        while not self.stopping.is_set():
            assert self.proc is not None
            code = self.proc.wait()
            if self.counts is not None:  # (its last count, of connections it no longer has)
                self.counts.set(self.index, NOT_ACCEPTING)
            if self.stopping.is_set():
                return
            if self.restarting.is_set():
                self.restarting.clear()
                log.info("HTTP worker %d (pid %d) stopped to restart", self.index,
                         self.proc.pid)
            else:
                log.error("HTTP worker %d (pid %d) exited with %s; restarting it",
                          self.index, self.proc.pid, code)
                time.sleep(RESTART_PAUSE)
            if not self.spawn():
                return
            try:
                self.wait_started()
            except (ChildExited, RuntimeError) as e:
                log.error("%s", e)

    def restart(self, timeout: float = KILL_AFTER + START_TIMEOUT) -> bool:
        """Stop this worker (it drains) and wait for its successor to serve."""
        if self.proc is None or self.stopping.is_set():
            return False
        self.restarting.set()
        old = self.proc
        old.terminate()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if self.proc is not old and self.started.wait(0.1):
                return True
            time.sleep(0.05)
        return False

    def terminate(self) -> None:
        with self._lock:
            self.stopping.set()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()

    def wait(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("HTTP worker %d did not stop in %.0fs; killing it", self.index,
                      KILL_AFTER)
            self.proc.kill()
            self.proc.wait()


class HttpWorkers:
    """``settings.http_workers`` workers on one socket bound here (``config``'s address)."""

    def __init__(self, settings: Settings, config: uvicorn.Config, access_log: bool) -> None:
        self.listening = config.bind_socket()  # logs where it listens; inheritable
        self.counts = (ConnectionCounts.create(settings.http_workers)
                       if settings.http_workers > 1 else None)
        self.workers = [HttpWorker(i, settings, self.listening, access_log, self.counts)
                        for i in range(settings.http_workers)]

    def start(self) -> None:
        """Start them all, then wait until each serves (``ChildExited`` if one exits)."""
        for worker in self.workers:
            if not worker.spawn():
                return
        try:
            for worker in self.workers:
                worker.wait_started()
        except BaseException:
            self.stop()
            raise
        for worker in self.workers:
            worker.watch()

    def restart(self) -> None:
        """One at a time, each drained and replaced (the others serve meanwhile)."""
        for worker in self.workers:
            if not worker.restart():
                return

    def stop(self) -> None:
        """SIGTERM to each: they drain (at most ``GRACEFUL_SECONDS``) and exit."""
        for worker in self.workers:
            worker.terminate()
        deadline = time.monotonic() + KILL_AFTER
        for worker in self.workers:
            worker.wait(deadline)
        self.listening.close()
        if self.counts is not None:
            self.counts.close()
            self.counts = None


def serve_until_signalled(workers: HttpWorkers,
                          on_serving: Callable[[Callable[[], None]], None] | None = None
                          ) -> None:
    """Run the workers until SIGTERM or SIGINT (SIGHUP: restart them), then stop them.
    The main thread sleeps in a read of a pipe the signal handler writes to: no polling,
    and no lock a handler could find held (as ``threading.Event.set`` could).
    ``on_serving`` is handed, once the workers run, a function that stops them as
    SIGTERM does, from any thread."""
    wake_read, wake_write = os.pipe()
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        os.write(wake_write, b"!")

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    handlers = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        try:
            workers.start()
        except ChildExited:
            stopping = [s for s in received if s != signal.SIGHUP]
            if not stopping:
                raise
            # asked to stop while they started: a worker that the same Ctrl-C reached
            # before it served may have exited; nothing failed
            log.info("stopping on %s while the HTTP workers started",
                     ", ".join(signal.Signals(s).name for s in stopping))
            return
        freeze_startup_heap()  # serve's own: the followers' thread is running too
        if on_serving is not None:
            on_serving(functools.partial(on_signal, signal.SIGTERM, None))
        seen = 0  # the handler only appends: what came since is received[seen:]
        while True:
            os.read(wake_read, 64)
            came = received[seen:]
            seen += len(came)
            stopping = [s for s in came if s != signal.SIGHUP]
            if stopping:
                log.info("stopping on %s", ", ".join(signal.Signals(s).name for s in stopping))
                return
            if came:
                log.info("SIGHUP: restarting the HTTP workers one at a time")
                threading.Thread(target=workers.restart, daemon=True,
                                 name="ssot-http-workers-restart").start()
    finally:
        workers.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        os.close(wake_read)
        os.close(wake_write)
