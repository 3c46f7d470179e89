"""A client of the cluster spreads over the API nodes and fails over between them: a
request that never reached a node goes to the next at once; one lost after it was sent
moves the client on and fails, for the caller to retry with its idempotency key."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from nexus_ssot.ledger.jetstream import nats_servers
from nexus_ssot.ops.cluster.failover import FailoverTransport
from nexus_ssot.ops.cluster.postgres import PgNode, multi_host_url

NODES = ["http://127.0.0.31:8001", "http://127.0.0.32:8002"]


class Nodes(httpx.AsyncBaseTransport):
    """Fake API nodes: ``down`` refuse connections, ``dying`` drop a request once sent."""

    def __init__(self, down: set[str] = frozenset(), dying: set[str] = frozenset()) -> None:
        self.down, self.dying = set(down), set(dying)
        self.seen: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        node = f"{request.url.host}:{request.url.port}"
        self.seen.append(node)
        if node in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if node in self.dying:
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        return httpx.Response(200, json={"node": node, "host": request.headers["Host"]})


def get(transport: FailoverTransport) -> httpx.Response:
    async def once() -> httpx.Response:
        async with httpx.AsyncClient(base_url=NODES[0], transport=transport) as http:
            return await http.get("/v1/health")

    return asyncio.run(once())


def test_clients_start_on_the_nodes_in_turn() -> None:
    assert get(FailoverTransport(NODES, 0, inner=Nodes())).json()["node"] == "127.0.0.31:8001"
    second = get(FailoverTransport(NODES, 1, inner=Nodes())).json()
    assert second == {"node": "127.0.0.32:8002", "host": "127.0.0.32:8002"}


def test_a_request_a_node_refused_goes_to_the_next_node_at_once() -> None:
    nodes = Nodes(down={"127.0.0.31:8001"})
    transport = FailoverTransport(NODES, 0, inner=nodes)
    assert get(transport).json()["node"] == "127.0.0.32:8002"
    assert get(transport).json()["node"] == "127.0.0.32:8002"  # and stays there
    assert nodes.seen == ["127.0.0.31:8001", "127.0.0.32:8002", "127.0.0.32:8002"]


def test_a_request_lost_after_it_was_sent_fails_and_the_retry_goes_to_the_next_node() -> None:
    nodes = Nodes(dying={"127.0.0.31:8001"})
    transport = FailoverTransport(NODES, 0, inner=nodes)
    with pytest.raises(httpx.RemoteProtocolError):
        get(transport)
    assert get(transport).json()["node"] == "127.0.0.32:8002"
    assert nodes.seen == ["127.0.0.31:8001", "127.0.0.32:8002"]


def test_with_every_node_down_the_connect_error_reaches_the_caller() -> None:
    transport = FailoverTransport(NODES, 0, inner=Nodes(down={"127.0.0.31:8001",
                                                             "127.0.0.32:8002"}))
    with pytest.raises(httpx.ConnectError):
        get(transport)


def test_a_nats_url_may_list_a_clusters_nodes() -> None:
    assert nats_servers("nats://u:p@127.0.0.21:4222, nats://u:p@127.0.0.22:4222,") == [
        "nats://u:p@127.0.0.21:4222", "nats://u:p@127.0.0.22:4222"]
    assert nats_servers("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]


def test_the_database_url_names_both_database_nodes_and_asks_for_the_writable_one() -> None:
    nodes = [PgNode.__new__(PgNode), PgNode.__new__(PgNode)]
    for node, (host, port) in zip(nodes, [("127.0.0.11", 5001), ("127.0.0.12", 5002)],
                                  strict=True):
        node.host, node.port, node.password = host, port, "secret"
    url = multi_host_url(nodes, "ssot")
    assert url == ("postgresql://ssot:secret@127.0.0.11:5001,127.0.0.12:5002/ssot"
                   "?target_session_attrs=read-write&connect_timeout=3")
