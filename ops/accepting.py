"""Which HTTP worker of ``ssot serve --workers N`` accepts the next connection.

The workers share one listening socket. Left to libuv, the worker that wakes first accepts
every connection waiting (it accepts until none is left), so connections opened together
— a client's pool, a proxy's keep-alive connections upstream, a load generator — land on
one worker while the others idle: sixteen connections opened at once went 16 / 0 in seven
of ten tries on two workers, whose GET @16 then had one core's worth of HTTP work where it
could have had two (libuv's ``UV_TCP_SINGLE_ACCEPT`` is no longer read: no change).

Here a worker accepts one connection per wake-up, and only while it holds no more open
connections than the least loaded of the others; one that holds more steps aside for
``defer`` seconds (the others are woken by the same connection and take it), then
accepts whatever is still waiting, all of it: a peer that is busy, stopped or gone never
makes a connection wait longer than that, nor a burst wait once per connection.

The counts are a small shared array (``ConnectionCounts``: a memfd that serve makes, one
slot per worker, each written by its worker only). A slot reads ``NOT_ACCEPTING`` while
its worker is not serving: before it starts, once it stops accepting, and (serve writes
it) once its process has exited, so a dead worker's last count misleads nobody. A count
read while its worker writes it is at worst one accept's decision made on a stale
figure."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import mmap
import os
import socket
import struct
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("nexus_ssot.serve")

#: A slot whose worker does not accept connections now.
NOT_ACCEPTING = -1
#: How long a worker with more connections than another leaves a new one to the others.
DEFER_SECONDS = 0.002
#: Turns of stepping aside unanswered by the others before a worker takes all that waits.
UNANSWERED = 3
#: After an accept failed for want of file descriptors or memory, this pause first.
RETRY_AFTER_SECONDS = 1.0

_SLOT = struct.Struct("=i")
_SHORT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ConnectionCounts:
    """The open connections of each worker, in shared memory (``fd``, a memfd)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.slots = os.fstat(fd).st_size // _SLOT.size
        self._map = mmap.mmap(fd, self.slots * _SLOT.size)

    @classmethod
    def create(cls, slots: int) -> ConnectionCounts:
        """Counts for ``slots`` workers, none accepting yet (the fd is close-on-exec:
        hand it to each worker with ``pass_fds``)."""
        fd = _shared_file()
        try:
            os.ftruncate(fd, slots * _SLOT.size)
            counts = cls(fd)
        except BaseException:
            os.close(fd)
            raise
        for slot in range(slots):
            counts.set(slot, NOT_ACCEPTING)
        return counts

    def set(self, slot: int, count: int) -> None:
        _SLOT.pack_into(self._map, slot * _SLOT.size, count)

    def get(self, slot: int) -> int:
        value: int = _SLOT.unpack_from(self._map, slot * _SLOT.size)[0]
        return value

    def elsewhere(self, slot: int) -> tuple[int, ...]:
        """Every other worker's count."""
        return tuple(self.get(other) for other in range(self.slots) if other != slot)

    def fewest_elsewhere(self, slot: int) -> int | None:
        """The fewest connections any other accepting worker holds (None: no other
        worker accepts)."""
        accepting = [count for count in self.elsewhere(slot) if count != NOT_ACCEPTING]
        return min(accepting) if accepting else None

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


def _shared_file() -> int:
    """A file of no name for the counts, close-on-exec: a memfd (Linux), else an unlinked
    temporary file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("ssot-http-connections")
    with tempfile.TemporaryFile() as file:
        return os.dup(file.fileno())


class Connections(set[Any]):
    """The connections a worker holds open (what uvicorn keeps in
    ``server_state.connections``; its protocols add and discard themselves), each change
    told to ``changed``: the worker's count is never one of connections since closed."""

    def __init__(self, changed: Callable[[], None]) -> None:
        super().__init__()
        self._changed = changed

    def add(self, item: Any) -> None:
        super().add(item)
        self._changed()

    def discard(self, item: Any) -> None:
        super().discard(item)
        self._changed()

    def remove(self, item: Any) -> None:
        super().remove(item)
        self._changed()


class BalancedListener:
    """Accepts from the shared ``sock`` on behalf of worker ``slot``, each connection
    handed to ``serve``, which sets up its transport and protocol and gives them as
    ``loop.connect_accepted_socket`` does (the protocol has uvicorn's ``shutdown``).
    ``connections`` is for the worker's server to keep its open connections in
    (uvicorn's ``server_state.connections``). In uvicorn's list of servers: ``close``
    stops accepting, ``wait_closed`` has nothing to wait for."""

    def __init__(self, sock: socket.socket, counts: ConnectionCounts, slot: int,
                 serve: Callable[[socket.socket], Awaitable[tuple[Any, Any]]],
                 defer: float = DEFER_SECONDS) -> None:
        self.sock = sock
        self.counts = counts
        self.slot = slot
        self.connections = Connections(self._publish)
        self.serve = serve
        self.defer = defer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused: asyncio.TimerHandle | None = None
        #: Turns in a row this worker stepped aside and no other accepted meanwhile.
        self._unanswered = 0
        #: Accepted connections whose transport is not set up yet (a TLS handshake).
        self._opening: set[asyncio.Future[tuple[Any, Any]]] = set()
        self._closed = True  # (until started)

    def start(self, loop: asyncio.AbstractEventLoop, backlog: int) -> None:
        self._loop = loop
        self.sock.setblocking(False)
        self.sock.listen(backlog)
        self._closed = False
        self._publish()
        loop.add_reader(self.sock.fileno(), self._readable)

    def _held(self) -> int:
        return len(self.connections) + len(self._opening)

    def _publish(self) -> None:
        if not self._closed:
            self.counts.set(self.slot, self._held())

    def _readable(self) -> None:
        """A connection waits: accept it, unless another worker holds fewer."""
        held = self._held()
        fewest = self.counts.fewest_elsewhere(self.slot)
        if fewest is not None and held > fewest:
            self._pause(self.defer, functools.partial(self._stepped_aside,
                                                      self.counts.elsewhere(self.slot)))
            return
        self._unanswered = 0
        self._accept()

    def _stepped_aside(self, seen: tuple[int, ...]) -> None:
        """After stepping aside: when another worker accepted meanwhile, the choice is
        made again (at the next connection waiting); else one connection is taken here,
        and after ``UNANSWERED`` such turns in a row (the others are busy or stopped)
        everything that waits."""
        self._paused = None
        self._resume()
        if self.counts.elsewhere(self.slot) != seen:
            self._unanswered = 0
            return
        self._unanswered += 1
        if self._unanswered < UNANSWERED:
            if not self._accept():  # nothing waited: no turn went unanswered
                self._unanswered = 0
            return
        self._unanswered = 0
        while self._accept():
            pass

    def _accept(self) -> bool:
        """Accept one connection; whether there was one."""
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return False  # another worker took it
        except OSError as e:
            if e.errno in _SHORT_OF_RESOURCES:
                log.error("cannot accept connections (%s); trying again in %.0f s",
                          os.strerror(e.errno or 0), RETRY_AFTER_SECONDS)
                self._pause(RETRY_AFTER_SECONDS, self._resumed)
            return False  # (ECONNABORTED and the like: that connection is gone)
        try:
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                # (an accepted socket of a listener bound with proto 0, as uvicorn binds
                # them, is not given TCP_NODELAY by the loop)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # reset by the client already
            conn.close()
            return True
        opening = asyncio.ensure_future(self.serve(conn))
        self._opening.add(opening)
        opening.add_done_callback(self._opened)
        self._publish()
        return True

    def _opened(self, done: asyncio.Future[tuple[Any, Any]]) -> None:
        self._opening.discard(done)
        self._publish()
        if done.cancelled():
            return
        if done.exception() is not None:
            # a TLS handshake that failed, a client gone before it finished: the loop
            # has closed the transport it made of the socket
            log.debug("a connection could not be set up: %r", done.exception())
        elif self._closed:
            # Accepted before the server began to shut down, set up after it asked its
            # connections to finish: ask this one too (its answer to a request under
            # way, then no keep-alive), or it serves its client's next requests for as
            # long as that client sends them, and the worker waits for it to stop.
            _, protocol = done.result()
            protocol.shutdown()

    def _pause(self, seconds: float, then: Callable[[], None]) -> None:
        assert self._loop is not None
        self._loop.remove_reader(self.sock.fileno())
        self._paused = self._loop.call_later(seconds, then)

    def _resumed(self) -> None:
        self._paused = None
        self._resume()

    def _resume(self) -> None:
        assert self._loop is not None
        if self.sock.fileno() != -1:
            self._loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        """Accept nothing more (the socket is serve's: closing it is not ours)."""
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if self._loop is not None and self.sock.fileno() != -1:
            self._loop.remove_reader(self.sock.fileno())
        self._closed = True
        self.counts.set(self.slot, NOT_ACCEPTING)

    async def wait_closed(self) -> None:
        return None
