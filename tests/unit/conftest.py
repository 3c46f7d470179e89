"""The fast lane: no I/O. Opening a network connection or starting a process from a unit
test fails it, so a test that needs a server cannot slip into this lane unnoticed."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


class IOInUnitTest(AssertionError):
    """A unit test reached for the network or a process: it belongs in tests/integration."""


def _refuse(what: str) -> Any:
    def refuse(*args: object, **kwargs: object) -> None:
        raise IOInUnitTest(f"{what} in a unit test: move it to tests/integration")
    return refuse


@pytest.fixture(autouse=True)
def _no_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _refuse("a socket connection"))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse("a socket connection"))
    monkeypatch.setattr(socket, "create_connection", _refuse("a socket connection"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("a subprocess"))
    yield
