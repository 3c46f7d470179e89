"""The ``ssot`` commands on the log's changes over the HTTP API: follow them as they are
committed (watch) and search the audit trail (audit)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import httpx
import orjson
from rich.table import Table

from .console import out, print_json
from .http_client import client_of, fail_on_problem, pages
from .options import POSITION, TIME

#: Waits before reconnecting a watch: doubling from the first to the last, reset once a
#: stream is open again.
RECONNECT_FIRST_SECONDS, RECONNECT_MAX_SECONDS = 0.5, 5.0


@click.command()
@click.argument("target")
@click.option("--after", type=POSITION,
              help="Start after this global position (default: now).")
@click.pass_context
def watch(ctx: click.Context, target: str, after: int | None) -> None:
    """Print the changes of TARGET (NAMESPACE or NAMESPACE/KEY) as they are committed.

    Follows the server's event stream (Server-Sent Events). When the stream ends (the
    server is stopping or restarting) or the connection drops, it reconnects and resumes
    after the last position it saw, so no change is missed or printed twice. Ctrl-C
    stops."""
    namespace, _, key = target.partition("/")
    params: dict[str, Any] = {"namespace": namespace}
    if key:
        params["key"] = key
    if after is not None:
        params["after"] = after
    client = client_of(ctx)
    last: str | None = None  # the stream's first frame names its start, then each event
    delay, told = RECONNECT_FIRST_SECONDS, False
    followed = False  # a server down from the start is unreachable, not an interruption
    try:
        while True:
            headers = {"Last-Event-ID": last} if last is not None else {}
            try:
                with client.http.stream("GET", "/v1/events/stream", params=params,
                                        headers=headers, timeout=None) as response:
                    if response.status_code >= 400:
                        response.read()
                        fail_on_problem(response)
                    delay, told, followed = RECONNECT_FIRST_SECONDS, False, True
                    for line in response.iter_lines():
                        if line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("data: "):
                            show_change(orjson.loads(line[6:]), ctx.obj["json"])
                why = "the server ended the stream"
            except httpx.TransportError as e:
                if not followed:
                    client.unreachable(e)
                why = f"stream interrupted ({e})"
            if not told:  # once per outage, not at every attempt
                where = f" to resume after position {last}" if last is not None else ""
                click.echo(f"warning: {why}; reconnecting{where}", err=True)
                told = True
            time.sleep(delay)
            delay = min(2 * delay, RECONNECT_MAX_SECONDS)
    except KeyboardInterrupt:
        pass


def show_change(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(event).decode())
        return
    data = event["data"]
    click.echo(f"{data['position']:>8}  {event['time']}  {event['type'].rsplit('.', 1)[-1]:<8} "
               f"{data['namespace']}/{data['key']} v{data['version']}  {data['actor']}"
               + (f"  ({data['reason']})" if data["reason"] else ""))


@click.command()
@click.option("--namespace", help="Only this namespace.")
@click.option("--key-prefix", help="Only keys starting with this (needs --namespace).")
@click.option("--actor", help="Only changes by this actor.")
@click.option("--since", type=TIME, help="From this RFC 3339 time.")
@click.option("--until", type=TIME, help="Up to this RFC 3339 time.")
@click.option("--correlation-id", help="Only changes of this request or workflow.")
@click.option("--type", "event_type", help="Only this event type (e.g. entry.deleted).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "ndjson"]),
              default="table", show_default=True, help="csv and ndjson stream everything.")
@click.pass_context
def audit(ctx: click.Context, namespace: str | None, key_prefix: str | None,
          actor: str | None, since: str | None, until: str | None,
          correlation_id: str | None, event_type: str | None, fmt: str) -> None:
    """Who changed what, when and why: the audit trail, filtered."""
    params = {k: v for k, v in {"namespace": namespace, "key_prefix": key_prefix,
                                "actor": actor, "since": since, "until": until,
                                "correlation_id": correlation_id, "type": event_type}.items()
              if v is not None}
    client = client_of(ctx)
    if fmt != "table":
        accept = "text/csv" if fmt == "csv" else "application/x-ndjson"
        with client.stream("GET", "/v1/audit", params=params, headers={"Accept": accept},
                           timeout=None) as response:
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
        return
    events = pages(client, "/v1/audit", {**params, "limit": 1000}, None)
    if ctx.obj["json"]:
        print_json(events)
        return
    table = Table("POSITION", "RECORDED AT", "TYPE", "ENTRY", "VERSION", "ACTOR", "REASON",
                  box=None)
    for e in events:
        table.add_row(str(e["position"]), e["recorded_at"],
                      e["event_type"].removeprefix("entry."), f"{e['namespace']}/{e['key']}",
                      str(e["version"]), e["actor"], e["reason"] or "")
    out.print(table)
