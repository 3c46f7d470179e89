"""How a client spreads its requests over the API nodes and fails over between them: an
httpx transport that sends each request to the client's current node and moves to the
next one when that node cannot be reached.

A request that never reached a node (connection refused, connect timeout) goes to the
next node at once: nothing was sent, so nothing can happen twice. A request lost after
it was sent (the node died mid-request) moves the client to the next node and fails, as
it would with one node: the client retries it there with the same ``Idempotency-Key``,
and the ledger answers the retry with the first outcome if the lost attempt committed.
"""

from __future__ import annotations

import httpx


class FailoverTransport(httpx.AsyncBaseTransport):
    """Requests go to ``nodes[current]`` (``http://host:port``); ``first`` spreads
    clients: client *i* starts on node *i mod n*."""

    def __init__(self, nodes: list[str], first: int = 0, *,
                 limits: httpx.Limits | None = None,
                 inner: httpx.AsyncBaseTransport | None = None) -> None:
        if not nodes:
            raise ValueError("name at least one API node")
        self.nodes = [httpx.URL(n) for n in nodes]
        self.current = first % len(self.nodes)
        self.failovers = 0
        self._inner = inner or httpx.AsyncHTTPTransport(limits=limits or httpx.Limits())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        last: httpx.TransportError | None = None
        for _ in range(len(self.nodes)):
            node = self.nodes[self.current]
            request.url = request.url.copy_with(scheme=node.scheme, host=node.host,
                                                port=node.port)
            request.headers["Host"] = node.netloc.decode()
            try:
                return await self._inner.handle_async_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                last = e  # never sent: the next node may take it now
                self._next()
            except httpx.TransportError:
                self._next()  # sent, outcome unknown: the caller retries (same key)
                raise
        assert last is not None
        raise last

    def _next(self) -> None:
        self.current = (self.current + 1) % len(self.nodes)
        self.failovers += 1

    async def aclose(self) -> None:
        await self._inner.aclose()
