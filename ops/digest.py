"""The digester (integrity/digests/digester.py), run by ``ssot digest`` (its own process)
or on a thread of ``ssot serve`` (``SSOT_DIGESTS``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from .console import EXIT_USAGE, fail, not_configured
from .loop_thread import LoopThread

if TYPE_CHECKING:  # imported when used: `ssot` starts fast for every other command
    from nexus_ssot.integrity.digests import Digester
    from nexus_ssot.ledger.settings import Settings

log = logging.getLogger("nexus_ssot.digest")


def digester_for(settings: Settings, *, publish: bool = True) -> Digester:
    """The digester of ``settings``; it publishes on NATS when ``publish``."""
    from nexus_ssot.integrity.digests import Digester, Signer, SigningKeyError

    if not settings.database_url or (publish and not settings.nats_url):
        not_configured("SSOT_DATABASE_URL", "SSOT_NATS_URL")
    signer = None
    if settings.signing_key_file is not None:
        try:
            signer = Signer.from_file(settings.signing_key_file)
        except SigningKeyError as e:
            fail(EXIT_USAGE, "invalid_setting", str(e))
    return Digester(settings.database_url, settings.nats_url, stream=settings.nats_stream,
                    prefix=settings.nats_subject_prefix,
                    every_events=settings.digest_every_events,
                    every_seconds=settings.digest_every_seconds, signer=signer,
                    publish=publish, duplicate_window=settings.nats_duplicate_window,
                    replicas=settings.nats_replicas,
                    gather=settings.followers_gather_seconds)


class DigesterThread(LoopThread):
    """The digester on a thread of its own, with its own event loop (``ssot serve`` runs it
    on its followers' thread, ops/followers.py)."""

    def __init__(self, settings: Settings, *, publish: bool) -> None:
        self.digester = digester_for(settings, publish=publish)
        super().__init__("ssot-digester", self.digester.run)


@click.command()
def digest() -> None:
    """Record signed digests of the log (Merkle roots) at the configured cadence and
    publish them on NATS JetStream (one leader per database for each)."""
    from nexus_ssot.ledger.migrate import migrate

    from .database import operator_settings
    from .signals import run_until_signalled

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = operator_settings(needs_nats=True)
    digester = digester_for(settings)
    assert settings.database_url
    migrate(settings.database_url)
    log.info("digests every %d events or %gs, %s; published on stream %s, subject %s",
             settings.digest_every_events, settings.digest_every_seconds,
             f"signed by key {digester.signer.key_id}" if digester.signer else "unsigned",
             digester.stream, digester.subject)
    run_until_signalled(digester.run)
