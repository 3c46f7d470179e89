"""``ssot verify``: recompute every event's hash, every stream's chain, every digest and
the access log's chain from the database and report the first problem in log order
(``integrity/verify/``).
Talks to PostgreSQL directly (``SSOT_DATABASE_URL``, or the servers of the ``ssot serve``
running on the data dir: ``ops/database.py``).

Exit codes: 0 the log verifies, 1 a problem was found, 2 bad option or input (the message
names it), 5 the database is unreachable or not configured, 130 interrupted (resume with
the same ``--checkpoint``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .console import EXIT_INTERRUPTED, EXIT_UNAVAILABLE, fail, print_json
from .database import operator_settings

if TYPE_CHECKING:  # imported when used: `ssot` starts fast for every other command
    from nexus_ssot.integrity.verify import Report

EXIT_PROBLEM = 1
#: The problems listed after the first, unless ``--problems`` says otherwise.
PROBLEMS_SHOWN = 20


def _bar() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(TextColumn("verify"), BarColumn(bar_width=24),
                    TextColumn("{task.fields[events]} events"),
                    TextColumn("{task.fields[rate]:,.0f}/s"),
                    TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, disable=not console.is_terminal)


@click.command()
@click.option("--namespace", metavar="NS",
              help="Check only this namespace's events and chains (the digests still cover "
                   "the whole log).")
@click.option("--from-position", type=click.IntRange(min=0),
              help="Start after this position (resume: each stream's previous event and "
                   "the Merkle tree there are read from the database).")
@click.option("--to-position", type=click.IntRange(min=0),
              help="Stop at this position (default: the log's head).")
@click.option("--digests", "digests_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The digests as published on NATS (NDJSON, one per line): each must "
                   "match its row, and the log its root.")
@click.option("--public-key", "key_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Ed25519 public key the digests are signed with (PEM, the JSON of GET "
                   "/v1/integrity/public-key, or hex; repeatable). Default: the public half "
                   "of SSOT_SIGNING_KEY_FILE.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Resume from this file if it exists; write it every --checkpoint-every "
                   "events and at the end (a later run continues from there).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=250_000,
              show_default=True, help="Events between checkpoints.")
@click.option("--problems", "shown", type=click.IntRange(1, 10_000), default=PROBLEMS_SHOWN,
              show_default=True, help="Problems listed after the first.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def verify(ctx: click.Context, namespace: str | None, from_position: int | None,
           to_position: int | None, digests_file: Path | None, key_files: tuple[Path, ...],
           checkpoint: Path | None, checkpoint_every: int, shown: int,
           as_json: bool) -> None:
    """Recompute every event's hash and every stream's hash chain, compare the log with
    its copies (history, current state) and its digests (Merkle roots, signatures, the
    digest chain, and the published copies given with --digests), check the access
    log's chain (when the run reaches the head), and report the FIRST problem in log
    order with its kind, position, entry and version.

    Reads one snapshot; writes the checkpoint file and the run's outcome (for ssot status
    and GET /metrics). Exit code 0 the log
    verifies, 1 a problem, 2 bad option or input, 5 database unreachable."""
    import psycopg

    from nexus_ssot.integrity.verify import (
        Options,
        load_public_key,
        public_keys,
        read_published_digests,
    )
    from nexus_ssot.integrity.verify import verify as run
    from nexus_ssot.ledger.addressing import check_namespace
    from nexus_ssot.ledger.errors import InvalidInput
    from nexus_ssot.ledger.namespace_settings import SETTINGS_NAMESPACE
    from nexus_ssot.ledger.operation_runs import try_record_run, verify_detail
    from nexus_ssot.ledger.redaction import redact_url

    def bad(e: InvalidInput) -> NoReturn:
        hint = {"digests": "--digests", "public_key": "--public-key",
                "checkpoint": "--checkpoint", "namespace": "--namespace",
                "from_position": "--from-position", "to_position": "--to-position"}
        raise click.BadParameter(e.message, param_hint=hint.get(e.field or "", e.field))

    if namespace is not None and namespace != SETTINGS_NAMESPACE:
        try:
            check_namespace(namespace)
        except InvalidInput as e:
            bad(e)
    if from_position is not None and to_position is not None and to_position < from_position:
        raise click.BadParameter(f"{to_position} is before --from-position {from_position}",
                                 param_hint="--to-position")
    settings = operator_settings()
    try:
        keys = [load_public_key(p) for p in key_files]
        if not keys and settings.signing_key_file is not None:
            keys = [load_public_key(settings.signing_key_file)]
        published = read_published_digests(digests_file) if digests_file else []
    except InvalidInput as e:
        bad(e)
    options = Options(namespace=namespace, from_position=from_position,
                      to_position=to_position, published=tuple(published),
                      keys=public_keys(keys), checkpoint=checkpoint,
                      checkpoint_every=checkpoint_every)
    started = time.monotonic()
    try:
        with _bar() as bar:
            task = bar.add_task("verify", total=None, rate=0.0, events="")

            def show(done: int, total: int, position: int) -> None:
                elapsed = time.monotonic() - started
                bar.update(task, completed=done, total=total,
                           rate=done / elapsed if elapsed > 0 else 0.0,
                           events=f"{done:,}/{total:,}")

            report = run(str(settings.database_url), options, progress=show)
    except InvalidInput as e:
        bad(e)
    except psycopg.OperationalError as e:
        fail(EXIT_UNAVAILABLE, "unreachable", f"the database: {redact_url(str(e).strip())}")
    except psycopg.errors.UndefinedTable as e:
        fail(EXIT_UNAVAILABLE, "not_a_ledger",
             f"the database has no ledger schema ({redact_url(str(e).strip())}); run ssot serve "
             "or ssot digest once to migrate it")
    except KeyboardInterrupt:
        where = (f"; resume with --checkpoint {checkpoint}" if checkpoint is not None
                 else "; give --checkpoint FILE to make a run resumable")
        click.echo(f"interrupted{where}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    unrecorded = try_record_run(str(settings.database_url), "verify", report.ok,
                                {**verify_detail(report), "namespace": namespace})
    if unrecorded is not None:
        click.echo(f"note: {redact_url(unrecorded)}", err=True)
    if as_json or (ctx.obj or {}).get("json"):
        print_json(report.as_dict(shown))
    else:
        _describe(report, shown)
    sys.exit(0 if report.ok else EXIT_PROBLEM)


def _describe(report: Report, shown: int) -> None:
    start = (f"resumed after position {report.resumed_from}" if report.resumed_from
             else f"positions {report.from_position}..")
    click.echo(f"verified {start}{report.to_position if report.resumed_from is None else ''}"
               f"{f' to {report.to_position}' if report.resumed_from else ''}: "
               f"{report.events:,} events, {report.streams:,} streams, "
               f"{report.digests_checked:,} digests, {report.signatures_checked:,} "
               f"signatures in {report.seconds:.1f} s ({report.rate:,.0f} events/s)"
               + (f"; {report.access_records:,} access log records"
                  if report.access_records is not None else ""))
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.first is None:
        click.echo("ok: no problem found")
        return
    click.echo(f"FIRST PROBLEM: {report.first.describe()}")
    rest = report.problems[1:shown + 1]
    if rest:
        more = report.problem_count - 1
        click.echo(f"{more} more problem{'s' if more != 1 else ''}"
                   f"{' (the first listed)' if more > len(rest) else ''}:")
        for problem in rest:
            click.echo(f"  {problem.describe()}")
