"""A follower of the log on a thread of ``ssot serve``: one coroutine run on an event loop
of the thread's own until it is stopped (the broadcaster, the digester, the view runners,
the idempotency keys' purge)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class LoopThread:
    """Runs ``run(stop_event)`` on a thread of its own, with its own event loop."""

    def __init__(self, name: str,
                 run: Callable[[asyncio.Event], Coroutine[Any, Any, None]], *,
                 nice: int = 0) -> None:
        import uvloop  # imported when used: `ssot` starts fast for every other command

        self.loop = uvloop.new_event_loop()
        #: Added to the thread's nice value as it starts (``lower_priority``).
        self.nice = nice
        self.stop_event = asyncio.Event()
        self._coroutine = run
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        #: Called (on the thread) with what ended ``run`` before it was asked to stop.
        self.on_failure: Callable[[BaseException], None] | None = None

    def _run(self) -> None:
        os_thread_name(self.thread.name)
        if self.nice:
            lower_priority(self.nice)
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._coroutine(self.stop_event))
        except BaseException as e:
            if self.on_failure is not None and not self.stop_event.is_set():
                self.on_failure(e)
            raise

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)


#: The process's own symbols, the C library's among them: ``find_library`` would run
#: ``ldconfig`` in a subprocess on every start of a process that imports this.
_libc = ctypes.CDLL(None, use_errno=True)


def os_thread_name(name: str) -> None:
    """Name the calling thread for the operating system too (``top -H``, ``ps -L``,
    ``/proc/PID/task/TID/comm``: where a process's CPU goes, thread by thread); Linux
    keeps 15 bytes of it. Where the C library has no ``pthread_setname_np`` nothing is
    named."""
    setname = getattr(_libc, "pthread_setname_np", None)
    if setname is None:
        return
    setname.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    setname(ctypes.c_void_p(threading.get_ident()), name.encode()[:15])


def lower_priority(by: int) -> None:
    """Add ``by`` to the calling thread's nice value (at most 19): on Linux a thread's
    priority is its own (``setpriority`` on its thread id), and raising the value needs no
    privilege. Where that fails the thread runs on at the priority it has, and says so."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid,
                       min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except (AttributeError, OSError) as e:  # (no setpriority: not a Unix)
        log.warning("thread %s keeps its priority: %s", threading.current_thread().name, e)
