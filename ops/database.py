"""What the commands that talk to PostgreSQL directly (not through the API) share: the
database of the settings (``SSOT_DATABASE_URL``), and the views named on their command
line, built from the settings as the runners build them."""

from __future__ import annotations

from typing import Any

import click

from .console import EXIT_OTHER, fail


def database_url() -> str:
    """The configured database's URL; exits with a one-line error when there is none."""
    from nexus_ssot.ledger.settings import Settings

    url = Settings().database_url
    if not url:
        fail(EXIT_OTHER, "not_configured", "set SSOT_DATABASE_URL")
    return str(url)


def chosen_views(names: tuple[str, ...]) -> list[Any]:
    """The views named (default: every view whose outside service is configured here),
    built from the settings as the runners build them."""
    from nexus_ssot.ledger.settings import Settings
    from nexus_ssot.projections.rebuild import not_configured, registry

    known = registry()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown view {unknown[0]!r}; the views are "
                                 f"{', '.join(known)}", param_hint="'--view'")
    settings = Settings()
    made = []
    for name, make in known.items():
        if names and name not in names:
            continue
        try:
            made.append(make(settings))
        except not_configured() as e:
            if names:  # asked for by name: say why it cannot be
                raise click.BadParameter(str(e), param_hint="'--view'") from None
            click.echo(f"{name}: skipped: {e}", err=True)
    return made


async def close_views(views: list[Any]) -> None:
    """Close what views hold outside PostgreSQL (a NATS connection), on their loop."""
    for view in views:
        close = getattr(view, "close", None)
        if close is not None:
            await close()
