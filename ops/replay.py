"""``ssot replay``: rebuild views from the log (into shadow tables, swapped in atomically,
resumable), copy them as of a past position or time into a schema of their own, and show
where each view stands. Talks to PostgreSQL directly (``SSOT_DATABASE_URL``, or the
servers of the ``ssot serve`` running on the data dir: ``ops/database.py``).

The machinery is ``projections/rebuild.py``; this is its command line: options, a
progress bar, Ctrl-C (stops after the current batch, the rebuild resumes next time) and
the exit codes (0 done, 1 error, 2 bad option, 5 no database, 130 interrupted).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import Any

import click

from .console import EXIT_INTERRUPTED, EXIT_OTHER, fail, out, print_json
from .database import chosen_views, close_views, database_url, operator_settings
from .options import moment


class Until(click.ParamType[int | datetime, Any]):
    """A global position (0, 1, 2, …) or an RFC 3339 time with its UTC offset."""

    name = "POSITION|TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int | datetime:
        if isinstance(value, int | datetime):
            return value
        text = str(value).strip()
        if text.isdigit():
            return int(text)
        try:
            return moment(text)
        except ValueError as e:
            self.fail(f"{e}, nor a position (0, 1, 2, …)", param, ctx)


@click.group()
def replay() -> None:
    """Rebuild views from the log, copy them as of a past point, show where they stand."""


@replay.command()
@click.option("--view", "names", multiple=True, metavar="NAME",
              help="Only this view (repeatable; default: every view).")
@click.option("--until", type=Until(),
              help="With --into: the copy is the views as of this position or time.")
@click.option("--into", "schema", metavar="SCHEMA",
              help="Fold into this schema (a point-in-time copy) instead of rebuilding.")
@click.option("--replace", is_flag=True, help="With --into: replace an earlier copy there.")
@click.option("--restart", is_flag=True,
              help="Drop an interrupted rebuild's shadow tables and start from position 0.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Events per transaction (default 250,000).")
@click.option("--lock-wait", type=click.FloatRange(min=0.001, max=3600), default=None,
              metavar="SECONDS",
              help="How long each swap attempt waits for the live tables before letting go "
                   "and trying again (default 0.5; 20 attempts).")
@click.pass_context
def views(ctx: click.Context, names: tuple[str, ...], until: int | datetime | None,
          schema: str | None, replace: bool, restart: bool, batch: int | None,
          lock_wait: float | None) -> None:
    """Rebuild views from the log into shadow tables, catch up with live traffic and swap
    them in atomically (readers never see an empty or partial view). Interrupted (Ctrl-C,
    a crash), the same command resumes where it stopped.

    With --into SCHEMA (and --until): materialise the views as of a past position or
    time into that schema, for forensic queries; the live views are not touched."""
    from nexus_ssot.ledger.migrate import migrate
    from nexus_ssot.projections import rebuild

    if schema is None:
        for given, option in ((until, "--until"), (replace or None, "--replace")):
            if given is not None:
                raise click.BadParameter("needs --into SCHEMA (a rebuild runs to the head)",
                                         param_hint=f"'{option}'")
    else:
        for refused, option in ((restart or None, "--restart"), (lock_wait, "--lock-wait")):
            if refused is not None:
                raise click.BadParameter("is for rebuilds, not --into copies",
                                         param_hint=f"'{option}'")
    settings = operator_settings()
    chosen = chosen_views(names, settings)
    url = str(settings.database_url)
    as_json = bool(ctx.obj and ctx.obj.get("json"))
    size = batch or rebuild.DEFAULT_BATCH
    migrate(url)
    try:
        if schema is not None:
            _copy(url, chosen, until, schema, replace, size, as_json)
        else:
            _rebuild(url, chosen, restart, size, as_json,
                     rebuild.TABLES_LOCK_WAIT if lock_wait is None else lock_wait)
    except rebuild.TargetRefused as e:
        raise click.BadParameter(str(e), param_hint=f"'{e.field}'") from None
    except (rebuild.RebuildBusy, rebuild.SwapFailed) as e:
        fail(EXIT_OTHER, "replay_failed", str(e))


def _progress_bar() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description:<16}"), BarColumn(),
                    TextColumn("{task.fields[events]:>23} events"),
                    TextColumn("{task.fields[rate]:>9,.0f} events/s"),
                    TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, disable=not console.is_terminal)


def _rebuild(url: str, chosen: list[Any], restart: bool, batch: int, as_json: bool,
             lock_wait: float) -> None:
    from nexus_ssot.projections.rebuild import Progress, Rebuilt, rebuild

    from .signals import run_until_signalled

    done: list[Rebuilt] = []

    async def each(stop: asyncio.Event) -> None:
        with _progress_bar() as bar:
            for view in chosen:
                task = bar.add_task(view.name, total=None, rate=0.0, events="")

                def show(p: Progress, task: Any = task) -> None:
                    bar.update(task, completed=p.done, total=p.total, rate=p.rate,
                               events=f"{p.done:,}/{p.total:,}")

                result = await rebuild(url, view, batch=batch, restart=restart,
                                       progress=show, stop=stop, lock_wait=lock_wait)
                done.append(result)
                if not result.complete:
                    return
                show(Progress(view.name, result.events, result.events, result.rate,
                              result.position))

    async def work(stop: asyncio.Event) -> None:
        try:
            await each(stop)
        finally:
            await close_views(chosen)

    run_until_signalled(work)
    if as_json:
        print_json([{**r.__dict__, "rate": round(r.rate)} for r in done])
    for r in done:
        start = (f"resumed at position {r.resumed_from}" if r.resumed_from
                 else "from position 0")
        if not r.complete:
            click.echo(f"{r.view}: interrupted at position {r.position} ({start},"
                       f" {r.events:,} events this run); run `ssot replay views --view"
                       f" {r.view}` to resume (--restart starts over)", err=True)
            sys.exit(EXIT_INTERRUPTED)
        if not as_json:
            click.echo(f"{r.view}: rebuilt {start} to {r.position}: {r.events:,} events in"
                       f" {r.seconds:.1f}s ({r.rate:,.0f} events/s); swapped in, tables"
                       f" locked {r.swap_seconds * 1000:.0f} ms")
            if r.reconciled is not None:
                click.echo(f"{r.view}: side effects reconciled: {_summary(r.reconciled)}")
        if r.reconcile_error is not None:
            click.echo(f"error: reconcile_failed: {r.view} is swapped in, but reconciling"
                       f" its side effects failed ({r.reconcile_error}); the view's own"
                       " reconcile or check repairs them", err=True)
            sys.exit(1)


def _summary(report: Any) -> str:
    """A reconcile report's counts on one line."""
    if not isinstance(report, dict):
        return str(report)
    return ", ".join(f"{k} {v}" for k, v in report.items()
                     if isinstance(v, int | float | bool) and not isinstance(v, bool)) or "ok"


def _copy(url: str, chosen: list[Any], until: int | datetime | None, schema: str,
          replace: bool, batch: int, as_json: bool) -> None:
    from nexus_ssot.projections.rebuild import Copied, Progress, copy_views, position_of

    from .signals import run_until_signalled

    made: list[Copied | None] = []

    async def work(stop: asyncio.Event) -> None:
        try:
            position = await position_of(url, until)
            with _progress_bar() as bar:
                task = bar.add_task(f"copy to {schema}", total=None, rate=0.0, events="")

                def show(p: Progress) -> None:
                    bar.update(task, description=p.view, completed=p.done, total=p.total,
                               rate=p.rate, events=f"{p.done:,}/{p.total:,}")

                made.append(await copy_views(url, chosen, until=position, schema=schema,
                                             replace=replace, batch=batch, progress=show,
                                             stop=stop))
        finally:
            await close_views(chosen)

    run_until_signalled(work)
    [copied] = made
    if copied is None:
        click.echo(f"interrupted; nothing was written to schema {schema}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if as_json:
        print_json({**copied.__dict__, "views": list(copied.views)})
        return
    click.echo(f"copied {', '.join(copied.views)} as of position {copied.position} into"
               f" schema {schema}: {copied.events:,} events in {copied.seconds:.1f}s")


@replay.command()
@click.option("--view", "names", multiple=True, metavar="NAME",
              help="Only this view (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def status(ctx: click.Context, names: tuple[str, ...], as_json: bool) -> None:
    """Each view's position, lag (events, and seconds since the oldest event it has not
    applied) and state: current, behind, rebuilding (an interrupted or running rebuild)
    or never run."""
    from rich.table import Table

    from nexus_ssot.projections.rebuild import registry, status

    known = registry()
    for name in names:
        if name not in known:
            raise click.BadParameter(f"unknown view {name!r}; the views are "
                                     f"{', '.join(known)}", param_hint="'--view'")
    url = database_url()
    found = asyncio.run(status(url, list(names) or None))
    if as_json or (ctx.obj and ctx.obj.get("json")):
        print_json([s.__dict__ for s in found])
        return
    table = Table("VIEW", "KIND", "POSITION", "LAG EVENTS", "LAG SECONDS", "STATE",
                  "REBUILD AT", box=None)
    for s in found:
        table.add_row(s.view, s.kind, "-" if s.position is None else str(s.position),
                      str(s.lag_events), f"{s.lag_seconds:.3f}", s.state,
                      "-" if s.rebuild_position is None else str(s.rebuild_position))
    out.print(table)
