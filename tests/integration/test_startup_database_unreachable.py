"""An HTTP process that starts while its database cannot be reached stays up, not ready,
and becomes ready once the database answers (an HTTP worker respawned while PostgreSQL
restarts used to fail its start, which stopped the whole ``ssot serve``).

The database's address is a loopback port where nothing listens at first; later a relay
to the test's PostgreSQL starts listening there, as a restarted server would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import httpx
import psycopg

from tests.integration.conftest import AUTH, RunningServer, free_port, make_settings, wait_until


class Relay:
    """Relays the TCP connections made to a loopback port to ``target`` once started."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        for s in [*([self._listener] if self._listener else []), *self._sockets]:
            s.close()


@contextlib.contextmanager
def relayed(database_url: str) -> Iterator[tuple[str, Relay]]:
    """A URL of ``database_url``'s database on a port where nothing listens yet, and the
    relay that will listen there."""
    parts = psycopg.conninfo.conninfo_to_dict(database_url)
    target = (str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432))
    port = free_port()
    relay = Relay(port, target)
    url = psycopg.conninfo.make_conninfo(**{**{k: str(v) for k, v in parts.items()
                                               if v is not None},
                                            "host": "127.0.0.1", "port": str(port)})
    try:
        yield url, relay
    finally:
        relay.stop()


def test_a_process_started_while_its_database_is_down_is_alive_not_ready_then_ready(
    database_url: str, ns: str
) -> None:
    with relayed(database_url) as (url, relay), \
            RunningServer(make_settings(url)) as server, \
            httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        live = client.get("/v1/live")
        assert (live.status_code, live.json()) == (200, {"status": "alive"})
        health = client.get("/v1/health")
        assert health.status_code == 503, health.text
        assert health.json()["code"] == "starting"
        assert "cannot reach its database" in health.json()["detail"]
        write = client.put(f"/v1/namespaces/{ns}/entries/k", json={"a": 1})
        assert (write.status_code, write.headers["Retry-After"]) == (503, "1")
        relay.start()  # the database answers now
        wait_until(lambda: client.get("/v1/health").status_code == 200,
                   "the process became ready once its database answered")
        made = client.put(f"/v1/namespaces/{ns}/entries/k", json={"a": 1})
        assert made.status_code == 201, made.text
        assert client.get("/v1/live").status_code == 200
