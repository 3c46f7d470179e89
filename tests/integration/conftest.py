"""Real services for the suite: PostgreSQL (and NATS) given by SSOT_DATABASE_URL /
SSOT_NATS_URL, or embedded ones started for this run. Each run makes its own database
and drops it at the end; nothing else on the server is touched."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import uvicorn
from psycopg import sql

from nexus_ssot.api.app import create_app
from nexus_ssot.api.http_protocol import HttpProtocol
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.writer import GroupCommitWriter
from nexus_ssot.ops.embedded import EmbeddedNats, EmbeddedPostgres
from nexus_ssot.ops.project import ProjectionsThread
from nexus_ssot.ops.writer_process import WriterProcess

#: Each xdist worker's own block of ports for the servers its tests start, below the
#: kernel's ephemeral range (32768-60999), where bind(0) and every outgoing connection
#: take theirs: a port one worker chose is never another worker's choice, so a server of
#: one can never answer a test of the other (a 401 for a token it does not know). Twelve
#: blocks: up to ``-n 12`` (with more, workers would share blocks again; a run takes a few
#: hundred ports per worker).
PORT_BLOCK = 1000
_PORT_BLOCKS = 12
_PORTS_BASE = 20000
_next_port = itertools.count()


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    base = _PORTS_BASE + index % _PORT_BLOCKS * PORT_BLOCK
    for _ in range(PORT_BLOCK):
        port = base + next(_next_port) % PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))  # taken (in use, TIME_WAIT): the next one
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {base}-{base + PORT_BLOCK - 1}")


def _with_db(url: str, name: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(url)
    parts["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server URL (its maintenance database)."""
    given = os.environ.get("SSOT_DATABASE_URL")
    if given:
        yield given
        return
    pg = EmbeddedPostgres(Path(tmp_path_factory.mktemp("pg")), settings={"fsync": "off"})
    try:
        yield pg.start()
    finally:
        pg.discard()


#: This run's administrator: its token's hash is the bootstrap token of every server the
#: suite starts (in process or as ``ssot serve``), and ``SSOT_TOKEN`` gives the token to
#: every ``ssot`` command it runs. A test of access control makes its own tokens.
ADMIN_TOKEN = f"ssot_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
os.environ["SSOT_BOOTSTRAP_TOKEN_SHA256"] = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
os.environ["SSOT_TOKEN"] = ADMIN_TOKEN
#: The suite's writers go as fast as they can; a rate-limit test sets its own limits.
os.environ["SSOT_RATE_LIMIT_PER_SECOND"] = "0"
#: One HTTP worker per ``ssot serve`` of the suite (each worker is a process importing the
#: whole API: about a second of CPU); a test of several workers asks with ``--workers``.
os.environ.setdefault("SSOT_HTTP_WORKERS", "1")

#: This run's KV bucket prefix. Set in the environment, it reaches every Settings the suite
#: builds and every process it starts: their nats_kv_mirror views write only buckets named
#: with it, and those are deleted at session end.
KV_BUCKET_PREFIX = f"ssottest{secrets.token_hex(4)}_"
os.environ["SSOT_KV_BUCKET_PREFIX"] = KV_BUCKET_PREFIX


def delete_kv_buckets(nats_url: str, prefix: str) -> list[str]:
    """Delete the KV buckets whose names start with ``prefix``; their names."""
    import asyncio

    import nats

    async def delete() -> list[str]:
        nc = await nats.connect(nats_url, allow_reconnect=False, connect_timeout=5)
        try:
            js = nc.jetstream()
            streams: list[str] = []
            while page := await js.streams_info(len(streams)):
                streams += [s.config.name or "" for s in page]
            buckets = [s[3:] for s in streams if s.startswith(f"KV_{prefix}")]
            for bucket in buckets:
                await js.delete_key_value(bucket)
            return buckets
        finally:
            await nc.close()

    return asyncio.run(delete())


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS server with JetStream: SSOT_NATS_URL, or an embedded one for this run; this
    run's KV buckets on it are deleted at the end."""
    given = os.environ.get("SSOT_NATS_URL")
    if given:
        yield given
        delete_kv_buckets(given, KV_BUCKET_PREFIX)
        return
    with EmbeddedNats(Path(tmp_path_factory.mktemp("nats"))) as server:
        yield server.url
        delete_kv_buckets(server.url, KV_BUCKET_PREFIX)


@pytest.fixture(scope="session", autouse=True)
def _kv_buckets_cleaned(request: pytest.FixtureRequest) -> None:
    """Views built from the environment mirror into SSOT_NATS_URL's server even in a run
    that never asks for ``nats_url``: have that fixture clean up there at session end."""
    if os.environ.get("SSOT_NATS_URL"):
        request.getfixturevalue("nats_url")


@contextlib.contextmanager
def own_database(server_url: str, prefix: str, *, migrated: bool = True) -> Iterator[str]:
    """A database of its own on the server (``prefix`` and a random suffix), migrated
    unless not ``migrated``; its URL, and it is dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = _with_db(server_url, name)
        if migrated:
            migrate(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database for this test run, dropped afterwards."""
    with own_database(server_url, "ssot_test", migrated=False) as url:
        yield url


@pytest.fixture()
def fresh_db(server_url: str) -> Iterator[str]:
    """A database of this test's own, migrated (for tests that need a log no other test
    writes to: digests cover the whole log, a follower reads it from the start)."""
    with own_database(server_url, "ssot_own") as url:
        yield url


@pytest.fixture()
def writer(database_url: str) -> Iterator[GroupCommitWriter]:
    """The ledger's writer, in this process, on ``database_url``."""
    migrate(database_url)
    app = open_application(database_url, pool_size=2)
    w = GroupCommitWriter(app, lambda _ns: Limits())
    w.start()
    yield w
    w.stop()
    app.close()


class RunningServer:
    """The API served by uvicorn in a background thread, on a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=settings.http_port,
            loop="uvloop", http=HttpProtocol, log_level="warning", access_log=False,
            server_header=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{settings.http_port}"

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def make_settings(database_url: str, **overrides: object) -> Settings:
    return Settings(database_url=database_url, http_port=free_port(), **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def api(database_url: str) -> Iterator[RunningServer]:
    """The API as `ssot serve` runs it: writes go to a writer process over its socket."""
    with serving(api_settings(database_url)) as running:
        yield running


def own_log(prefix: str) -> tuple[Any, Any]:
    """The fixtures ``database_url`` and ``api`` of a test file whose tests read the whole
    log (a broadcaster on a new stream, ``ssot check``, ``reconcile``, a rebuild), over a
    database of the file's own: in the worker's shared one they would read every event of
    the files before, thousands after one that seeds a rebuild. In the file:
    ``database_url, api = own_log("ssot_name")``."""

    @pytest.fixture(scope="module")
    def database_url(server_url: str) -> Iterator[str]:
        with own_database(server_url, prefix) as url:
            yield url

    @pytest.fixture(scope="module")
    def api(database_url: str) -> Iterator[RunningServer]:
        with serving(api_settings(database_url)) as running:
            yield running

    return database_url, api


def api_settings(database_url: str) -> Settings:
    """The settings of the suite's API (``api``)."""
    return make_settings(database_url, max_document_bytes=64 * 1024, max_depth=8)


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[RunningServer]:
    """The API of ``settings`` as `ssot serve` runs it, writes going to a writer process
    over its socket."""
    writer = WriterProcess(settings)
    writer.start()
    try:
        with RunningServer(settings.model_copy(
                update={"writer_socket": writer.socket_path})) as running:
            yield running
    finally:
        writer.stop()


@pytest.fixture()
def client(api: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(headers=AUTH, base_url=api.url, timeout=30) as c:
        yield c


@pytest.fixture()
def views(database_url: str) -> Iterator[ProjectionsThread]:
    """The asynchronous views, followed by a runner on a thread of this process."""
    thread = ProjectionsThread(make_settings(database_url))
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture()
def search_view(database_url: str) -> Iterator[ProjectionsThread]:
    """The search's view alone (``entry_search``), followed by a runner on a thread of
    this process: what a search reads, without the other views' work."""
    thread = ProjectionsThread(make_settings(database_url), ["entry_search"])
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture()
def ns() -> str:
    """A namespace of this test's own."""
    return f"t{secrets.token_hex(5)}"


@pytest.fixture()
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def event_count(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT count(*) FROM ssot_events").fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def start_serve(args: list[str], env: dict[str, str], port: int, timeout: float = 90.0, *,
                cwd: Path | None = None, new_session: bool = False,
                ) -> tuple[subprocess.Popen[bytes], str]:
    """`ssot serve ARGS` as its own process (in ``cwd``; the leader of its own process
    group with ``new_session``, as `make run` in a terminal); returns once /v1/health
    answers 200."""
    ssot = str(Path(sys.executable).parent / "ssot")
    env = {**env, "SSOT_KV_BUCKET_PREFIX": KV_BUCKET_PREFIX}
    embeds = not (env.get("SSOT_DATABASE_URL") and env.get("SSOT_NATS_URL"))
    if embeds and not env.get("SSOT_DATA_DIR") and cwd is None:
        # the checkout's .ssot is a developer's `make run`, which holds it (one serve per
        # data dir): a serve of the suite that embeds a server needs a data dir of its own
        raise ValueError("give SSOT_DATA_DIR or cwd to a serve that embeds a server")
    proc = subprocess.Popen([ssot, "serve", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=cwd, start_new_session=new_session)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"ssot serve did not become healthy:\n{out}")
        time.sleep(0.1)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class LiveFeed(threading.Thread):
    """A client of the live feed (``GET /v1/events/stream``) on a thread of its own: the
    positions of the events it received, and how its stream ended ("clean", or the error)."""

    def __init__(self, url: str, params: dict[str, object],
                 last_event_id: int | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.params = url, params
        self.headers = {**AUTH, **({"Last-Event-ID": str(last_event_id)}
                                   if last_event_id is not None else {})}
        self.positions: list[int] = []
        self.ending: str | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url + "/v1/events/stream", params=self.params,
                              headers=self.headers, timeout=60) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.positions.append(orjson.loads(line[6:])["data"]["position"])
            self.ending = "clean"
        except Exception as e:  # kept for the test to show
            self.ending = repr(e)


@pytest.fixture()
def stream(nats_url: str) -> Iterator[tuple[str, str]]:
    """(stream name, subject prefix) of this test's own, deleted afterwards with the
    digests' stream a server beside it makes (``<name>_DIGESTS``)."""
    token = secrets.token_hex(4)
    name, prefix = f"SSOT_TEST_{token}", f"ssottest{token}"
    yield name, prefix
    delete_stream(nats_url, name)
    delete_stream(nats_url, f"{name}_DIGESTS")


def delete_stream(nats_url: str, name: str) -> None:
    """Delete the JetStream stream ``name`` if it exists."""
    import asyncio

    import nats

    async def delete() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().delete_stream(name)
        except nats.js.errors.NotFoundError:
            pass
        finally:
            await nc.close()

    asyncio.run(delete())
