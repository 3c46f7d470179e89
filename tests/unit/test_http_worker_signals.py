"""An HTTP worker reached by Ctrl-C while it starts (a terminal sends it to serve's whole
process group, and a worker may still be importing): the signal is noted, not raised as
a ``KeyboardInterrupt`` in the middle of its start, and uvicorn, once its own handlers
are in place, stops at once."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import uvicorn

from nexus_ssot.ops.http_workers import Server
from nexus_ssot.ops.signals import note_interrupts


@pytest.fixture()
def handlers_restored() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


async def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError("no request")


def test_a_ctrl_c_while_starting_is_noted_not_raised(handlers_restored: None) -> None:
    sigterm = signal.getsignal(signal.SIGTERM)
    early = note_interrupts()
    signal.raise_signal(signal.SIGINT)  # without it: KeyboardInterrupt here
    assert early == [signal.SIGINT]
    # SIGTERM still ends a starting process at once (the parent-death signal)
    assert signal.getsignal(signal.SIGTERM) is sigterm


def test_uvicorn_stops_at_once_on_a_signal_noted_before_it_took_over(
        handlers_restored: None) -> None:
    server = Server(uvicorn.Config(_app), early=[signal.SIGINT])
    with server.capture_signals():
        assert server.should_exit and not server.force_exit
    # and the signal is not raised again as uvicorn's own handling would once it stopped
    assert server._captured_signals == []


def test_uvicorn_serves_when_no_signal_came(handlers_restored: None) -> None:
    server = Server(uvicorn.Config(_app), early=[])
    with server.capture_signals():
        assert not server.should_exit


def test_a_ctrl_c_and_serve_s_sigterm_stop_gracefully_in_either_order(
        handlers_restored: None) -> None:
    """(a second Ctrl-C still exits at once, skipping what is left to drain)"""
    for first, second in ((signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGTERM)):
        server = Server(uvicorn.Config(_app), early=[])
        server.handle_exit(first, None)
        server.handle_exit(second, None)
        assert server.should_exit and not server.force_exit, (first, second)
        server.handle_exit(signal.SIGINT, None)
        assert server.force_exit
