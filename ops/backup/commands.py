"""``ssot export`` and ``ssot import``: verified logical backups of the log (the format and
the checks are in the modules beside this one). Talk to PostgreSQL directly
(``SSOT_DATABASE_URL``, or the servers of the ``ssot serve`` running on the data dir:
``ops/database.py``). Exit codes: 0 done, 1 refused or failed (one line on stderr naming
the file's bad line and the reason), 2 bad option, 5 no database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from ..console import EXIT_OTHER, fail, print_json
from ..database import chosen_views, close_views, database_url, operator_settings


def _bar(label: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(TextColumn(label), BarColumn(),
                    TextColumn("{task.completed:>12,.0f} events"),
                    TextColumn("{task.fields[rate]:>9,.0f} events/s"),
                    TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, disable=not console.is_terminal)


def _progress(bar: Any, task: Any) -> Any:
    import time

    started = time.monotonic()

    def show(done: int, total: int) -> None:
        elapsed = time.monotonic() - started
        bar.update(task, completed=done, total=total,
                   rate=done / elapsed if elapsed > 0 else 0.0)

    return show


@click.command("export")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The file to write (gzip-compressed NDJSON; written whole or not at all).")
@click.option("--since-position", type=click.IntRange(min=0),
              help="Only the events after this global position (an incremental export).")
@click.option("--after", type=click.Path(exists=True, dir_okay=False),
              help="Continue the export FILE ended with (an incremental export chained "
                   "onto it).")
@click.option("--level", type=click.IntRange(1, 9), default=3, show_default=True,
              help="gzip compression level.")
@click.pass_context
def export(ctx: click.Context, out: str, since_position: int | None, after: str | None,
           level: int) -> None:
    """Export the log (events with their hash chain, Merkle leaves, digests and
    idempotency keys) and the access log to a verifiable file, from one snapshot, in
    constant memory."""
    from . import exporter
    from .format import BackupError

    if since_position is not None and after is not None:
        raise click.BadParameter("give --since-position or --after, not both",
                                 param_hint="'--after'")
    url = database_url()
    try:
        with _bar("export") as bar:
            task = bar.add_task("export", total=None, rate=0.0)
            done = exporter.export(url, out, since=since_position, after=after,
                                   level=level, progress=_progress(bar, task))
    except BackupError as e:
        _record_export(url, False, {"error": str(e)})
        fail(EXIT_OTHER, "export_failed", str(e))
    _record_export(url, True, {"events": done.events, "last_position": done.last_position,
                               "path": done.path})
    if ctx.obj and ctx.obj.get("json"):
        print_json({**done.__dict__, "rate": round(done.rate)})
        return
    click.echo(f"exported {done.events:,} events (positions {done.since_position}.."
               f"{done.last_position}), {done.digests} digests, {done.idempotency} "
               f"idempotency keys, {done.access} access records to {done.path} "
               f"({done.bytes:,} bytes) in {done.seconds:.1f}s ({done.rate:,.0f} "
               f"events/s); final hash {done.final_hash}")


def _record_export(url: str, ok: bool, detail: dict[str, Any]) -> None:
    """The export's outcome, for ssot status and GET /metrics (its age is the backup's)."""
    from nexus_ssot.ledger.operation_runs import try_record_run
    from nexus_ssot.ledger.redaction import redact_url

    unrecorded = try_record_run(url, "export", ok, detail)
    if unrecorded is not None:
        click.echo(f"note: {redact_url(unrecorded)}", err=True)


@click.command("import")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--no-views", is_flag=True,
              help="Do not rebuild the asynchronous views (`ssot replay views` later).")
@click.pass_context
def import_(ctx: click.Context, files: tuple[str, ...], no_views: bool) -> None:
    """Verify and import exports in order: a full one into an empty database, then the
    incremental ones that continue it. Each file is one transaction: the first bad line
    refuses the file and nothing of it is written. Then the views are rebuilt."""
    from nexus_ssot.projections.rebuild import is_inline

    from .format import BackupError, BadFile
    from .importer import Imported, import_files

    settings = operator_settings()
    url = str(settings.database_url)
    views = [] if no_views else [v for v in chosen_views((), settings) if not is_inline(v)]

    async def run() -> list[Imported]:
        try:
            with _bar("import") as bar:
                task = bar.add_task("import", total=None, rate=0.0)
                result: list[Imported] = await import_files(
                    url, files, views=views, progress=_progress(bar, task))
                return result
        finally:
            await close_views(views)

    try:
        done = asyncio.run(run())
    except BadFile as e:
        fail(EXIT_OTHER, "bad_export", f"{_current(files, e)}: {e}; nothing was imported "
                                       "from it")
    except BackupError as e:
        fail(EXIT_OTHER, "import_refused", str(e))
    if ctx.obj and ctx.obj.get("json"):
        print_json([{**d.__dict__, "rate": round(d.rate)} for d in done])
        return
    for d in done:
        click.echo(f"{Path(d.path).name}: imported {d.events:,} events (positions "
                   f"{d.since_position}..{d.last_position}), {d.digests} digests, "
                   f"{d.idempotency} idempotency keys, {d.access} access records in "
                   f"{d.seconds:.1f}s "
                   f"({d.rate:,.0f} events/s); chain verified"
                   + (f" ({d.unchained} unchained events)" if d.unchained else ""))
    if done and views:
        click.echo(f"views rebuilt: {', '.join(v.name for v in views)} "
                   f"({done[-1].views_seconds:.1f}s)")


def _current(files: tuple[str, ...], error: Exception) -> str:
    """The file an error came from (import_files names it on the exception)."""
    return str(getattr(error, "path", None) or (files[0] if len(files) == 1 else "export"))
