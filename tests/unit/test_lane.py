"""The unit lane keeps its promise: a test here cannot reach a server or start a process."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.unit.conftest import IOInUnitTest


def test_a_unit_test_cannot_open_a_connection() -> None:
    with pytest.raises(IOInUnitTest), socket.create_connection(("127.0.0.1", 5432)):
        pass


def test_a_unit_test_cannot_start_a_process() -> None:
    with pytest.raises(IOInUnitTest):
        subprocess.run(["true"], check=False)
