"""The asynchronous views the ledger ships, by name."""

from __future__ import annotations

from collections.abc import Callable

from nexus_ssot.ledger.settings import Settings

from .kv_mirror import KvMirror
from .namespace_stats import NamespaceStats
from .runtime import View
from .schema_quality import SchemaQuality

#: Views that need no outside service (PostgreSQL only): name → constructor.
SQL_VIEWS: dict[str, Callable[[], View]] = {
    NamespaceStats.name: NamespaceStats,
    SchemaQuality.name: SchemaQuality,
}


class NotConfigured(Exception):
    """A view's outside service is not configured: the view is not run."""


def _kv_mirror(settings: Settings) -> View:
    if not settings.nats_url:
        raise NotConfigured(f"the view {KvMirror.name} needs SSOT_NATS_URL")
    if not settings.kv_mirror:
        raise NotConfigured(f"the view {KvMirror.name} is off (SSOT_KV_MIRROR=false)")
    return KvMirror(settings.nats_url, settings.kv_bucket_prefix,
                    replicas=settings.nats_replicas)


#: Views with effects outside PostgreSQL: name → constructor from the settings (raises
#: ``NotConfigured`` when the service the view needs is not configured).
SERVICE_VIEWS: dict[str, Callable[[Settings], View]] = {
    KvMirror.name: _kv_mirror,
}

#: Every view's name.
VIEW_NAMES: tuple[str, ...] = (*SQL_VIEWS, *SERVICE_VIEWS)
def every_view_for_its_tables() -> list[View]:
    """Every asynchronous view, made only to create its tables (``ssot migrate``): a view
    with an outside service is not connected to it, so its tables exist wherever it may
    run later, made by the role that owns the schema."""
    return [*(make() for make in SQL_VIEWS.values()), KvMirror(nats_url="")]


def view_tables() -> tuple[str, ...]:
    """Every asynchronous view's tables (their live names), configured here or not."""
    return tuple(table for view in every_view_for_its_tables() for table in view.tables)
