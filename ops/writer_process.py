"""``ssot writer``: the group-commit writer as its own process, serving a Unix socket."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import uuid
from pathlib import Path

import uvloop

from nexus_ssot.ledger.metrics import record_commit
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ledger.store import open_application
from nexus_ssot.ledger.telemetry import tracer_provider
from nexus_ssot.ledger.writer import GroupCommitWriter
from nexus_ssot.ledger.writer_service import serve_writer

from .children import ChildProcess, exit_with_parent
from .console import not_configured
from .heap import freeze_startup_heap

log = logging.getLogger("nexus_ssot.writer")


def run_writer(settings: Settings, socket_path: str) -> None:
    """Run until SIGTERM/SIGINT; then commit what was accepted and exit."""
    exit_with_parent()  # first: serve may die while this one starts
    if not settings.database_url:
        not_configured("SSOT_DATABASE_URL")
    migrate(settings.database_url)
    application = open_application(settings.database_url, pool_size=2)
    tracing = tracer_provider(settings)
    writer = GroupCommitWriter(application, settings.limits, max_batch=settings.max_batch,
                               cache_size=settings.state_cache_size,
                               cache_bytes=settings.state_cache_bytes,
                               hash_chain=settings.hash_chain,
                               implicit_namespaces=settings.implicit_namespaces,
                               on_commit=record_commit,
                               tracer_provider=tracing)
    Path(socket_path).unlink(missing_ok=True)
    freeze_startup_heap()
    try:
        uvloop.run(serve_writer(writer, socket_path))
    finally:
        application.close()
        tracing.shutdown()  # its last spans exported
        Path(socket_path).unlink(missing_ok=True)


def new_socket_path() -> str:
    # Unix socket paths are limited to ~108 bytes: keep it short, in the temp folder.
    return os.path.join(tempfile.gettempdir(), f"ssot-writer-{uuid.uuid4().hex[:12]}.sock")


class WriterProcess(ChildProcess):
    """``ssot writer`` as a child of ``ssot serve``, serving a fresh Unix socket."""

    what = "writer"

    def __init__(self, settings: Settings) -> None:
        self.socket_path = new_socket_path()
        super().__init__(settings, ["writer", "--socket", self.socket_path])

    def ready(self) -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            return s.connect_ex(self.socket_path) == 0
