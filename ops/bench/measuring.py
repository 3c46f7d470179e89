"""What every step of ``make bench`` measures with: where the CPU went (from /proc), latency
quantiles, the load generator's HTTP/1.1 connection, and the bench's progress lines.

The HTTP connection is hand-written on raw asyncio streams: the machine may have two cores
shared by the server, PostgreSQL and the generator, so the generator must stay cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

HOST = "127.0.0.1"
NAMESPACE = "bench"
STEP_GRACE = 30.0  # seconds a step may overrun its duration before it is cut off
#: A step during which every other process of the machine together used more than this
#: (% of one core) is noisy: its status is NOISY, not PASS. On the 2-core machine a quiet
#: step shows 0-10 % (the desktop's and PostgreSQL's background work, the bench's own
#: monitor); a test suite or a build beside it shows 50-100 %, which takes a quarter to a
#: half of the cores the server, PostgreSQL and the load generator share and cuts their
#: rates by as much. 15 % is above the quiet steps' noise, low enough to catch anything
#: that moves a throughput by ~10 %.
NOISY_OTHER = 15.0


def verdict(passed: bool | None, other: float | None) -> str:
    """A step's status: FAIL, NOISY (it would pass, or has no target, but other processes
    used more than ``NOISY_OTHER`` % of a core meanwhile), PASS, or — (no target)."""
    if passed is False:
        return "FAIL"
    if other is not None and other > NOISY_OTHER:
        return "NOISY"
    return "—" if passed is None else "PASS"


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- results ---------------------------------------------------------------------------------


@dataclass
class Cpu:
    """Where the CPU went during a step, in percent of one core (the machine has
    ``cores`` x 100 %); ``other`` is every other process on the machine."""

    server: float | None = None
    postgres: float | None = None
    #: The NATS servers on this machine (the broadcaster's and the KV mirror's traffic
    #: is part of the step, as PostgreSQL's is).
    nats: float | None = None
    load: float | None = None
    other: float | None = None
    idle: float | None = None
    cores: int = 0


def quantiles_ms(samples_ns: list[int]) -> tuple[float | None, float | None, float | None,
                                                 float | None]:
    """p50, p99, mean and max in milliseconds."""
    if not samples_ns:
        return None, None, None, None
    ordered = sorted(samples_ns)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1e6

    return at(0.50), at(0.99), sum(ordered) / n / 1e6, ordered[-1] / 1e6


def latency_quantiles(samples_ms: list[float]) -> dict[str, float | None]:
    """p50, p99 and max of latencies in milliseconds, rounded to the microsecond."""
    if not samples_ms:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(samples_ms)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(ordered[-1], 3)}


def bearer(token: str | None) -> str:
    """The header line that carries ``token`` in the load generator's requests ("" for
    none)."""
    return f"Authorization: Bearer {token}\r\n" if token else ""


def header_dict(lines: str) -> dict[str, str]:
    """Header lines ("Name: value\\r\\n"…) as http.client wants them."""
    pairs = (line.partition(":") for line in lines.split("\r\n") if line)
    return {name.strip(): value.strip() for name, _, value in pairs}


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def cpu_shares(cpu: dict[str, Any]) -> str:
    """"server / PostgreSQL / client / other" CPU of a step, in % of one core."""
    return " / ".join("—" if cpu.get(k) is None else f"{cpu[k]:.0f}"
                      for k in ("server", "postgres", "load", "other"))


# --- CPU accounting from /proc ---------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcessRow:
    ppid: int
    comm: str
    ticks: int  # its own user + system time
    reaped: int  # user + system time of its children that it has waited for


@dataclass
class _Snapshot:
    wall: float
    processes: dict[int, ProcessRow]
    busy: int
    idle: int
    children_cpu: float  # seconds of waited-for children of this process (pgbench)


def read_stat(path: str) -> tuple[str, list[str]] | None:
    """A ``/proc/…/stat`` file (a process's or a thread's): its name (comm) and the fields
    after it (``fields[11] + fields[12]``: its user + system ticks); None once it is gone."""
    try:
        raw = Path(path).read_text()
    except OSError:
        return None
    return raw[raw.find("(") + 1: raw.rfind(")")], raw[raw.rfind(")") + 2:].split()


def process_table() -> dict[int, ProcessRow]:
    table: dict[int, ProcessRow] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or (stat := read_stat(f"/proc/{name}/stat")) is None:
            continue
        comm, fields = stat
        table[int(name)] = ProcessRow(int(fields[1]), comm, int(fields[11]) + int(fields[12]),
                                       int(fields[13]) + int(fields[14]))
    return table


def _machine_ticks() -> tuple[int, int]:
    """Busy and idle (including iowait) ticks of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]) - idle, idle


def descendants(root: int, table: dict[int, ProcessRow]) -> set[int]:
    children: dict[int, set[int]] = {}
    for pid, row in table.items():
        children.setdefault(row.ppid, set()).add(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _tree_ticks(root: int | None, table: dict[int, ProcessRow]) -> int | None:
    """CPU ticks of a process tree so far: its live processes plus the children the root
    has reaped (a PostgreSQL backend that ends mid-step moves there, so nothing is lost)."""
    if root is None or root not in table:
        return None
    pids = descendants(root, table)
    return sum(table[pid].ticks for pid in pids if pid in table) + table[root].reaped


def _nats_ticks(before: dict[int, ProcessRow], after: dict[int, ProcessRow],
                server: int | None) -> int:
    """CPU ticks the machine's nats-server processes used between two snapshots (one of
    the server's own, should it embed one, counts as the server's)."""
    own = descendants(server, after) if server is not None and server in after else set()
    return sum(row.ticks - before[pid].ticks for pid, row in after.items()
               if row.comm == "nats-server" and pid in before and pid not in own)


class CpuMeter:
    """Samples /proc before and after a step and splits the CPU between the server's process
    tree, the PostgreSQL server's tree (when it runs on this machine), the NATS servers on
    this machine, the load generator and everything else."""

    def __init__(self, postmaster_pid: int | None) -> None:
        self.postmaster_pid = postmaster_pid
        self.server_pid: int | None = None
        self.load_pid: int | None = None

    def snapshot(self) -> _Snapshot:
        busy, idle = _machine_ticks()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return _Snapshot(time.monotonic(), process_table(), busy, idle,
                         children.ru_utime + children.ru_stime)

    @contextlib.contextmanager
    def measure(self, into: Callable[[Cpu], None], *, children_are_load: bool = False
                ) -> Iterator[None]:
        before = self.snapshot()
        yield
        after = self.snapshot()
        into(self.share(before, after, children_are_load))

    def share(self, before: _Snapshot, after: _Snapshot, children_are_load: bool) -> Cpu:
        seconds = after.wall - before.wall
        if seconds <= 0:
            return Cpu()
        scale = 100.0 / (_CLOCK_TICKS * seconds)

        def used(root: int | None) -> float | None:
            start, end = _tree_ticks(root, before.processes), _tree_ticks(root, after.processes)
            if start is None or end is None:
                return None
            return round((end - start) * scale, 1)

        cpu = Cpu(cores=os.cpu_count() or 0)
        cpu.server = used(self.server_pid)
        cpu.postgres = used(self.postmaster_pid)
        cpu.nats = round(_nats_ticks(before.processes, after.processes,
                                     self.server_pid) * scale, 1)
        load = used(self.load_pid) or 0.0
        if children_are_load:
            load += (after.children_cpu - before.children_cpu) * 100.0 / seconds
        cpu.load = round(load, 1)
        own = before.processes.get(os.getpid()), after.processes.get(os.getpid())
        mine = (own[1].ticks - own[0].ticks) * scale if own[0] and own[1] else 0.0
        total = (after.busy - before.busy) * scale
        known = (cpu.server or 0.0) + (cpu.postgres or 0.0) + cpu.nats + cpu.load + mine
        cpu.other = round(max(0.0, total - known), 1)
        cpu.idle = round((after.idle - before.idle) * scale, 1)
        return cpu


def mean_cpu(cpus: list[Cpu]) -> Cpu:
    """The mean of the shares of equally long measurements."""
    if not cpus:
        return Cpu()

    def mean(name: str) -> float | None:
        values = [getattr(c, name) for c in cpus]
        return None if None in values else round(sum(values) / len(values), 1)

    return Cpu(server=mean("server"), postgres=mean("postgres"), load=mean("load"),
               other=mean("other"), idle=mean("idle"), cores=cpus[0].cores)


T = TypeVar("T")


def measured(meter: CpuMeter, work: Callable[[], T], *, children_are_load: bool = False
             ) -> tuple[T, dict[str, Any]]:
    """The result of ``work()`` and where the CPU went meanwhile."""
    cpu: list[Cpu] = []
    with meter.measure(cpu.append, children_are_load=children_are_load):
        result = work()
    return result, asdict(cpu[0])


def worker_pid() -> int:
    return os.getpid()


# --- the load generator's HTTP connection ----------------------------------------------------

NETWORK_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                  ValueError)


class HttpConnection:
    """One HTTP/1.1 keep-alive connection: write a request, read one response."""

    def __init__(self, port: int, host: str = HOST) -> None:
        self.port = port
        self.host = host
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the connection now (else the first request opens it)."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def exchange(self, request: bytes) -> tuple[int, bytes | None]:
        """Send ``request``; return the status and the ETag (or None) of the response."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        self.writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        etag: bytes | None = None
        chunked = close = False
        for line in head[:-4].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"etag":
                etag = value.strip()
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length > 0:
            await reader.readexactly(length)
        elif length < 0 and status >= 200 and status not in (204, 304):
            await reader.read()  # delimited by the end of the connection
            close = True
        if close:
            self.close()
        return status, etag

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


#: The count of a callgrind file: its "totals:" line (its "summary:" line may be 0).
_CALLGRIND_TOTALS = re.compile(rb"^totals: (\d+)", re.MULTILINE)


#: A process that answers each byte it reads with the same byte, until "q" or the end.
_ECHO = ("import os\nos.write(1, b'r')\nwhile True:\n    b = os.read(0, 1)\n"
         "    if not b or b == b'q':\n        break\n    os.write(1, b)\n")


def wakeup_round_trip_us(round_trips: int = 10_000) -> float:
    """Microseconds of wall clock for one byte to another process and back over pipes,
    each side asleep until the other writes: the kernel's wake-up of a sleeping process,
    twice. The ledger's processes hand every request and commit to each other this way,
    and a host's hour can make this path twice as slow while plain Python runs as fast as
    ever (2026-12-07: the AMD host's slow hour)."""
    child = subprocess.Popen([sys.executable, "-c", _ECHO], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, bufsize=0)
    assert child.stdin is not None and child.stdout is not None
    to_child, from_child = child.stdin.fileno(), child.stdout.fileno()
    try:
        if os.read(from_child, 1) != b"r":
            raise RuntimeError("the echo process did not start")
        started = time.perf_counter()
        for _ in range(round_trips):
            os.write(to_child, b"x")
            if os.read(from_child, 1) != b"x":
                raise RuntimeError("the echo process stopped answering")
        elapsed = time.perf_counter() - started
        os.write(to_child, b"q")
    finally:
        child.stdin.close()
        child.stdout.close()
        child.wait(10)
    return elapsed / round_trips * 1e6


def host_speed(repeat: int = 3) -> dict[str, float]:
    """How fast this host runs plain Python now, in CPU seconds (best of ``repeat``): a loop of
    10M integer additions, and a dict of 1M entries built and its items sorted (which
    allocates). Hosts of the same kind have differed by 3x in the first and 15x in the
    second, and one host by a third within an hour; the figures put a run's absolute
    rates, which are bound by the CPU, beside the machine that made them. And the wake-up
    of another process (``wakeup_round_trip_us``, best of ``repeat``), which moves apart
    from both."""

    def adds() -> None:
        total = 0
        for i in range(10_000_000):
            total += i

    def dict_sort() -> None:
        table = {i: -i for i in range(1_000_000)}
        sorted(table.items(), key=lambda item: item[1])

    def best(work: Callable[[], None]) -> float:
        times = []
        for _ in range(repeat):
            started = time.process_time()
            work()
            times.append(time.process_time() - started)
        return round(min(times), 3)

    return {"adds_10m_s": best(adds), "dict_sort_1m_s": best(dict_sort),
            "wakeup_round_trip_us": round(min(wakeup_round_trip_us()
                                              for _ in range(repeat)), 1)}


def callgrind_total(path: Path) -> int:
    """The instructions a callgrind output file counted."""
    found = _CALLGRIND_TOTALS.search(path.read_bytes())
    if found is None:
        raise RuntimeError(f"no totals in {path}")
    return int(found.group(1))


def end_process(proc: subprocess.Popen[bytes], seconds: float = 120.0) -> None:
    """Ask ``proc`` to stop (SIGTERM); killed when it has not within ``seconds`` (a process
    under valgrind takes long to end)."""
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
