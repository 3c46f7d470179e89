"""The bench's run: a SIGTERM unwinds it as Ctrl-C does (its servers stopped on the way)."""

from __future__ import annotations

import signal

import pytest

from nexus_ssot.ops.bench import run


def test_a_sigterm_stops_the_bench_as_ctrl_c_does() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    try:
        run.interrupt_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
