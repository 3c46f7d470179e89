"""Instructions per request of one HTTP worker, counted by valgrind (``make
bench-instructions``; ``--followers`` and ``--writer`` count those processes instead): a
figure that does not move with the machine's load, where timings on a shared 2-core
machine move by a third from one hour to the next.

For each side — auth off; auth on, the caller step (p)'s non-admin with its 1,000 rules —
an ``ssot serve --workers 2`` runs on a database of its own, and one more HTTP worker is
started beside its own: with their environment, a listening socket of its own, under
``valgrind --tool=callgrind --instr-atstart=no``. One client sends ``WARMUP`` requests
(GET of one entry, or PUT with If-Match of it), then collection is switched on
(``callgrind_control -i on``) for ``count`` more, off again, and the worker ends: its
instructions divided by ``count`` are what one request costs it. The writer, PostgreSQL
and the client are not counted. Needs Debian's ``valgrind`` package (it says so when
missing) and the PostgreSQL and NATS of ``SSOT_DATABASE_URL`` / ``SSOT_NATS_URL``. The
call graph of each side stays in the work folder it names (``callgrind_annotate``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ..children import PARENT_PID
from .auth_http import api_request, databases, set_up_access
from .database import created
from .follower_instructions import count_followers
from .http_load import BODY
from .measuring import HOST, NAMESPACE, callgrind_total, descendants, process_table, say
from .server import Server
from .writer_instructions import WARMUP as WRITER_WARMUP
from .writer_instructions import count_writer

WARMUP = 300
READY_TIMEOUT = 300.0
KEY = "instructions-probe"


def _worker_environment(server: Server) -> dict[str, str]:
    """The environment of one of ``server``'s HTTP workers, as it was started, but for the
    parent it watches: the worker this starts is this process's child, not serve's, and
    stops at once when its parent is not the one named (ops/children.py)."""
    table = process_table()
    for pid in descendants(server.pid, table):
        with contextlib.suppress(OSError):
            if b"http-worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                found = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
                return {**found, PARENT_PID: str(os.getpid())}
    raise RuntimeError("the server runs no HTTP worker process (--workers 2 starts them)")


def _send(conn: http.client.HTTPConnection, method: str, headers: dict[str, str],
          version: list[int]) -> None:
    path = f"/v1/namespaces/{NAMESPACE}/entries/{KEY}"
    if method == "PUT":
        conn.request("PUT", path, body=BODY % (0, version[0]), headers={
            **headers, "If-Match": f'"{version[0]}"', "Content-Type": "application/json"})
    else:
        conn.request("GET", path, headers=headers)
    answer = conn.getresponse()
    body = answer.read()
    if answer.status != 200:
        raise RuntimeError(f"{method} answered {answer.status}: {body[:300]!r}")
    if method == "PUT":
        version[0] += 1


def count_side(server: Server, token: str | None, methods: list[str], count: int,
               work: Path) -> dict[str, float]:
    """Instructions per request of a worker of ``server`` under valgrind, per method."""
    environment = _worker_environment(server)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    found: dict[str, float] = {}
    for method in methods:
        out = work / f"callgrind-{server.data_dir.name}-{method.lower()}.out"
        listener = socket.socket()
        listener.bind((HOST, 0))
        listener.listen(128)
        ready_read, ready_write = os.pipe()
        worker = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={out}", sys.executable, "-m", "nexus_ssot.ops.cli",
             "http-worker", "--fd", str(listener.fileno()), "--ready-fd", str(ready_write)],
            env=environment, pass_fds=(listener.fileno(), ready_write),
            stdout=(work / f"{out.stem}.log").open("wb"), stderr=subprocess.STDOUT)
        os.close(ready_write)
        try:
            started = time.monotonic()
            readable, _, _ = select.select([ready_read], [], [], READY_TIMEOUT)
            if not readable or not os.read(ready_read, 1):  # (EOF: the worker ended)
                raise RuntimeError(f"the worker under valgrind did not start: {out.stem}.log")
            say(f"{server.data_dir.name} {method}: worker ready under valgrind in "
                f"{time.monotonic() - started:.0f} s")
            conn = http.client.HTTPConnection(HOST, listener.getsockname()[1], timeout=120)
            version = [1]
            for _ in range(WARMUP):
                _send(conn, method, headers, version)
            subprocess.run(["callgrind_control", "-i", "on", str(worker.pid)], check=True,
                           capture_output=True)
            for _ in range(count):
                _send(conn, method, headers, version)
            subprocess.run(["callgrind_control", "-i", "off", str(worker.pid)], check=True,
                           capture_output=True)
            conn.close()
        finally:
            worker.terminate()
            worker.wait(120)
            listener.close()
            os.close(ready_read)
        found[method] = callgrind_total(out) / count
        say(f"{server.data_dir.name} {method}: {found[method]:,.0f} instructions per request")
    return found


def measure(server_url: str, nats_url: str, methods: list[str], count: int,
            work: Path) -> dict[str, dict[str, float]]:
    """Instructions per request, auth off and on, for each of ``methods``."""
    results: dict[str, dict[str, float]] = {}
    base = f"ssot_instructions_{secrets.token_hex(3)}"
    with databases(server_url, base) as urls:
        for side in ("off", "on"):
            env = {"SSOT_RATE_LIMIT_PER_SECOND": "0"}
            if side == "off":
                env["SSOT_AUTH"] = "off"
            server = Server(urls[side], nats_url, work, 2, name=f"auth-{side}", env=env)
            try:
                server.start()
                admin = (server.data_dir / "admin-token").read_text().strip() \
                    if side == "on" else None
                token = set_up_access(server.port, admin).token if admin else None
                status, answer = api_request(server.port, "PUT",
                                             f"/v1/namespaces/{NAMESPACE}/entries/{KEY}",
                                             admin, {"revision": 0})
                if status != 201:
                    raise RuntimeError(f"creating the entry: HTTP {status} {answer}")
                results[side] = count_side(server, token, methods, count, work)
            finally:
                server.stop()
    return results


def report(results: dict[str, dict[str, float]], count: int) -> str:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [f"# Instructions per request of one HTTP worker — {stamp}", "",
             f"valgrind --tool=callgrind, {count:,} requests after {WARMUP} "
             "(`make bench-instructions`; ops/bench/instructions.py)", "",
             "| request | auth off | auth on (1,000 rules, non-admin) | on / off |",
             "|---|---:|---:|---:|"]
    for method in results.get("off", {}):
        off, on = results["off"][method], results["on"][method]
        lines.append(f"| {method} of one entry | {off:,.0f} | {on:,.0f} | {on / off:.3f} |")
    return "\n".join(lines) + "\n"


def followers_report(server_url: str, nats_url: str, count: int, rate: float,
                     work: Path) -> str:
    """The followers' instructions per event, on a database of the bench's own."""
    with created(server_url, [f"ssot_instructions_followers_{secrets.token_hex(3)}"]) as urls:
        per_event = count_followers(urls[0], nats_url, count, rate, work)
    say(f"followers: {per_event:,.0f} instructions per event")
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    return "\n".join([
        f"# Instructions per event of the followers of the log — {stamp}", "",
        f"valgrind --tool=callgrind, {count:,} one-event commits at {rate:g}/s after "
        "40 (`make bench-instructions INSTRUCTIONS_ARGS=--followers`; "
        "ops/bench/follower_instructions.py)", "",
        "| followers (broadcaster, views, digester, purge) | instructions per event |",
        "|---|---:|",
        f"| every commit one event | {per_event:,.0f} |"]) + "\n"


def writer_report(server_url: str, nats_url: str, count: int, work: Path) -> str:
    """The writer process's instructions per write, on a database of the bench's own."""
    with created(server_url, [f"ssot_instructions_writer_{secrets.token_hex(3)}"]) as urls:
        found, idle_rate = count_writer(urls[0], nats_url, count, work)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    return "\n".join([
        f"# Instructions per write of the writer process — {stamp}", "",
        f"valgrind --tool=callgrind, {count:,} PUTs with If-Match per row after "
        f"{WRITER_WARMUP} (`make bench-instructions INSTRUCTIONS_ARGS=--writer`; "
        "ops/bench/writer_instructions.py); idle, the writer ran "
        f"{idle_rate:,.0f} instructions a second", "",
        "| connections | instructions per write | without the idle work | mean batch |",
        "|---:|---:|---:|---:|",
        *(f"| {many} | {c.per_write:,.0f} | {c.busy_per_write:,.0f} | {c.mean_batch:.1f} |"
          for many, c in found.items())]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nexus_ssot.ops.bench.instructions",
        description="Instructions per request of one HTTP worker, counted by valgrind, "
                    "auth off and on (docs/performance.md)")
    parser.add_argument("--count", type=int, default=1000, help="requests counted per side")
    parser.add_argument("--method", action="append", choices=["GET", "PUT"],
                        help="GET, PUT or both (the default)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--followers", action="store_true",
                        help="count the followers of the log per event instead "
                             "(ops/bench/follower_instructions.py)")
    parser.add_argument("--writer", action="store_true",
                        help="count the writer process per write instead, at 1 and 64 "
                             "connections (ops/bench/writer_instructions.py)")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="with --followers: one-event commits a second")
    args = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: install Debian's valgrind package "
                  "(apt-get install valgrind)", file=sys.stderr)
            return 2
    server_url, nats_url = os.environ.get("SSOT_DATABASE_URL"), os.environ.get("SSOT_NATS_URL")
    if not server_url or not nats_url:
        print("set SSOT_DATABASE_URL and SSOT_NATS_URL (the servers to run on; beside "
              "`make run`: eval \"$(ssot env)\")", file=sys.stderr)
        return 2
    work = Path(f"/tmp/ssot-instructions-{secrets.token_hex(3)}")
    work.mkdir(parents=True)
    if args.followers:
        text = followers_report(server_url, nats_url, args.count, args.rate, work)
    elif args.writer:
        text = writer_report(server_url, nats_url, args.count, work)
    else:
        results = measure(server_url, nats_url, args.method or ["GET", "PUT"], args.count,
                          work)
        text = report(results, args.count)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"instructions-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.md"
    path.write_text(text)
    print(text, end="")
    say(f"results in {path}; call graphs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
