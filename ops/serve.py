"""``ssot serve``: resolve the database and NATS (embedded when unset) and run the API."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import uvicorn
from nexus_ssot.ledger.embedded import EmbeddedNats, EmbeddedPostgres
from nexus_ssot.ledger.settings import Settings
from psycopg import sql

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
    (and stopping them on exit)."""
    with contextlib.ExitStack() as stack:
        update: dict[str, Any] = {}
        if not settings.database_url:
            pg = stack.enter_context(EmbeddedPostgres(settings.data_dir / "postgres"))
            update["database_url"] = ensure_database(pg.url, EMBEDDED_DATABASE)
            log.info("embedded PostgreSQL at %s", update["database_url"])
        if not settings.nats_url:
            nats = stack.enter_context(EmbeddedNats(settings.data_dir / "nats"))
            update["nats_url"] = nats.url
            log.info("embedded NATS at %s", nats.url)
        yield settings.model_copy(update=update)


def serve(settings: Settings, *, access_log: bool = False) -> None:
    from nexus_ssot.api.app import create_app  # the one place ops starts the api

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with resolved(settings) as ready:
        config = uvicorn.Config(
            create_app(ready),
            host=ready.http_host,
            port=ready.http_port,
            loop="uvloop",
            http="httptools",
            access_log=access_log,
            timeout_graceful_shutdown=30,
            log_level="info",
        )
        server = uvicorn.Server(config)
        print(f"NEXUS SSOT Ledger serving on http://{ready.http_host}:{ready.http_port} "
              f"(docs at /docs)", flush=True)
        server.run()
