"""``ssot check``: recompute every view from the log and compare it with the stored one
(projections/consistency.py). Talks to PostgreSQL directly (SSOT_DATABASE_URL, or the
servers of the ``ssot serve`` running on the data dir: ops/database.py).

Exit codes: 0 every view equals the log, 1 drift, 5 the database is unreachable (or not
configured), 2 usage (an unknown view, an invalid namespace).
"""

from __future__ import annotations

import sys

import click

from .console import EXIT_UNAVAILABLE, fail, print_json
from .database import operator_settings

EXIT_DRIFT = 1


@click.command()
@click.option("--view", "views", multiple=True, metavar="NAME",
              help="Only this view (repeatable; default: every view).")
@click.option("--namespace", "namespaces", multiple=True, metavar="NS",
              help="Compare only this namespace's rows (repeatable; default: all).")
@click.option("--examples", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Rows named per drifting table and namespace.")
@click.option("--jobs", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Views checked at a time (database connections, sharing the snapshot).")
@click.option("--external", is_flag=True,
              help="Also compare views' outside copies (the KV buckets) with the stored "
              "state; they are live, so run it at rest.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def check(ctx: click.Context, views: tuple[str, ...], namespaces: tuple[str, ...],
          examples: int, jobs: int, external: bool, as_json: bool) -> None:
    """Recompute the views from the log and compare them with the stored ones, per
    namespace (row count and hash), naming every drifting row's key.

    One snapshot: inline views are compared up to the log's head, asynchronous views up to
    their tracked position. Runs online; it takes no lock a writer waits for and writes
    nothing. Exit code 0 consistent, 1 drift, 5 database unreachable."""
    import asyncio

    import psycopg

    from nexus_ssot.ledger.errors import InvalidInput
    from nexus_ssot.ledger.redaction import redact_url
    from nexus_ssot.projections.consistency import check as run
    from nexus_ssot.projections.consistency import check_namespaces, describe, view_names

    unknown = [v for v in views if v not in view_names()]
    if unknown:
        raise click.BadParameter(f"unknown view {unknown[0]!r}; the views are "
                                 f"{', '.join(view_names())}", param_hint="--view")
    try:
        check_namespaces(namespaces)
    except InvalidInput as e:
        raise click.BadParameter(e.message, param_hint="--namespace") from None
    settings = operator_settings()
    try:
        report = asyncio.run(run(str(settings.database_url), list(views) or None,
                                 settings=settings, namespaces=namespaces or None,
                                 examples=examples, external=external, jobs=jobs))
    except psycopg.OperationalError as e:
        fail(EXIT_UNAVAILABLE, "unreachable", f"the database: {redact_url(str(e).strip())}")
    if as_json or (ctx.obj or {}).get("json"):
        print_json(report.as_dict())
    else:
        for v in report.views:
            if v.skipped:
                click.echo(f"{v.view}: not checked: {v.skipped}")
                continue
            rows = sum(n.stored_rows for n in v.namespaces)
            compared = len({n.namespace for n in v.namespaces})
            state = "consistent" if v.consistent else "DRIFT"
            click.echo(f"{v.view}: {'inline, ' if v.inline else ''}position {v.position},"
                       f" {compared} namespaces, {rows} rows: {state}"
                       f" ({v.seconds:.1f} s)")
        for line in describe(report):
            click.echo(line)
        drifting = [v.view for v in report.views if not v.consistent]
        click.echo(f"NOT consistent: {', '.join(drifting)} drift" if drifting else
                   f"consistent: the views equal the log (head {report.head},"
                   f" {report.seconds:.1f} s)")
    sys.exit(0 if report.consistent else EXIT_DRIFT)
