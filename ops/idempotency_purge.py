"""The purge of expired idempotency keys (ledger/idempotency_retention.py) on a thread of
``ssot serve``: one leader per database, whatever the number of HTTP workers or serve
processes."""

from __future__ import annotations

from nexus_ssot.ledger.idempotency_retention import IdempotencyPurger
from nexus_ssot.ledger.settings import Settings

from .loop_thread import LoopThread


class PurgerThread(LoopThread):
    """The idempotency keys' purger on a thread of ``ssot serve`` (its own event loop)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.database_url:
            raise SystemExit("the idempotency purge needs SSOT_DATABASE_URL")
        self.purger = IdempotencyPurger(
            settings.database_url, retention_seconds=settings.idempotency_retention_seconds,
            every_seconds=settings.idempotency_purge_every_seconds)
        super().__init__("ssot-idempotency-purge", self.purger.run)
