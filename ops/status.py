"""``ssot status``: the health of the whole ledger on one screen, each line green, amber or
red with the threshold that judged it: PostgreSQL, NATS (and the change stream), the HTTP
API and the writer behind it, the broadcaster's lag, each view's lag, the digests, the
last backup (``ssot export``), the last verify and the data quality of the namespaces with
a schema. What it reads of the log is what ``GET /metrics`` exports
(``projections/log_state.py``); the judging is pure (``judge``, ``schemas``) and tested on
its own.

Exit code 0 when nothing is red (amber is a warning), 1 when something is red, 5 when the
database is not configured."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import click

from .console import EXIT_OTHER, out, print_json
from .database import operator_settings

if TYPE_CHECKING:  # imported when used: `ssot` starts fast for every other command
    from nexus_ssot.ledger.settings import Settings
    from nexus_ssot.projections.log_state import Follower, LogState

GREEN, AMBER, RED = "green", "amber", "red"

#: A follower (the broadcaster, a view): amber from this many seconds behind, red from
#: the second figure (the change-delivery SLO is 50 ms; a few seconds is a stall).
LAG_AMBER, LAG_RED = 5.0, 60.0
#: The backup objective is an export every 15 minutes: amber past it, red past an hour.
BACKUP_AMBER, BACKUP_RED = 15 * 60.0, 60 * 60.0
#: A full verify is expected daily: amber after a day without a success, red after a week.
VERIFY_AMBER, VERIFY_RED = 25 * 3600.0, 7 * 86_400.0
#: How long each of PostgreSQL, NATS and the API may take to answer (``--timeout``).
TIMEOUT = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    value: str
    threshold: str


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def by_age(name: str, age: float, amber: float, red: float, what: str) -> Check:
    level = GREEN if age < amber else AMBER if age < red else RED
    return Check(name, level, f"{what} {_seconds(age)}",
                 f"amber >= {_seconds(amber)}, red >= {_seconds(red)}")


def follower(name: str, found: Follower | None, expected: bool) -> Check:
    if found is None:
        return Check(name, AMBER if expected else GREEN,
                     "never ran" if expected else "off", "runs under ssot serve")
    check = by_age(name, found.lag_seconds, LAG_AMBER, LAG_RED, "lag")
    return Check(name, check.level, f"{check.value}, {found.lag_events} events "
                 f"(at {found.position})", check.threshold)


def last_run(name: str, state: LogState, operation: str, amber: float, red: float,
             never: str) -> Check:
    run = state.runs.get(operation)
    if run is None:
        return Check(name, AMBER, f"never ({never})", f"amber >= {_seconds(amber)}, "
                     f"red >= {_seconds(red)} since the last success")
    if not run.ok:
        return Check(name, RED, f"last run failed {_seconds(_age(state.now, run.finished_at))}"
                     " ago", "red when the last run failed")
    assert run.last_ok_at is not None
    return by_age(name, _age(state.now, run.last_ok_at), amber, red, "succeeded, age")


def schemas(found: tuple[int, int, int, int] | None) -> Check:
    """The data quality of the namespaces with a schema (the schema_quality view)."""
    threshold = "amber when an entry violates its namespace's schema"
    if found is None:
        return Check("schemas", AMBER, "the quality view is not built yet", threshold)
    with_schema, violating, namespaces, refused = found
    if with_schema == 0:
        return Check("schemas", GREEN, "no namespace has a schema", threshold)
    return Check("schemas", AMBER if violating else GREEN,
                 f"{with_schema} namespaces with a schema, {violating} entries violate it in "
                 f"{namespaces}; {refused} writes refused in the last hour", threshold)


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


def run_views(settings: Settings) -> dict[str, bool]:
    """Each view's name, and whether ``ssot serve`` runs it with these settings (a view
    whose outside service is not configured is not run)."""
    from nexus_ssot.projections.views import SERVICE_VIEWS, SQL_VIEWS, NotConfigured

    runs = dict.fromkeys(SQL_VIEWS, settings.projections)
    for name, make in SERVICE_VIEWS.items():
        try:
            make(settings)
            runs[name] = settings.projections
        except NotConfigured:
            runs[name] = False
    return runs


def judge(state: LogState, settings: Settings) -> list[Check]:
    """What the log's state says, line by line (pure: no I/O)."""
    checks = [follower("broadcaster", state.broadcaster, settings.broadcast)]
    views = {v.name: v for v in state.views}
    checks += [follower(f"view {name}", views.get(name), expected)
               for name, expected in run_views(settings).items()]
    if not settings.digests:
        checks.append(Check("digests", GREEN, "off", "SSOT_DIGESTS=false"))
    else:
        # A digest comes after digest_every_seconds when there are new events: an event
        # waiting much longer means the digester is not running.
        every = settings.digest_every_seconds
        lag = by_age("digests", state.digest_lag_seconds, 2 * every + LAG_RED,
                     10 * every + 600, "oldest undigested event")
        age = ("no digest yet" if state.digest_age_seconds is None
               else f"latest {_seconds(state.digest_age_seconds)} ago")
        checks.append(Check("digests", lag.level, f"{age}; {lag.value}", lag.threshold))
    checks.append(last_run("last backup", state, "export", BACKUP_AMBER, BACKUP_RED,
                           "run ssot export on a schedule"))
    checks.append(last_run("last verify", state, "verify", VERIFY_AMBER, VERIFY_RED,
                           "run ssot verify on a schedule"))
    return checks


async def _postgres(url: str, settings: Settings, timeout: float) -> tuple[
        Check, LogState | None, Check | None]:
    import psycopg

    from nexus_ssot.ledger.redaction import redact_url
    from nexus_ssot.projections.log_state import read_log_state
    from nexus_ssot.projections.schema_quality import counts

    started = time.perf_counter()
    try:
        async with await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=max(2, round(timeout))) as conn:
            state = await read_log_state(conn, settings.broadcaster_name)
            quality = schemas(await counts(conn))
    except psycopg.errors.UndefinedTable:
        missing = Check("postgresql", RED, "up, but without the ledger's schema (or an "
                        "older one): ssot serve migrates it",
                        "red when unreachable or not migrated")
        return missing, None, None
    except psycopg.Error as e:
        first = redact_url(str(e).strip()).splitlines()[0][:200]
        return Check("postgresql", RED, f"unreachable: {first}",
                     "red when unreachable or not migrated"), None, None
    took = (time.perf_counter() - started) * 1000
    return Check("postgresql", GREEN, f"up, head {state.head} ({took:.0f} ms)",
                 "red when unreachable or not migrated"), state, quality


async def _nats(settings: Settings, timeout: float) -> Check:
    import nats
    from nats.js.errors import NotFoundError

    from nexus_ssot.ledger.redaction import redact_url

    if not settings.nats_url:
        return Check("nats", AMBER, "not configured", "SSOT_NATS_URL")
    try:
        nc = await nats.connect(settings.nats_url, connect_timeout=timeout,
                                allow_reconnect=False, max_reconnect_attempts=0)
    except (OSError, TimeoutError, nats.errors.Error) as e:
        return Check("nats", RED, f"unreachable: {redact_url(str(e))[:200]}",
                     "red when unreachable")
    try:
        info = await nc.jetstream().stream_info(settings.nats_stream)
        messages = info.state.messages
        return Check("nats", GREEN, f"up, stream {settings.nats_stream}: {messages} "
                     "messages", "red when unreachable; amber without the stream")
    except NotFoundError:
        return Check("nats", AMBER, f"up, no stream {settings.nats_stream} (the broadcaster "
                     "makes it)", "red when unreachable; amber without the stream")
    except (TimeoutError, nats.errors.Error) as e:
        return Check("nats", RED, f"JetStream unavailable: {e}", "red when unreachable")
    finally:
        await nc.close()


async def _api(url: str, timeout: float) -> list[Check]:
    """The HTTP API, and the writer as it sees it (``/v1/health``'s ``writer``)."""
    import httpx

    api_threshold = "red unless /v1/health answers 200"
    writer_threshold = "red when the API cannot reach the writer"
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            r = await client.get(url.rstrip("/") + "/v1/health")
    except httpx.HTTPError as e:
        return [Check("api", RED, f"{url}: unreachable ({type(e).__name__})", api_threshold),
                Check("writer", RED, "unknown: the API is unreachable", writer_threshold)]
    if r.status_code != 200:
        return [Check("api", RED, f"{url}: /v1/health {r.status_code}", api_threshold),
                Check("writer", RED, "unknown: the API is not healthy", writer_threshold)]
    writer = r.json().get("writer")
    return [Check("api", GREEN, f"{url}: /v1/health 200", api_threshold),
            Check("writer", GREEN if writer == "ok" else RED, f"{writer or 'not reported'}",
                  writer_threshold)]


async def gather(settings: Settings, api_url: str, timeout: float = TIMEOUT) -> list[Check]:
    assert settings.database_url
    (postgres, state, quality), nats_check, api = await asyncio.gather(
        _postgres(settings.database_url, settings, timeout), _nats(settings, timeout),
        _api(api_url, timeout))
    checks = [postgres, nats_check, *api]
    if state is not None:
        checks += judge(state, settings)
    if quality is not None:
        checks.append(quality)
    return checks


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=300), default=TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="How long PostgreSQL, NATS and the API may each take to answer before "
                   "the check is red.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, timeout: float) -> None:
    """The ledger's health on one screen: PostgreSQL, NATS, the API, the writer, the
    broadcaster's and each view's lag, the digests, the last backup, the last verify and
    the schemas' data quality, each green, amber or red with its threshold.

    Exit code 0 when nothing is red, 1 when something is red, 5 when no database is
    configured (and no ssot serve runs on the data dir)."""
    from rich.table import Table

    settings = operator_settings()
    checks = asyncio.run(gather(settings, ctx.obj["url"], timeout))
    worst = RED if any(c.level == RED for c in checks) else (
        AMBER if any(c.level == AMBER for c in checks) else GREEN)
    if as_json or (ctx.obj and ctx.obj.get("json")):
        print_json({"status": worst, "checks": [asdict(c) for c in checks]})
    else:
        table = Table("CHECK", "STATUS", "NOW", "THRESHOLD", box=None)
        colours = {GREEN: "green", AMBER: "yellow", RED: "bold red"}
        for c in checks:
            table.add_row(c.name, f"[{colours[c.level]}]{c.level}[/]", c.value, c.threshold)
        out.print(table)
        out.print(f"overall: [{colours[worst]}]{worst}[/]")
    if worst == RED:
        sys.exit(EXIT_OTHER)

