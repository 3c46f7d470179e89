"""The broadcaster, run by `ssot broadcast` (its own process) or on a thread of `ssot serve`."""

from __future__ import annotations

import asyncio
import logging
import threading

import uvloop

from nexus_ssot.ledger.broadcaster import Broadcaster
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ledger.telemetry import providers

from .signals import run_until_signalled

log = logging.getLogger("nexus_ssot.broadcast")


def broadcaster_for(settings: Settings) -> Broadcaster:
    """The broadcaster of ``settings``, its lag exported as OpenTelemetry metrics."""
    if not settings.database_url or not settings.nats_url:
        raise SystemExit("ssot broadcast needs SSOT_DATABASE_URL and SSOT_NATS_URL")
    broadcaster = Broadcaster(settings.database_url, settings.nats_url,
                              stream=settings.nats_stream, prefix=settings.nats_subject_prefix,
                              name=settings.broadcaster_name,
                              duplicate_window=settings.nats_duplicate_window)
    _, meter_provider = providers(settings)
    broadcaster.instrument(meter_provider.get_meter("nexus_ssot.broadcaster"))
    return broadcaster


def run_broadcaster(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT."""
    broadcaster = broadcaster_for(settings)
    assert settings.database_url
    migrate(settings.database_url)

    run_until_signalled(broadcaster.run)


class BroadcasterThread:
    """The broadcaster on a thread of ``ssot serve`` (its own event loop)."""

    def __init__(self, settings: Settings) -> None:
        self.broadcaster = broadcaster_for(settings)
        self.loop = uvloop.new_event_loop()
        self.stop_event = asyncio.Event()
        self.thread = threading.Thread(target=self._run, name="ssot-broadcaster", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.broadcaster.run(self.stop_event))

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)
