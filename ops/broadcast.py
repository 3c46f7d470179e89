"""The broadcaster, run by `ssot broadcast` (its own process) or on the followers' thread
of `ssot serve` (ops/followers.py)."""

from __future__ import annotations

import logging

from nexus_ssot.ledger.broadcaster import Broadcaster
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ledger.telemetry import tracer_provider

from .console import not_configured
from .signals import run_until_signalled

log = logging.getLogger("nexus_ssot.broadcast")


def broadcaster_for(settings: Settings) -> Broadcaster:
    """The broadcaster of ``settings``, tracing its publishes as ``settings`` say."""
    if not settings.database_url or not settings.nats_url:
        not_configured("SSOT_DATABASE_URL", "SSOT_NATS_URL")
    broadcaster = Broadcaster(settings.database_url, settings.nats_url,
                              stream=settings.nats_stream, prefix=settings.nats_subject_prefix,
                              name=settings.broadcaster_name,
                              duplicate_window=settings.nats_duplicate_window,
                              replicas=settings.nats_replicas,
                              tracer_provider=tracer_provider(settings),
                              gather=settings.followers_gather_seconds)
    return broadcaster


def run_broadcaster(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT."""
    broadcaster = broadcaster_for(settings)
    assert settings.database_url
    migrate(settings.database_url)

    run_until_signalled(broadcaster.run)
