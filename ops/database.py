"""What the commands that talk to PostgreSQL (and NATS) directly, not through the API,
share: their settings (``SSOT_DATABASE_URL``, ``SSOT_NATS_URL``, or else the servers of the
``ssot serve`` running on the data dir), and the views named on their command line, built
from the settings as the runners build them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .console import EXIT_UNAVAILABLE, fail

if TYPE_CHECKING:  # imported when used: `ssot` starts fast for every other command
    from nexus_ssot.ledger.settings import Settings


def operator_settings(*, needs_nats: bool = False) -> Settings:
    """The settings of a command that talks to the servers directly. When neither URL is
    set, the database and NATS of the ``ssot serve`` running on the data dir, as its record
    says (``ops/instance.py``; one line on stderr says so). Exits 5 (``not_configured``,
    ``not_running``) when there is no database, or no NATS and ``needs_nats``."""
    from nexus_ssot.ledger.errors import Unavailable
    from nexus_ssot.ledger.settings import Settings

    from .instance import RECORD_NAME, find

    settings = Settings()
    if not settings.database_url and not settings.nats_url:
        try:
            running = find(settings.data_dir)
        except Unavailable as e:
            fail(EXIT_UNAVAILABLE, e.code, e.message)
        if running is not None:
            click.echo(f"using the database and NATS of {running.describe()}, recorded in "
                       f"{running.record}", err=True)
            return settings.model_copy(update={"database_url": running.database_url,
                                               "nats_url": running.nats_url})
    missing = [name for name, needed, value in (
        ("SSOT_DATABASE_URL", True, settings.database_url),
        ("SSOT_NATS_URL", needs_nats, settings.nats_url)) if needed and not value]
    if missing:
        where = settings.data_dir / RECORD_NAME
        fail(EXIT_UNAVAILABLE, "not_configured", f"set {' and '.join(missing)}" + (
            "" if settings.database_url or settings.nats_url else
            f", or start ssot serve with embedded servers on the data dir {settings.data_dir}"
            f" (it records them in {where})"))
    return settings


def database_url() -> str:
    """The database of ``operator_settings``."""
    return str(operator_settings().database_url)


def chosen_views(names: tuple[str, ...], settings: Settings) -> list[Any]:
    """The views named (default: every view whose outside service is configured in
    ``settings``), built from the settings as the runners build them."""
    from nexus_ssot.projections.rebuild import not_configured, registry

    known = registry()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown view {unknown[0]!r}; the views are "
                                 f"{', '.join(known)}", param_hint="'--view'")
    made = []
    for name, make in known.items():
        if names and name not in names:
            continue
        try:
            made.append(make(settings))
        except not_configured() as e:
            if names:  # asked for by name: say why it cannot be
                fail(EXIT_UNAVAILABLE, "not_configured", str(e))
            click.echo(f"{name}: skipped: {e}", err=True)
    return made


async def close_views(views: list[Any]) -> None:
    """Close what views hold outside PostgreSQL (a NATS connection), on their loop."""
    for view in views:
        close = getattr(view, "close", None)
        if close is not None:
            await close()
