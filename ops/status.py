"""``ssot status``: the health of the whole ledger on one screen, each line green, amber or
red with the threshold that judged it: PostgreSQL, NATS (and the change stream), the HTTP
API and the writer behind it, the broadcaster's lag, each view's lag, the digests, the
last backup (``ssot export``), the last verify and the data quality of the namespaces with
a schema. What it reads of the log is what ``GET /metrics`` exports
(``projections/log_state.py``); the judging is pure (``projections/status_checks.py``,
shared with ``GET /v1/status``) and tested on its own.

Exit code 0 when nothing is red (amber is a warning), 1 when something is red, 5 when the
database is not configured."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from nexus_ssot.projections.status_checks import AMBER, GREEN, RED, Check, judge, overall, schemas

from .console import EXIT_OTHER, out, print_json
from .database import operator_settings

if TYPE_CHECKING:  # imported when used: `ssot` starts fast for every other command
    from nexus_ssot.ledger.settings import Settings
    from nexus_ssot.projections.log_state import LogState

#: How long each of PostgreSQL, NATS and the API may take to answer (``--timeout``).
TIMEOUT = 2.0


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
    worst = overall(checks)
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

