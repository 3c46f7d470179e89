"""The ``ssot`` commands that run the ledger's processes (serve, and the writer,
broadcaster and view runners it starts, or that run on their own) and check the
broadcaster's output against the log (reconcile). They talk to PostgreSQL and NATS
directly, configured by the ``SSOT_*`` settings (or, for all but serve and the writer it
starts, the servers of the ``ssot serve`` running on the data dir: ``ops/instance.py``);
what they run is imported when used, so ``ssot`` starts fast for every other command."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from .console import (
    EXIT_CODES,
    EXIT_OTHER,
    EXIT_PRECONDITION,
    EXIT_UNAVAILABLE,
    fail,
    out,
    print_json,
)
from .database import operator_settings
from .options import POSITION


@click.command()
@click.option("--host", help="Listen address (default SSOT_HTTP_HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Listen port (default SSOT_HTTP_PORT or 8080).")
@click.option("--trust-actor-header", is_flag=True,
              help="Take the actor from X-Actor (only behind a proxy that sets it).")
@click.option("--workers", type=click.IntRange(1, 64),
              help="HTTP worker processes (default SSOT_HTTP_WORKERS or 2).")
@click.option("--access-log", is_flag=True, help="Log every request.")
def serve(host: str | None, port: int | None, trust_actor_header: bool, workers: int | None,
          access_log: bool) -> None:
    """Run the API (starting embedded PostgreSQL and NATS when no URLs are configured).

    One serve per data dir: exit code 4 (already_serving) when another one runs there."""
    from nexus_ssot.ledger.errors import PreconditionFailed
    from nexus_ssot.ledger.settings import Settings

    from .children import ChildExited
    from .metrics_folder import with_metrics_folder

    update: dict[str, Any] = {}
    if host:
        update["http_host"] = host
    if port is not None:
        update["http_port"] = port
    if trust_actor_header:
        update["trust_actor_header"] = True
    if workers is not None:
        update["http_workers"] = workers
    settings = with_metrics_folder(Settings().model_copy(update=update))
    from .serve import FollowersStopped
    from .serve import serve as run  # after the metrics folder is set (prometheus-client)

    try:
        run(settings, access_log=access_log)
    except FollowersStopped as e:  # a bug: its traceback is in the log above
        fail(EXIT_OTHER, "followers_stopped", str(e))
    except PreconditionFailed as e:  # the data dir is another serve's: nothing was changed
        fail(EXIT_PRECONDITION, e.code, e.message)
    except ChildExited as e:  # its one line on stderr said why: exit as it did
        if e.returncode < 0:  # killed by a signal, it said nothing
            fail(EXIT_OTHER, "child_killed", f"{e} ({signal.Signals(-e.returncode).name}) "
                                             "before it was ready")
        sys.exit(e.returncode if e.returncode in EXIT_CODES else EXIT_OTHER)


@click.command("env")
@click.option("--unset", is_flag=True, help="Print the command that unsets them instead.")
@click.pass_context
def env(ctx: click.Context, unset: bool) -> None:
    """Print the shell commands that point other tools at the `ssot serve` running on the
    data dir (SSOT_DATA_DIR, default .ssot): `eval "$(ssot env)"` exports SSOT_DATABASE_URL
    and SSOT_NATS_URL (with their passwords: keep the output out of logs) and SSOT_URL.

    Exit code 0, or 5 when no serve with embedded servers runs on the data dir."""
    import shlex

    from nexus_ssot.ledger.errors import Unavailable
    from nexus_ssot.ledger.settings import Settings

    from .instance import RECORD_NAME, find

    names = ("SSOT_DATABASE_URL", "SSOT_NATS_URL", "SSOT_URL")
    if unset:
        click.echo(f"unset {' '.join(names)}")
        return
    data_dir = Settings().data_dir
    try:
        running = find(data_dir)
    except Unavailable as e:
        fail(EXIT_UNAVAILABLE, e.code, e.message)
    if running is None:
        fail(EXIT_UNAVAILABLE, "not_running",
             f"no ssot serve with embedded servers runs on the data dir {data_dir} (there is "
             f"no {data_dir / RECORD_NAME}): start one (make run), or set SSOT_DATA_DIR")
    if ctx.obj["json"]:
        print_json(running.as_dict())
        return
    click.echo(f"# {running.describe()} on the data dir {data_dir}, since {running.started_at}")
    for name, value in zip(names, (running.database_url, running.nats_url, running.url),
                           strict=True):
        click.echo(f"export {name}={shlex.quote(value)}")


@click.command()
@click.option("--socket", "socket_path", required=True, help="Unix socket to serve.")
def writer(socket_path: str) -> None:
    """Run the group-commit writer process (started by `ssot serve`)."""
    import logging

    from nexus_ssot.ledger.settings import Settings

    from .writer_process import run_writer

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_writer(Settings(), socket_path)


@click.command("http-worker", hidden=True)
@click.option("--fd", type=int, required=True, help="The listening socket, inherited.")
@click.option("--ready-fd", type=int, required=True,
              help="A pipe to write one byte to once serving.")
@click.option("--access-log", is_flag=True, help="Log every request.")
@click.option("--counts-fd", type=int, help="The workers' connection counts, inherited.")
@click.option("--slot", type=int, default=0, help="This worker's slot in them.")
def http_worker(fd: int, ready_fd: int, access_log: bool, counts_fd: int | None,
                slot: int) -> None:
    """Run one HTTP worker process (started by `ssot serve --workers N`)."""
    from .signals import note_interrupts

    early = note_interrupts()  # before the imports: they take seconds on a slow host
    import logging

    from nexus_ssot.ledger.settings import Settings

    from .http_workers import run_http_worker

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_http_worker(Settings(), fd, ready_fd, access_log=access_log, early=early,
                    counts_fd=counts_fd, slot=slot)


@click.command()
@click.option("--from-position", type=POSITION, default=0, show_default=True,
              help="Compare events after this position.")
@click.option("--to-position", type=POSITION, help="…up to this one (default: the head).")
@click.option("--repair", is_flag=True, help="Publish what the stream's tail is missing.")
@click.pass_context
def reconcile(ctx: click.Context, from_position: int, to_position: int | None,
              repair: bool) -> None:
    """Compare the NATS stream with the log (count and hash) and report what differs.

    Talks to PostgreSQL and NATS directly (SSOT_DATABASE_URL, SSOT_NATS_URL, or those of
    the running ssot serve of the data dir). Exit code 0 when the stream holds exactly the
    log's events in the range (after --repair), 1 if not, 5 with no database or NATS."""
    import asyncio

    from .reconcile import reconcile as run

    settings = operator_settings(needs_nats=True)
    report = asyncio.run(run(str(settings.database_url), str(settings.nats_url),
                             stream=settings.nats_stream, prefix=settings.nats_subject_prefix,
                             from_position=from_position, to_position=to_position,
                             repair=repair, progress=sys.stderr.isatty()))
    summary = {**report.__dict__, "gaps_inside": report.gaps_inside,
               "consistent": report.consistent}
    if ctx.obj["json"]:
        print_json(summary)
    else:
        out.print(f"positions {report.from_position}..{report.to_position}: "
                  f"log {report.log_count} events, stream {report.stream_count}")
        out.print(f"  log hash    {report.log_hash}")
        out.print(f"  stream hash {report.stream_hash}")
        for label, items in (("missing from the stream", report.missing),
                             ("republished", report.republished),
                             ("held twice", report.duplicated),
                             ("not in the log", report.foreign),
                             ("gaps inside the stream (recreate it to repair)",
                              report.gaps_inside)):
            if items:
                shown = ", ".join(map(str, items[:20])) + (" …" if len(items) > 20 else "")
                out.print(f"  {label}: {len(items)} ({shown})")
        out.print("consistent" if report.consistent else "NOT consistent")
    sys.exit(0 if report.consistent else 1)


@click.command()
@click.option("--view", "views", multiple=True, help="Only this view (repeatable).")
def project(views: tuple[str, ...]) -> None:
    """Keep the asynchronous views current, exactly once (one active runner per view and
    database; run several for standbys)."""
    import logging

    from .project import run_projections

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_projections(operator_settings(), list(views) or None)


@click.command()
def broadcast() -> None:
    """Publish every committed event on NATS JetStream, in order (one leader per database)."""
    import logging

    from .broadcast import run_broadcaster

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_broadcaster(operator_settings(needs_nats=True))
