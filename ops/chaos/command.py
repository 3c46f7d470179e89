"""The ``ssot chaos`` command: a run (``runner``), or ``ssot chaos check DIR`` to check a
saved run folder again.

Exit codes: 0 no anomaly, 1 anomalies (listed by kind with examples), 2 the harness
itself failed (a server would not start, …).
"""

from __future__ import annotations

import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from .nemesis import CLUSTER_KINDS, KINDS
from .runner import EXIT_ANOMALY, EXIT_HARNESS, run


@click.group(invoke_without_command=True)
@click.option("--duration", type=click.FloatRange(5, 7 * 86_400), default=60.0,
              show_default=True, help="Seconds the clients run (faults included).")
@click.option("--clients", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Concurrent HTTP clients.")
@click.option("--think", type=click.FloatRange(0, 10), default=0.01, show_default=True,
              help="Most seconds a client waits between two of its operations (drawn "
              "uniformly): larger, a gentler load on a shared machine.")
@click.option("--seed", type=int, help="Seed of the clients' mix and the fault schedule "
              "(default: random, printed).")
@click.option("--keys", type=click.IntRange(1, 10_000), default=24, show_default=True,
              help="Keys per namespace (fewer: more conflicts).")
@click.option("--no-faults", is_flag=True, help="Run without the nemesis.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (default .ssot/chaos/<time>-<seed>).")
@click.option("--keep-data", is_flag=True, help="Keep the embedded servers' data.")
@click.option("--topology", type=click.Choice(["single", "cluster"]), default="single",
              show_default=True, help="One of each server, or the cluster of docs/cluster.md "
              "(two API nodes, follower standbys, PostgreSQL with a synchronous standby and a "
              "read replica, three NATS nodes) and its faults.")
@click.option("--fault", "only", multiple=True, type=click.Choice(sorted({*KINDS,
              *CLUSTER_KINDS})), help="Only this kind of fault (repeatable; default: every "
              "kind the topology takes).")
@click.pass_context
def chaos(ctx: click.Context, duration: float, clients: int, think: float, seed: int | None,
          keys: int,
          no_faults: bool, folder: Path | None, keep_data: bool, topology: str,
          only: tuple[str, ...]) -> None:
    """Run the correctness harness: own PostgreSQL, NATS, API and broadcaster; concurrent
    clients and subscribers; a seeded schedule of faults (SIGKILL and restart of the API,
    the writer and the broadcaster, NATS stopped or killed, PostgreSQL fast and immediate
    restarts, pauses, slow clients); clients with several identities, some trying what
    theirs may not; then prove that nothing acknowledged was lost or duplicated, nothing
    rejected landed, no update was lost, every read saw a real state, every subscriber
    saw every event once, in order, every event was its actor's to make and every
    refusal is in the access log. With --topology cluster: the same against the cluster
    and its faults (an API node killed, the leading followers killed, the NATS stream's
    leader killed, the PostgreSQL primary lost and its synchronous standby promoted).

    Exit code 0 no anomaly, 1 anomalies, 2 the harness failed. 'ssot chaos check DIR'
    checks a saved run again."""
    if ctx.invoked_subcommand is not None:
        return
    takes = CLUSTER_KINDS if topology == "cluster" else KINDS
    if set(only) - set(takes):
        raise click.BadParameter(f"the {topology} topology takes the faults "
                                 f"{', '.join(takes)}", param_hint="--fault")
    if seed is None:
        seed = secrets.randbelow(1_000_000)
    folder = folder or Path(".ssot") / "chaos" / f"{time.strftime('%Y%m%dT%H%M%S')}-{seed}"
    click.echo(f"chaos: seed {seed} (reproduce with --seed {seed})", err=True)
    signal.signal(signal.SIGTERM, _interrupted)  # stop what was started, as on Ctrl-C
    sys.exit(run(folder, seed, duration, clients, keys, not no_faults, keep_data, topology,
                 only, think=think))


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@chaos.command("check")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_command(folder: Path, as_json: bool) -> None:
    """Check a saved run folder again (history, log, subscribers, server checks)."""
    from .checker import check_run, summary

    try:
        report = check_run(folder)
    except (OSError, ValueError, KeyError) as e:
        click.echo(f"chaos check: {folder} is not a complete run folder: {e}", err=True)
        sys.exit(EXIT_HARNESS)
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(summary(report))
    sys.exit(0 if report["ok"] else EXIT_ANOMALY)
