"""``ssot serve``: resolve the database and NATS (embedded when unset) and run the API."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import psycopg
import uvicorn
from psycopg import sql

from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.redaction import redact_url
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ops.embedded import EmbeddedNats, EmbeddedPostgres

from .credentials import admin_token_path, ensure_admin_token, token_sha256
from .followers import FollowersThread
from .heap import freeze_startup_heap
from .http_workers import HttpWorkers, Server, serve_until_signalled, uvicorn_options
from .instance import claimed
from .metrics_folder import empty_metrics_folder
from .nats_authorization import REFRESH_SECONDS, NatsAuthorizer
from .writer_process import WriterProcess

log = logging.getLogger("nexus_ssot.serve")

EMBEDDED_DATABASE = "ssot"


def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server if missing; return its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = psycopg.conninfo.conninfo_to_dict(server_url)
    parts["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


@contextlib.contextmanager
def resolved(settings: Settings) -> Iterator[Settings]:
    """Settings with database and NATS URLs, starting embedded servers for unset ones
    (and stopping them on exit). The embedded NATS lets in the service user (these URLs)
    and the API tokens, as the access policy says (re-rendered every few seconds)."""
    with contextlib.ExitStack() as stack:
        update: dict[str, Any] = {}
        if not settings.database_url:
            pg = stack.enter_context(EmbeddedPostgres(settings.data_dir / "postgres"))
            update["database_url"] = ensure_database(pg.url, EMBEDDED_DATABASE)
            log.info("embedded PostgreSQL at %s", redact_url(update["database_url"]))
        nats: EmbeddedNats | None = None
        if not settings.nats_url:
            nats = stack.enter_context(EmbeddedNats(settings.data_dir / "nats"))
            update["nats_url"] = nats.url
            log.info("embedded NATS at %s", redact_url(nats.url))
        ready = settings.model_copy(update=update)
        if nats is not None:
            users = NatsAuthorizer(ready, nats)
            users.start()
            stack.callback(users.stop)  # before the server stops
            log.info("embedded NATS users follow the access policy (re-rendered every %gs)",
                     REFRESH_SECONDS)
        yield ready


class FollowersStopped(RuntimeError):
    """serve stopped because its followers' thread had (``ssot serve`` exits 1)."""


class FollowersWatch:
    """The followers' thread ended on an error none of them handles: serve stops (as on
    SIGTERM, draining the HTTP side) and exits 1, so that whatever supervises it starts
    it again; a serve answering writes that nothing broadcasts is worse. Serving may not
    have begun when it happens: then it stops as soon as it begins."""

    def __init__(self) -> None:
        self.failed: BaseException | None = None  # the first error that ended the thread
        self._stop: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def serving(self, stop: Callable[[], None]) -> None:
        """Serving has begun; ``stop`` ends it (from any thread)."""
        with self._lock:
            self._stop, failed = stop, self.failed is not None
        if failed:
            stop()

    def failure(self, error: BaseException) -> None:
        """On the followers' thread: what ended it."""
        log.critical("the followers of the log stopped (%s): stopping serve",
                     redact_url(f"{type(error).__name__}: {error}"))
        with self._lock:
            if self.failed is None:
                self.failed = error
            stop = self._stop
        if stop is not None:
            stop()

    def exit_if_failed(self) -> None:
        if (error := self.failed) is not None:
            raise FollowersStopped(
                "serve stopped because the followers of the log (broadcaster, digester, "
                f"views) stopped: {redact_url(f'{type(error).__name__}: {error}')}")


def serve(settings: Settings, *, access_log: bool = False) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The data dir is claimed before any embedded server starts (ops/instance.py).
    with claimed(settings) as claim, resolved(settings) as ready, claim.recorded(ready), \
            contextlib.ExitStack() as stack:
        watch = FollowersWatch()
        stack.callback(watch.exit_if_failed)  # the last callback: once all has stopped
        if ready.metrics_dir is not None:  # the data dir is ours: so is its metrics folder
            empty_metrics_folder(ready.metrics_dir)
        if ready.auth == "on" and ready.bootstrap_token_sha256 is None:
            token, made = ensure_admin_token(ready.data_dir)
            ready = ready.model_copy(update={"bootstrap_token_sha256": token_sha256(token)})
            print(f"admin token {'created' if made else 'kept'} in "
                  f"{admin_token_path(ready.data_dir)} (mode 0600; the ssot commands use it; "
                  "curl: -H \"Authorization: Bearer $(cat "
                  f"{admin_token_path(ready.data_dir)})\")", flush=True)
        elif ready.auth == "off":
            log.warning("SSOT_AUTH=off: every caller on %s may read and rewrite every record",
                        ready.http_host)
        common = uvicorn_options(ready, access_log=access_log)
        if ready.writer_process and not ready.writer_socket:
            writer = WriterProcess(ready)
            writer.start()
            stack.callback(writer.stop)  # after the HTTP side has drained
            ready = ready.model_copy(update={"writer_socket": writer.socket_path})
            log.info("writer process on %s", writer.socket_path)
        elif ready.database_url:  # the writer migrates before it listens; without it
            # the followers would start on a schema each HTTP worker makes as it starts
            migrate(ready.database_url)
        followers = FollowersThread(ready)  # one thread, one log tail, one lease connection
        followers.on_failure = watch.failure
        followers.start()
        stack.callback(followers.stop)
        log.info("idempotency keys kept %gs, purged every %gs",
                 ready.idempotency_retention_seconds, ready.idempotency_purge_every_seconds)
        if followers.broadcaster is not None:
            log.info("broadcasting on NATS stream %s (subjects %s.>)", ready.nats_stream,
                     ready.nats_subject_prefix)
        if followers.digester is not None:
            log.info("recording digests every %d events or %gs", ready.digest_every_events,
                     ready.digest_every_seconds)
        if followers.runners:
            log.info("keeping the views current: %s",
                     ", ".join(r.view.name for r in followers.runners))
        scheme = "https" if ready.tls_cert else "http"
        print(f"NEXUS SSOT Ledger serving on {scheme}://{ready.http_host}:{ready.http_port} "
              f"(docs at /docs)", flush=True)
        print(f"web console at {scheme}://{ready.http_host}:{ready.http_port}/ui"
              + (f" (sign in with the token in {admin_token_path(ready.data_dir)})"
                 if ready.auth == "on" and admin_token_path(ready.data_dir).exists()
                 else ""), flush=True)
        if ready.http_workers == 1:
            from nexus_ssot.api.app import create_app  # the one place ops starts the api

            config = uvicorn.Config(create_app(ready), **common)
            freeze_startup_heap()
            server = Server(config)
            watch.serving(functools.partial(setattr, server, "should_exit", True))
            server.run()
            return
        # Each worker builds its app from the environment: hand it what this process
        # resolved (embedded URLs, command-line flags).
        os.environ.update(ready.as_environment())
        # This Config carries the socket's settings only: each worker makes its own app.
        serve_until_signalled(HttpWorkers(ready, uvicorn.Config(cast(Any, None), **common),
                                          access_log), on_serving=watch.serving)
