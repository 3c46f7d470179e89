"""The embedded PostgreSQL and NATS servers: real processes in temporary folders."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import psycopg
import pytest

from nexus_ssot.access.nats_config import authorization, service_user_entry
from nexus_ssot.ops.embedded import (
    EmbeddedError,
    EmbeddedNats,
    EmbeddedPostgres,
    pg_binaries,
    pg_user,
)
from nexus_ssot.ops.embedded.folders import shared_dir_name
from nexus_ssot.ops.embedded.pg_cluster import MARKER, discard_relocated_under

FAST = {"fsync": "off"}
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root switches to another OS user")


def postmasters_serving(pgdata: Path) -> list[int]:
    """Pids of postmasters (not their children) whose working folder is `pgdata`. A child
    the postmaster has just forked still shows its argv until it sets its own title: a
    process whose parent is one of them is a child, not a second postmaster."""
    found: dict[int, int] = {}  # pid -> parent pid
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if argv[0].endswith(b"/postgres") and b"-D" in argv and cwd == str(pgdata.resolve()):
            found[int(entry.name)] = parent
    return [pid for pid, parent in found.items() if parent not in found]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def select_one(url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


def without_password(url: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(url)
    parts.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


def refused_without_password(url: str) -> str:
    """The server's refusal of ``url`` without its password (none from a password file or
    the environment either)."""
    with pytest.raises(psycopg.OperationalError) as refusal:
        psycopg.connect(without_password(url), password="", passfile="/nonexistent/passfile",
                        connect_timeout=5)
    return str(refusal.value)


def owner_only(path: Path) -> bool:
    st = path.stat()
    return stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600


@contextlib.contextmanager
def listening_socket() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def pg_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose cluster is deleted afterwards (it may live outside tmp_path)."""
    yield tmp_path / "pg"
    EmbeddedPostgres(tmp_path / "pg").discard()


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user can traverse (pytest's tmp_path sits below a 700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="ssot-embedded-test-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --- PostgreSQL ----------------------------------------------------------------------------


def test_postgres_serves_sql_on_localhost_tcp_and_stops(pg_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_dir, settings=FAST)
    url = pg.start()
    try:
        assert url.startswith("postgresql://ssot:")
        assert url == pg.url
        assert select_one(url) == 1
        with psycopg.connect(url) as conn:
            settings = conn.execute(
                "SELECT current_setting('max_connections'), current_setting('fsync'),"
                " current_setting('unix_socket_directories'), datcollate"
                " FROM pg_database WHERE datname = current_database()"
            ).fetchone()
        assert settings == ("200", "off", "", "C.UTF-8")
        assert len(postmasters_serving(pg.pgdata)) == 1
    finally:
        pg.stop()
    assert postmasters_serving(pg.pgdata) == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    pg.stop()  # idempotent


def test_postgres_client_tools_come_with_the_server(pg_dir: Path) -> None:
    with EmbeddedPostgres(pg_dir, settings=FAST) as pg:
        tools = pg.bin_dir()
        assert {"psql", "pg_dump", "pgbench"} <= {p.name for p in tools.iterdir()}
        out = subprocess.run(
            [str(tools / "psql"), pg.url, "-XAtc", "SELECT 40 + 2"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        assert out.stdout.strip() == "42"


def test_postgres_restart_keeps_the_data(pg_dir: Path) -> None:
    with EmbeddedPostgres(pg_dir, settings=FAST) as pg, psycopg.connect(pg.url) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('before restart')")
        conn.commit()
    with EmbeddedPostgres(pg_dir, settings=FAST) as again:
        with psycopg.connect(again.url) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("before restart",)]
        assert again.pgdata == pg.pgdata


def test_postgres_asks_for_the_password_kept_owner_only_in_the_data_dir(pg_dir: Path) -> None:
    with EmbeddedPostgres(pg_dir, settings=FAST) as pg:
        password = pg.secret_file.read_text().strip()
        assert pg.secret_file.parent == pg_dir.resolve()
        assert owner_only(pg.secret_file)
        assert len(password) >= 40
        assert psycopg.conninfo.conninfo_to_dict(pg.url)["password"] == password
        assert select_one(pg.url) == 1
        assert "no password supplied" in refused_without_password(pg.url)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(without_password(pg.url), password="wrong", connect_timeout=5)
        hba = (pg.pgdata / "pg_hba.conf").read_text()
        methods = {line.split()[-1] for line in hba.splitlines()
                   if line.strip() and not line.lstrip().startswith("#")}
        assert methods == {"scram-sha-256"}
        assert not list(pg_dir.parent.glob(".pg.initdb-*"))  # initdb's password file is gone
    with EmbeddedPostgres(pg_dir, settings=FAST) as again:  # a restart reads it back
        assert select_one(again.url) == 1
        assert pg.secret_file.read_text().strip() == password


def test_postgres_without_its_password_file_says_so(pg_dir: Path) -> None:
    with EmbeddedPostgres(pg_dir, settings=FAST) as pg:
        secret_file = pg.secret_file
    secret_file.unlink()
    with pytest.raises(EmbeddedError, match=r"asks for a password, but its file .* is missing"):
        EmbeddedPostgres(pg_dir, settings=FAST).start()


def make_trust_cluster(data_dir: Path) -> None:
    """A cluster as EmbeddedPostgres made them before passwords were required (initdb
    --auth=trust, no password file), holding a table."""
    who = pg_user.run_as()
    tools = EmbeddedPostgres(data_dir).bin_dir()
    data_dir.mkdir(mode=0o700)
    if who.switch:
        os.chown(data_dir, who.uid, who.gid)
    code, output = pg_user.run_tool(
        [str(tools / "initdb"), "-D", str(data_dir), "--locale=C.UTF-8", "-E", "UTF8",
         "--auth=trust", "-U", "ssot", "--no-instructions", "--no-sync"], who, timeout=120)
    assert code == 0, output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    options = shlex.join(["-h", "127.0.0.1", "-p", str(port), "-k", ""])
    pg_ctl = str(tools / "pg_ctl")
    code, output = pg_user.run_tool(
        [pg_ctl, "-D", str(data_dir), "-l", str(data_dir / "postgres.log"), "-w", "-o", options,
         "start"], who, timeout=90)
    assert code == 0, output
    try:
        with psycopg.connect(f"postgresql://ssot@127.0.0.1:{port}/postgres") as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('made before passwords')")
    finally:
        code, output = pg_user.run_tool([pg_ctl, "-D", str(data_dir), "-w", "-m", "fast",
                                         "stop"], who, timeout=90)
    assert code == 0, output


def test_postgres_made_without_a_password_is_moved_over_to_one(
        open_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = open_folder / "pg"  # a folder the PostgreSQL user reaches (no relocation)
    make_trust_cluster(data_dir)
    pg = EmbeddedPostgres(data_dir, settings=FAST)
    try:
        with caplog.at_level(logging.WARNING, logger="nexus_ssot.ops.embedded"):
            url = pg.start()
        assert "made before passwords were required" in caplog.text
        password = pg.secret_file.read_text().strip()
        assert password not in caplog.text
        assert owner_only(pg.secret_file)
        with psycopg.connect(url) as conn:  # the same cluster, with its data
            assert conn.execute("SELECT v FROM kept").fetchall() == [("made before passwords",)]
        assert "no password supplied" in refused_without_password(url)
        assert "trust" not in " ".join(
            line for line in (pg.pgdata / "pg_hba.conf").read_text().splitlines()
            if not line.lstrip().startswith("#"))
        pg.stop()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nexus_ssot.ops.embedded"):
            url = pg.start()  # moved over once: a plain start from now on
        assert caplog.text == ""
        assert select_one(url) == 1
        assert "no password supplied" in refused_without_password(url)
    finally:
        pg.discard()


def test_postgres_left_running_by_a_crashed_run_is_replaced(pg_dir: Path) -> None:
    crashed = EmbeddedPostgres(pg_dir, settings=FAST)
    crashed.start()
    [old_postmaster] = postmasters_serving(crashed.pgdata)

    fresh = EmbeddedPostgres(pg_dir, settings=FAST)  # the crashed object is "forgotten"
    try:
        url = fresh.start()
        assert not running(old_postmaster)
        [new_postmaster] = postmasters_serving(fresh.pgdata)
        assert new_postmaster != old_postmaster
        crashed.stop()  # must leave the new server alone
        assert select_one(url) == 1
    finally:
        fresh.stop()
    assert postmasters_serving(fresh.pgdata) == []


def test_postgres_start_failure_shows_the_server_log(pg_dir: Path) -> None:
    pg = EmbeddedPostgres(pg_dir, settings=FAST)
    with listening_socket() as taken, pytest.raises(EmbeddedError) as failure:
        EmbeddedPostgres(pg_dir, port=taken, settings=FAST).start()
    assert "PostgreSQL did not start" in str(failure.value)
    assert "Address already in use" in str(failure.value)
    assert pg.start()  # the same data dir still starts on a free port
    pg.stop()


@as_root
def test_postgres_runs_as_an_unprivileged_user_in_an_open_folder(open_folder: Path) -> None:
    data_dir = open_folder / "pg"
    with EmbeddedPostgres(data_dir, settings=FAST) as pg:
        assert pg.pgdata == data_dir  # the cluster lives in the data dir itself
        owner = data_dir.stat()
        assert owner.st_uid != 0
        assert owner.st_mode & 0o777 == 0o700
        [postmaster] = postmasters_serving(data_dir)
        assert Path(f"/proc/{postmaster}").stat().st_uid == owner.st_uid
        assert (data_dir / "postgres.log").is_file()
    assert open_folder.stat().st_mode & 0o777 == 0o755  # folders above are left as they were


@as_root
def test_postgres_under_a_closed_folder_keeps_its_cluster_outside(pg_dir: Path) -> None:
    assert pg_dir.parent.parent.stat().st_mode & 0o077 == 0  # pytest makes these 700
    with EmbeddedPostgres(pg_dir, settings=FAST) as pg, psycopg.connect(pg.url) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.commit()
        first_cluster = pg.pgdata
        assert not first_cluster.is_relative_to(pg_dir.parent)
        assert (pg_dir / "postgres.log").resolve() == first_cluster / "postgres.log"
    assert pg_dir.parent.parent.stat().st_mode & 0o077 == 0  # never opened up

    shutil.rmtree(pg_dir)  # a new data dir in the same place gets a new, empty cluster
    with EmbeddedPostgres(pg_dir, settings=FAST) as pg, psycopg.connect(pg.url) as conn:
        assert pg.pgdata != first_cluster
        assert conn.execute("SELECT to_regclass('kept')").fetchone() == (None,)
    assert not first_cluster.exists()  # the orphaned cluster was collected

    second_cluster = pg.pgdata
    pg.discard()
    assert not second_cluster.exists()
    assert not pg_dir.exists()


@as_root
def test_the_clusters_relocated_for_a_folder_are_removed_and_no_other(
        pg_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """What the suite does at its end (tests/conftest.py) for the clusters its runs of
    ``ssot serve`` relocated: those of data dirs below the folder go, running or not, with
    their owner files and markers; a cluster of a data dir elsewhere stays."""
    root = shared_dir_name("nexus-ssot-pg-data")
    elsewhere = tmp_path_factory.mktemp("elsewhere", numbered=True) / "pg"
    with EmbeddedPostgres(elsewhere, settings=FAST) as other:
        kept = other.pgdata
    running = EmbeddedPostgres(pg_dir, settings=FAST)
    try:
        running.start()
        cluster = running.pgdata
        assert cluster.parent == root and kept.parent == root
        assert postmasters_serving(cluster)

        removed = discard_relocated_under(pg_dir.parent, root)

        assert removed == [cluster]
        assert not cluster.exists() and not (root / f"{cluster.name}.json").exists()
        assert not postmasters_serving(cluster)
        assert not (pg_dir / MARKER).exists()
        assert kept.is_dir() and (root / f"{kept.name}.json").is_file()
    finally:
        running.stop()
        EmbeddedPostgres(elsewhere, settings=FAST).discard()
    assert not kept.exists()


@as_root
def test_postgres_binaries_below_a_closed_folder_are_copied(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    (closed / "site-packages").mkdir()
    installed = pg_binaries.installed_distribution()
    package = closed / "site-packages" / installed.parent.name
    package.mkdir()
    (package / "pginstall").symlink_to(installed)
    libs = installed.parent.parent / f"{installed.parent.name}.libs"
    (closed / "site-packages" / libs.name).symlink_to(libs)
    who = pg_user.run_as()

    cache_parent = Path(tempfile.mkdtemp(prefix="ssot-embedded-cache-", dir="/var/tmp"))
    cache_parent.chmod(0o755)
    cache = cache_parent / "dist"
    try:
        copy = pg_binaries.usable_distribution(package / "pginstall", who, cache)
        assert copy.is_relative_to(cache)
        assert pg_binaries.usable_distribution(package / "pginstall", who, cache) == copy
        version = subprocess.run(
            [str(copy / "bin" / "postgres"), "--version"],
            capture_output=True, text=True, check=True, user=who.uid, group=who.gid,
        )  # fmt: skip
        assert "PostgreSQL" in version.stdout
    finally:
        shutil.rmtree(cache_parent)


# --- NATS ----------------------------------------------------------------------------------


async def publish_with_ack(url: str) -> tuple[str, int]:
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        stream = f"TEST_{uuid.uuid4().hex}"
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        ack = await js.publish(f"{stream}.hello", b"hi", headers={"Nats-Msg-Id": "one"})
        await js.delete_stream(stream)
        assert ack.stream == stream
        return ack.stream, ack.seq
    finally:
        await nc.close()


def test_nats_jetstream_acknowledges_a_publish(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        assert server.url.startswith("nats://ssot:")
        _stream, seq = asyncio.run(publish_with_ack(server.url))
        assert seq == 1
        assert (tmp_path / "nats" / "nats.pid").read_text().strip() == str(server.pid)


async def connect_refusal(url: str) -> str:
    """Why the server refuses a connection to ``url`` ("" when it lets it in)."""
    async def quiet(error: Exception) -> None:
        pass

    try:
        nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False,
                                max_reconnect_attempts=0, error_cb=quiet)
    except nats.errors.Error as error:
        return str(error)
    await nc.close()
    return ""


def test_nats_lets_in_only_the_service_user_with_its_password(tmp_path: Path) -> None:
    folder = tmp_path / "nats"
    with EmbeddedNats(folder) as server:
        password = server.secret_file.read_text().strip()
        assert server.secret_file.parent == folder.resolve()
        assert len(password) >= 40
        assert server.url == f"nats://ssot:{password}@127.0.0.1:{server.url.rsplit(':', 1)[1]}"
        anonymous = server.url.replace(f"ssot:{password}@", "")
        assert "Authorization Violation" in asyncio.run(connect_refusal(anonymous))
        wrong = server.url.replace(password, "not-" + password)
        assert "Authorization Violation" in asyncio.run(connect_refusal(wrong))
        assert asyncio.run(connect_refusal(server.url)) == ""
        for name in (server.secret_file.name, "nats.conf", "authorization.conf"):
            assert owner_only(folder / name), name
        assert password not in (folder / "authorization.conf").read_text()  # only its hash
        assert password not in server.log_path.read_text()
        credentials = server.url.split("@")[0]
    with EmbeddedNats(folder) as again:  # a restart keeps the password
        assert again.url.split("@")[0] == credentials
        assert asyncio.run(connect_refusal(again.url)) == ""


def test_nats_authorize_keeps_the_service_user_and_reloads_only_on_change(
        tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        with pytest.raises(EmbeddedError, match="must hold the service user"):
            server.authorize(authorization([service_user_entry("ssot", "$2b$04$" + "x" * 53)]))
        second = {"user": "second", "password": "pw-of-the-second-user"}
        block = authorization([service_user_entry(*server.service_user), second])
        assert server.authorize(block)
        assert not server.authorize(block)  # the one in force: no reload
        port = server.url.rsplit(":", 1)[1]
        assert asyncio.run(connect_refusal(
            f"nats://second:pw-of-the-second-user@127.0.0.1:{port}")) == ""
        assert asyncio.run(connect_refusal(server.url)) == ""
        with pytest.raises(EmbeddedError, match="refused the new authorization"):
            server.authorize(block.replace("users = [", "users = [[", 1))
        assert asyncio.run(connect_refusal(server.url)) == ""  # still the previous users


def test_nats_stops_and_stop_is_idempotent(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    pid = server.pid
    assert pid is not None
    server.stop()
    assert not running(pid)
    assert not (tmp_path / "nats" / "nats.pid").exists()
    server.stop()


def test_nats_left_running_by_a_crashed_run_is_replaced(tmp_path: Path) -> None:
    crashed = EmbeddedNats(tmp_path / "nats")
    crashed.start()
    old_pid = crashed.pid
    assert old_pid is not None

    fresh = EmbeddedNats(tmp_path / "nats")  # the crashed object is "forgotten"
    try:
        url = fresh.start()
        assert not running(old_pid)
        crashed.stop()  # reaps its process; must leave the new server alone
        assert asyncio.run(publish_with_ack(url))[1] == 1
    finally:
        fresh.stop()


def test_nats_start_failure_shows_the_server_log(tmp_path: Path) -> None:
    with listening_socket() as taken, pytest.raises(EmbeddedError) as failure:
        EmbeddedNats(tmp_path / "nats", port=taken).start()
    assert "nats-server on 127.0.0.1" in str(failure.value)
    assert "address already in use" in str(failure.value).lower()
