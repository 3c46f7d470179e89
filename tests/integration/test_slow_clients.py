"""Clients too slow to send their request are cut off (SSOT_HTTP_HEADER_TIMEOUT_SECONDS,
SSOT_HTTP_BODY_TIMEOUT_SECONDS), while everybody else is served as usual: `ssot serve`
with two HTTP worker processes. How fast the others are served meanwhile is measured by
``make bench`` (``--only slowloris``), not here."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import (
    ADMIN_TOKEN,
    AUTH,
    LiveFeed,
    free_port,
    start_serve,
    wait_until,
)

SLOW_CLIENTS = 200
TIMEOUT = 2.0  # seconds, for the head and for the body


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_HTTP_PORT": str(port),
           "SSOT_DATA_DIR": str(tmp_path_factory.mktemp("slow")),
           "SSOT_BROADCAST": "false", "SSOT_PROJECTIONS": "false",
           "SSOT_HTTP_HEADER_TIMEOUT_SECONDS": str(TIMEOUT),
           "SSOT_HTTP_BODY_TIMEOUT_SECONDS": str(TIMEOUT)}
    proc, url = start_serve(["--workers", "2"], env, port)
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def connect(url: str, sent: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(sent)
    conn.setblocking(False)
    return conn


def closed_by_server(conns: list[socket.socket], timeout: float) -> list[bytes]:
    """Wait until the server has closed every connection; what each received first."""
    answers: dict[socket.socket, bytes] = {}
    with selectors.DefaultSelector() as selector:
        for conn in conns:
            selector.register(conn, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while len(answers) < len(conns):
            assert time.monotonic() < deadline, (
                f"{len(conns) - len(answers)} of {len(conns)} slow connections still open")
            for key, _ in selector.select(timeout=0.5):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(65536)
                except ConnectionResetError:
                    data = b""
                answers[conn] = answers.get(conn, b"") + data
                if not data:
                    selector.unregister(conn)
                    answers.setdefault(conn, b"")
                    conn.close()
    return list(answers.values())


def test_connections_that_never_finish_their_head_are_closed_while_others_are_served(
        server: str, ns: str) -> None:
    slow = [connect(server, b"GET /v1/health HTTP/1.1\r\nHost: ledger\r\nAccept: ")
            for _ in range(SLOW_CLIENTS)]
    silent = connect(server, b"")  # opened, and nothing sent at all
    feed = LiveFeed(server, {"namespace": ns})  # a long response is not a slow request
    feed.start()
    with httpx.Client(base_url=server, headers=AUTH, timeout=30) as client:
        statuses = [client.put(f"/v1/namespaces/{ns}/entries/k{i}", json={"i": i}).status_code
                    for i in range(20)]
        statuses += [client.get(f"/v1/namespaces/{ns}/entries/k{i}").status_code
                     for i in range(20)]
    assert statuses == [201] * 20 + [200] * 20
    assert closed_by_server([*slow, silent], timeout=30) == [b""] * (SLOW_CLIENTS + 1)
    # the feed, open all along, still delivers; and new connections are served
    later = httpx.put(f"{server}/v1/namespaces/{ns}/entries/later", json={}, headers=AUTH)
    assert later.status_code == 201
    wait_until(lambda: later.json()["position"] in feed.positions, "the feed to deliver")


def test_a_head_that_trickles_in_is_cut_off_at_the_deadline_not_kept_alive_by_each_byte(
        server: str) -> None:
    conn = connect(server, b"GET /v1/health HTTP/1.1\r\n")
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:  # a header line every 0.1 s, never the end
            conn.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        return
    raise AssertionError("a trickling head was never cut off")


def test_a_body_that_stops_short_is_cut_off_and_nothing_is_written(server: str,
                                                                    ns: str) -> None:
    head = (f"PUT /v1/namespaces/{ns}/entries/k HTTP/1.1\r\nHost: ledger\r\n"
            f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n").encode()
    conn = connect(server, head + b'{"half": ')
    assert closed_by_server([conn], timeout=30) == [b""]
    assert httpx.get(f"{server}/v1/namespaces/{ns}/entries/k", headers=AUTH).status_code == 404
