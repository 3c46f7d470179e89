"""What ``GET /metrics`` costs each request, in process: ``python -m
nexus_ssot.ops.bench.metrics_cost``. A loop of requests through a trivial ASGI app, on its
own and wrapped in ``RequestMetrics`` (the count by route, method and status and the
duration histogram), the process's CPU time per request of each; then a write's count
(``ssot_writes_total``) and a problem's (``ssot_http_errors_total``) on their own. In
multiprocess mode (a temporary metrics folder), as under ``ssot serve``. Prints one line
per figure; run it twice, the machine's speed drifts."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

REQUESTS = 200_000
_ROUTE = SimpleNamespace(path="/v1/namespaces/{namespace}/entries/{key:path}")


async def _app(scope: Any, receive: Any, send: Any) -> None:
    scope["route"] = _ROUTE
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _send(message: Any) -> None:
    return None


async def _receive() -> Any:
    return {}


async def _requests(app: Any, n: int) -> None:
    for _ in range(n):
        await app({"type": "http", "method": "PUT", "path": "/x"}, _receive, _send)


def _cpu_us(run: Callable[[], None], n: int) -> float:
    started = time.process_time()
    run()
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # before prometheus-client loads
        from nexus_ssot.api.metrics import RequestMetrics
        from nexus_ssot.ledger.metrics import metrics

        wrapped = RequestMetrics(_app)
        asyncio.run(_requests(wrapped, 1000))  # the children made, the files grown
        bare = _cpu_us(lambda: asyncio.run(_requests(_app, REQUESTS)), REQUESTS)
        counted = _cpu_us(lambda: asyncio.run(_requests(wrapped, REQUESTS)), REQUESTS)
        print(f"request: {bare:.2f} us without, {counted:.2f} us with RequestMetrics: "
              f"{counted - bare:.2f} us of CPU per request")
        m = metrics()

        def writes() -> None:
            for _ in range(REQUESTS):
                m.writes.labels("entry.created", "appended").inc()

        def problems() -> None:
            for _ in range(REQUESTS):
                m.http_errors.labels("404", "entry_not_found").inc()

        print(f"write count: {_cpu_us(writes, REQUESTS):.2f} us; "
              f"problem count: {_cpu_us(problems, REQUESTS):.2f} us")


if __name__ == "__main__":
    main()
