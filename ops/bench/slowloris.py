"""Step (q) of ``make bench``: ordinary clients beside slow ones (slowloris). The server
under test (``ssot serve``, its default ``SSOT_HTTP_HEADER_TIMEOUT_SECONDS``) serves GETs
of one entry on a few keep-alive connections, first alone, then while 200 other
connections each send a request head one header line a second and never finish it: a
server without a head timeout keeps them all forever. Whenever the server closes one, it
is opened again, so 200 stay open throughout; the window lasts the step's duration plus
the head timeout, so every slow connection of the first wave meets its deadline in it.
Measured: the ordinary GETs' latency in both phases, and how long each slow connection
lived (the head timeout, if the server cuts them off; the whole window, if not).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from .measuring import HOST, NETWORK_ERRORS, HttpConnection, fmt, quantiles_ms, say

SLOW_CLIENTS = 200
ORDINARY_CONNECTIONS = 4
P99_TARGET_MS = 100.0
TRICKLE_SECONDS = 1.0  # between two header lines of a slow client
KEY = "slowloris"


@dataclass
class Ordinary:
    latencies_ns: list[int] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0
    first_problem: str | None = None

    def summary(self, seconds: float) -> dict[str, Any]:
        p50, p99, _, top = quantiles_ms(self.latencies_ns)
        return {"requests": len(self.latencies_ns),
                "requests_per_s": round(len(self.latencies_ns) / seconds, 1),
                "p50_ms": p50, "p99_ms": p99, "max_ms": top, "non_2xx": self.non_2xx,
                "errors": self.errors, "first_problem": self.first_problem}


async def ordinary_gets(port: int, seconds: float, headers: str) -> Ordinary:
    """GETs of one entry on ``ORDINARY_CONNECTIONS`` keep-alive connections, each request
    after the previous one's answer, for ``seconds``."""
    tally = Ordinary()
    request = (f"GET /v1/namespaces/bench/entries/{KEY} HTTP/1.1\r\n"
               f"Host: {HOST}:{port}\r\n{headers}\r\n").encode()
    deadline = time.perf_counter_ns() + int(seconds * 1e9)

    async def client() -> None:
        conn = HttpConnection(port)
        while (began := time.perf_counter_ns()) < deadline:
            try:
                status, _ = await conn.exchange(request)
            except NETWORK_ERRORS as e:
                tally.errors += 1
                tally.first_problem = tally.first_problem or repr(e)
                conn.close()
                continue
            tally.latencies_ns.append(time.perf_counter_ns() - began)
            if not 200 <= status < 300:
                tally.non_2xx += 1
                tally.first_problem = tally.first_problem or f"HTTP {status}"
        conn.close()

    await asyncio.gather(*(client() for _ in range(ORDINARY_CONNECTIONS)))
    return tally


@dataclass
class SlowClients:
    opened: int = 0
    #: How long each connection of the first wave lived until the server closed it.
    first_wave: list[float] = field(default_factory=list)


async def slow_client(port: int, stop: asyncio.Event, tally: SlowClients) -> None:
    """One slow connection after another until ``stop``: each sends a request line, then a
    header line every ``TRICKLE_SECONDS``, until the server closes it."""
    wave = 0
    while not stop.is_set():
        opened = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except NETWORK_ERRORS:
            await asyncio.sleep(TRICKLE_SECONDS)
            continue
        tally.opened += 1
        try:
            writer.write(f"GET /v1/health HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode())
            n = 0
            while True:  # the first wave stays to the end, to see its deadline
                try:
                    if not await asyncio.wait_for(reader.read(1024), TRICKLE_SECONDS):
                        break  # closed by the server
                except TimeoutError:
                    n += 1
                    writer.write(b"X-Slow-%d: 1\r\n" % n)
                    if stop.is_set() and wave > 0:
                        return
        except NETWORK_ERRORS:
            pass  # reset by the server: closed too
        finally:
            writer.close()
        if wave == 0:
            tally.first_wave.append(time.monotonic() - opened)
        wave += 1


async def measure(port: int, seconds: float, head_timeout: float, headers: str = ""
                  ) -> dict[str, Any]:
    conn = HttpConnection(port)  # the entry the ordinary clients read
    status, _ = await conn.exchange(
        (f"PUT /v1/namespaces/bench/entries/{KEY} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
         f"{headers}"
         "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").encode())
    conn.close()
    if status >= 300:
        raise RuntimeError(f"creating the entry the ordinary clients read: HTTP {status}")
    alone = await ordinary_gets(port, seconds, headers)
    window = seconds + head_timeout
    stop = asyncio.Event()
    tally = SlowClients()
    slow = [asyncio.create_task(slow_client(port, stop, tally)) for _ in range(SLOW_CLIENTS)]
    await asyncio.sleep(TRICKLE_SECONDS)  # all of them connected and trickling
    beside = await ordinary_gets(port, window, headers)
    stop.set()
    # The first wave gets until its deadline and a few seconds more to be cut off.
    _, still_open = await asyncio.wait(slow, timeout=head_timeout + 5.0)
    for task in still_open:
        task.cancel()
    ordered = sorted(tally.first_wave)
    return {
        "slow_clients": SLOW_CLIENTS, "ordinary_connections": ORDINARY_CONNECTIONS,
        "head_timeout_s": head_timeout, "window_s": window,
        "alone": alone.summary(seconds), "beside_slow_clients": beside.summary(window),
        "slow_connections_opened": tally.opened,
        "first_wave_closed_by_server": len(ordered),
        "first_wave_lifetime_s": {"min": round(ordered[0], 2) if ordered else None,
                                  "p50": round(ordered[len(ordered) // 2], 2)
                                  if ordered else None,
                                  "max": round(ordered[-1], 2) if ordered else None},
        "left_open": len(still_open),
    }


def run_all(port: int, seconds: float, head_timeout: float, headers: str = ""
            ) -> dict[str, Any]:
    say(f"(q) {SLOW_CLIENTS} slow clients (a header line a second, never the end) beside "
        f"{ORDINARY_CONNECTIONS} ordinary connections, head timeout {head_timeout:g} s")
    measured = asyncio.run(measure(port, seconds, head_timeout, headers))
    measured["passed"] = passed(measured)
    measured["summary_md"] = summarize(measured)
    for line in measured["summary_md"][2:]:
        say(line)
    return measured


def passed(measured: dict[str, Any]) -> bool:
    beside = measured["beside_slow_clients"]
    return bool(beside["p99_ms"] is not None and beside["p99_ms"] < P99_TARGET_MS
                and beside["non_2xx"] == 0 and beside["errors"] == 0
                and measured["first_wave_closed_by_server"] == measured["slow_clients"]
                and measured["left_open"] == 0)


def summarize(measured: dict[str, Any]) -> list[str]:
    lived = measured["first_wave_lifetime_s"]
    lines = [
        "",
        f"(q) Slow clients: {measured['slow_clients']} connections each sending a request "
        f"head one header line a second, never its end, reopened when the server closes "
        f"them; beside them {measured['ordinary_connections']} keep-alive connections GET "
        f"one entry. Head timeout {measured['head_timeout_s']:g} s; "
        f"{measured['slow_connections_opened']} slow connections opened in "
        f"{measured['window_s']:g} s; the first {measured['slow_clients']} lived "
        f"{fmt(lived['min'], 2)} to {fmt(lived['max'], 2)} s (median {fmt(lived['p50'], 2)}),"
        f" {measured['first_wave_closed_by_server']} of them closed by the server, "
        f"{measured['left_open']} left open.",
        "",
        "| ordinary GETs | requests | req/s | p50 ms | p99 ms | max ms | non-2xx | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, key in (("alone", "alone"), ("beside the slow clients", "beside_slow_clients")):
        step = measured[key]
        lines.append(f"| {label} | {step['requests']:,} | {fmt(step['requests_per_s'], 0)} | "
                     f"{fmt(step['p50_ms'], 2)} | {fmt(step['p99_ms'], 2)} | "
                     f"{fmt(step['max_ms'], 2)} | {step['non_2xx']} | {step['errors']} |")
    lines.append("")
    lines.append(f"Target: p99 beside the slow clients < {P99_TARGET_MS:g} ms, no error, every "
                 f"slow connection closed by the server: "
                 f"{'PASS' if measured['passed'] else 'FAIL'}.")
    return lines
