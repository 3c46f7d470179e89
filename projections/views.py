"""The asynchronous views the ledger ships, by name."""

from __future__ import annotations

from collections.abc import Callable

from nexus_ssot.ledger.settings import Settings

from .entry_search import EntrySearch
from .namespace_stats import NamespaceStats
from .runtime import View
from .schema_quality import SchemaQuality

#: Views that need no outside service (PostgreSQL only): name → constructor.
SQL_VIEWS: dict[str, Callable[[], View]] = {
    NamespaceStats.name: NamespaceStats,
    SchemaQuality.name: SchemaQuality,
    EntrySearch.name: EntrySearch,
}


#: The KV mirror's name. Its module, and nats-py with it (~35 ms and ~1.4 MB of a process),
#: is imported only where the mirror is made: not by an HTTP worker, which names the views
#: (the consistency check, the metrics) but runs none.
KV_MIRROR = "nats_kv_mirror"


class NotConfigured(Exception):
    """A view's outside service is not configured: the view is not run."""


def _kv_mirror(settings: Settings) -> View:
    if not settings.nats_url:
        raise NotConfigured(f"the view {KV_MIRROR} needs SSOT_NATS_URL")
    if not settings.kv_mirror:
        raise NotConfigured(f"the view {KV_MIRROR} is off (SSOT_KV_MIRROR=false)")
    from .kv_mirror import KvMirror

    return KvMirror(settings.nats_url, settings.kv_bucket_prefix,
                    replicas=settings.nats_replicas)


#: Views with effects outside PostgreSQL: name → constructor from the settings (raises
#: ``NotConfigured`` when the service the view needs is not configured).
SERVICE_VIEWS: dict[str, Callable[[Settings], View]] = {
    KV_MIRROR: _kv_mirror,
}

#: Every view's name.
VIEW_NAMES: tuple[str, ...] = (*SQL_VIEWS, *SERVICE_VIEWS)


def every_view_for_its_tables() -> list[View]:
    """Every asynchronous view, made only to create its tables (``ssot migrate``): a view
    with an outside service is not connected to it, so its tables exist wherever it may
    run later, made by the role that owns the schema."""
    from .kv_mirror import KvMirror

    return [*(make() for make in SQL_VIEWS.values()), KvMirror(nats_url="")]


def view_tables() -> tuple[str, ...]:
    """Every asynchronous view's tables (their live names), configured here or not."""
    return tuple(table for view in every_view_for_its_tables() for table in view.tables)
