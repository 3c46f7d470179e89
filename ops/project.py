"""The asynchronous views' runners, run by `ssot project` (its own process) or on a thread
of `ssot serve`. One event loop runs one runner per view; each view has one active runner
per database (advisory lock), the others stand by."""

from __future__ import annotations

import asyncio
import logging

import click

from nexus_ssot.ledger.following import Following
from nexus_ssot.ledger.migrate import migrate
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.projections.runtime import ViewRunner
from nexus_ssot.projections.views import SERVICE_VIEWS, SQL_VIEWS, VIEW_NAMES, NotConfigured

from .console import EXIT_UNAVAILABLE, fail, not_configured
from .loop_thread import LoopThread
from .signals import run_until_signalled

log = logging.getLogger("nexus_ssot.project")


def runners_for(settings: Settings, names: list[str] | None = None) -> list[ViewRunner]:
    """Runners of the views named (default: every view whose services are configured)."""
    if not settings.database_url:
        not_configured("SSOT_DATABASE_URL")
    unknown = sorted(set(names or ()) - set(VIEW_NAMES))
    if unknown:
        raise click.BadParameter(f"unknown view {unknown[0]!r}; the views are "
                                 f"{', '.join(sorted(VIEW_NAMES))}", param_hint="'--view'")
    views = [make() for name, make in SQL_VIEWS.items() if not names or name in names]
    for name, make_with in SERVICE_VIEWS.items():
        if names and name not in names:
            continue
        try:
            views.append(make_with(settings))
        except NotConfigured as e:
            if names:  # asked for by name: say why it cannot run
                fail(EXIT_UNAVAILABLE, "not_configured", str(e))
            log.info("not running: %s", e)
    return [ViewRunner(settings.database_url, view, gather=settings.followers_gather_seconds)
            for view in views]


async def run_all(runners: list[ViewRunner], stop: asyncio.Event,
                  following: Following | None = None) -> None:
    """Run ``runners`` until ``stop``, on ``following`` (or on one of their own: one log
    tail and one lease connection for all of them)."""
    assert runners
    if following is None:
        following = Following(runners[0].database_url, gather=runners[0].gather)
        await asyncio.gather(following.run(stop), run_all(runners, stop, following))
        return
    try:
        await asyncio.gather(*(r.run(stop, following) for r in runners))
    finally:  # views holding outside connections (the KV mirror) close them on this loop
        for runner in runners:
            close = getattr(runner.view, "close", None)
            if close is not None:
                await close()


def run_projections(settings: Settings, names: list[str] | None = None) -> None:
    """Run until SIGTERM/SIGINT."""
    runners = runners_for(settings, names)
    assert settings.database_url
    migrate(settings.database_url)

    run_until_signalled(lambda stop: run_all(runners, stop))


class ProjectionsThread(LoopThread):
    """The views' runners on a thread of their own, with their own event loop (``ssot serve``
    runs them on its followers' thread, ops/followers.py)."""

    def __init__(self, settings: Settings, names: list[str] | None = None) -> None:
        self.runners = runners_for(settings, names)
        super().__init__("ssot-projections", lambda stop: run_all(self.runners, stop))
