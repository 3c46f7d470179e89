"""The server under test: ``ssot serve`` as its own OS process on a free port of 127.0.0.1,
on a NATS stream and KV buckets of the bench's own, which it deletes when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats

from ..embedded.processes import free_port
from .measuring import HOST, descendants, process_table, say

SERVER_START_TIMEOUT = 120.0
SERVER_STOP_TIMEOUT = 40.0


def read_status_kb(pid: int, field_name: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def gone(pid: int) -> bool:
    """True once the process has exited (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


class Server:
    """``ssot serve`` as its own OS process, on a free port of 127.0.0.1."""

    def __init__(self, database_url: str, nats_url: str, work: Path, workers: int = 1, *,
                 name: str = "server", env: dict[str, str] | None = None) -> None:
        self.nats_url = nats_url
        self.workers = workers
        self.port = free_port()
        self.data_dir = work / name
        self.log_path = work / f"{name}.log"
        #: Settings of this server's own (``SSOT_AUTH``, …), over the bench's environment.
        self.env = dict(env or {})
        self.database_url = database_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.terminated = False
        self.orphan_nats = False
        self.stream = f"SSOT_BENCH_{secrets.token_hex(4)}"
        self.prefix = self.stream.lower().replace("_", "")
        self.kv_prefix = f"{self.prefix}_"  # the KV mirror's buckets: KV_<kv_prefix><ns>

    def command(self) -> list[str]:
        ssot = Path(sys.executable).parent / "ssot"
        base = [str(ssot)] if ssot.is_file() else [sys.executable, "-m", "nexus_ssot.ops.cli"]
        return [*base, "serve", "--host", HOST, "--port", str(self.port),
                "--workers", str(self.workers)]

    def start(self) -> None:
        self.launch()
        self.wait_until_healthy()

    def launch(self) -> None:
        """Start the process (``wait_until_healthy`` waits for it to answer)."""
        env = dict(os.environ)
        env["SSOT_NATS_URL"] = self.nats_url
        env["SSOT_DATABASE_URL"] = self.database_url
        env["SSOT_DATA_DIR"] = str(self.data_dir)  # never the embedded servers of `make run`
        # The broadcaster runs as in production, on a stream of the bench's own.
        env["SSOT_NATS_STREAM"] = self.stream
        env["SSOT_NATS_SUBJECT_PREFIX"] = self.prefix
        env["SSOT_KV_BUCKET_PREFIX"] = self.kv_prefix  # buckets of its own too
        env.update(self.env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_until_healthy(self) -> None:
        """Poll ``/v1/health`` until it answers 200, at most ``SERVER_START_TIMEOUT``."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the server was not healthy within {SERVER_START_TIMEOUT:.0f} s:\n"
                           f"{self.log_tail()}")

    def healthy(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=2.0)
        try:
            conn.request("GET", "/v1/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> dict[str, int | None]:
        """VmRSS and VmHWM of the server process, and VmRSS of it with its descendants
        other than nats-server (in case a later version moves work to child processes)."""
        table = process_table()
        tree = 0
        for pid in descendants(self.pid, table):
            if table.get(pid) and table[pid].comm != "nats-server":
                tree += read_status_kb(pid, "VmRSS") or 0
        return {"vm_rss_kb": read_status_kb(self.pid, "VmRSS"),
                "vm_hwm_kb": read_status_kb(self.pid, "VmHWM"), "tree_rss_kb": tree or None}

    def terminate(self) -> None:
        """Ask the server to stop (once: a second SIGTERM would cut its shutdown short);
        ``stop`` waits for it."""
        if self.proc is not None and self.proc.poll() is None and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                say("the server ignored SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait(10)
        self.orphan_nats = self.end_orphan_nats()
        if self.orphan_nats:
            say("the server left its embedded nats-server running: ended it")
        asyncio.run(self.delete_stream(self.nats_url))
        return self.proc.returncode

    async def delete_stream(self, nats_url: str) -> None:
        """Delete the server's stream, the streams named after it (the digests'
        ``<stream>_DIGESTS``) and the KV mirror's buckets (streams ``KV_<kv_prefix>…``, one
        per namespace written)."""
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            names = [info.config.name or "" for info in await js.streams_info()]
            mine = [name for name in names if name.startswith((f"{self.stream}_",
                                                               f"KV_{self.kv_prefix}"))]
            for name in [self.stream, *mine]:
                try:
                    await js.delete_stream(name)
                    say(f"deleted NATS stream {name}")
                except nats.js.errors.NotFoundError:
                    pass
        finally:
            await nc.close()

    def end_orphan_nats(self) -> bool:
        """End the embedded nats-server the server started if it outlived the server (it does
        when the server dies by a signal); True when there was one."""
        pid_file = self.data_dir / "nats" / "nats.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return False
        if Path(argv[0].decode()).name != "nats-server" or str(pid_file).encode() not in argv:
            return False
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while not gone(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if gone(pid):
                break
        return True

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no server log)"
