"""The ``ssot`` command: run the server, and read and write entries over the HTTP API.

Exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 precondition failed / conflict,
5 server unreachable or unavailable. Errors print one line on stderr:
``error: <code>: <message>``.
"""

from __future__ import annotations

import sys
import time
from typing import Any, NoReturn
from urllib.parse import quote

import click
import httpx
import orjson
from rich.console import Console
from rich.table import Table

from .check import check

EXIT_OTHER, EXIT_NOT_FOUND, EXIT_PRECONDITION, EXIT_UNAVAILABLE = 1, 3, 4, 5

# Tables keep their full width when piped (no terminal to fit), so scripts see every column.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


class Client:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            fail(EXIT_UNAVAILABLE, "unreachable", f"{self.http.base_url}: {e}")
        fail_on_problem(response)
        return response


def fail_on_problem(response: httpx.Response) -> None:
    """Exit with the one-line error of a problem response (RFC 9457)."""
    if response.status_code < 400:
        return
    try:
        problem = response.json()
        code, detail = problem.get("code", "error"), problem.get("detail", response.text)
    except ValueError:
        code, detail = f"http_{response.status_code}", response.text.strip()
    status = response.status_code
    exit_code = (EXIT_NOT_FOUND if status == 404 else EXIT_PRECONDITION
                 if status in (409, 412) else EXIT_UNAVAILABLE if status >= 500
                 else EXIT_OTHER)
    fail(exit_code, code, detail)


def fail(exit_code: int, code: str, message: str) -> NoReturn:
    click.echo(f"error: {code}: {message}", err=True)
    sys.exit(exit_code)


def split_address(address: str) -> tuple[str, str]:
    namespace, sep, key = address.partition("/")
    if not sep or not namespace or not key:
        raise click.BadParameter(f"{address!r} is not NAMESPACE/KEY", param_hint="ADDRESS")
    return namespace, key


def entry_path(namespace: str, key: str) -> str:
    return f"/v1/namespaces/{quote(namespace, safe='')}/entries/{quote(key, safe='/')}"


def write_headers(if_match: int | None, reason: str | None, idempotency_key: str | None,
                  if_none_match: bool = False) -> dict[str, str]:
    headers: dict[str, str] = {}
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    if if_none_match:
        headers["If-None-Match"] = "*"
    if reason:
        headers["X-Reason"] = reason
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def show_entry(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(entry)
        return
    out.print(f"{entry['namespace']}/{entry['key']}  version {entry['version']}  "
              f"position {entry['position']}  recorded {entry['recorded_at']}")
    click.echo(orjson.dumps(entry["document"], option=orjson.OPT_INDENT_2).decode())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="SSOT_URL", default="http://127.0.0.1:8080", show_default=True,
              help="Base URL of the ledger API (env SSOT_URL).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def main(ctx: click.Context, url: str, as_json: bool) -> None:
    """NEXUS SSOT Ledger: event-sourced single source of truth for JSON records."""
    ctx.obj = {"url": url, "json": as_json}


def _client(ctx: click.Context) -> Client:
    return Client(ctx.obj["url"])


@main.command()
@click.option("--host", help="Listen address (default SSOT_HTTP_HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Listen port (default SSOT_HTTP_PORT or 8080).")
@click.option("--trust-actor-header", is_flag=True,
              help="Take the actor from X-Actor (only behind a proxy that sets it).")
@click.option("--workers", type=click.IntRange(1, 64),
              help="HTTP worker processes (default SSOT_HTTP_WORKERS or 2).")
@click.option("--access-log", is_flag=True, help="Log every request.")
def serve(host: str | None, port: int | None, trust_actor_header: bool, workers: int | None,
          access_log: bool) -> None:
    """Run the API (starting embedded PostgreSQL and NATS when no URLs are configured)."""
    from nexus_ssot.ledger.settings import Settings

    from .serve import serve as run

    update: dict[str, Any] = {}
    if host:
        update["http_host"] = host
    if port is not None:
        update["http_port"] = port
    if trust_actor_header:
        update["trust_actor_header"] = True
    if workers is not None:
        update["http_workers"] = workers
    run(Settings().model_copy(update=update), access_log=access_log)


@main.command()
@click.option("--socket", "socket_path", required=True, help="Unix socket to serve.")
def writer(socket_path: str) -> None:
    """Run the group-commit writer process (started by `ssot serve`)."""
    import logging

    from nexus_ssot.ledger.settings import Settings

    from .writer_process import run_writer

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_writer(Settings(), socket_path)


@main.command()
@click.option("--from-position", type=int, default=0, show_default=True,
              help="Compare events after this position.")
@click.option("--to-position", type=int, help="…up to this one (default: the head).")
@click.option("--repair", is_flag=True, help="Publish what the stream's tail is missing.")
@click.pass_context
def reconcile(ctx: click.Context, from_position: int, to_position: int | None,
              repair: bool) -> None:
    """Compare the NATS stream with the log (count and hash) and report what differs.

    Talks to PostgreSQL and NATS directly (SSOT_DATABASE_URL, SSOT_NATS_URL). Exit code 0
    when the stream holds exactly the log's events in the range (after --repair), 1 if not."""
    import asyncio

    from nexus_ssot.ledger.settings import Settings

    from .reconcile import reconcile as run

    settings = Settings()
    if not settings.database_url or not settings.nats_url:
        fail(EXIT_OTHER, "not_configured", "set SSOT_DATABASE_URL and SSOT_NATS_URL")
    report = asyncio.run(run(settings.database_url, settings.nats_url,
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


@main.command()
@click.option("--view", "views", multiple=True, help="Only this view (repeatable).")
def project(views: tuple[str, ...]) -> None:
    """Keep the asynchronous views current, exactly once (one active runner per view and
    database; run several for standbys)."""
    import logging

    from nexus_ssot.ledger.settings import Settings

    from .project import run_projections

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_projections(Settings(), list(views) or None)


@main.command()
def broadcast() -> None:
    """Publish every committed event on NATS JetStream, in order (one leader per database)."""
    import logging

    from nexus_ssot.ledger.settings import Settings

    from .broadcast import run_broadcaster

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_broadcaster(Settings())


@main.command()
@click.argument("address")
@click.argument("file", type=click.File("rb"))
@click.option("--if-match", type=int, help="Only if the entry is at this version.")
@click.option("--create-only", is_flag=True, help="Only if the entry does not exist.")
@click.option("--reason", help="Why (recorded in the history).")
@click.option("--idempotency-key", help="Make retries of this write safe.")
@click.pass_context
def put(ctx: click.Context, address: str, file: Any, if_match: int | None, create_only: bool,
        reason: str | None, idempotency_key: str | None) -> None:
    """Create or replace ADDRESS (NAMESPACE/KEY) with the JSON in FILE ('-' for stdin)."""
    namespace, key = split_address(address)
    headers = write_headers(if_match, reason, idempotency_key, create_only)
    headers["Content-Type"] = "application/json"
    response = _client(ctx).call("PUT", entry_path(namespace, key), content=file.read(),
                                 headers=headers)
    entry = response.json()
    if ctx.obj["json"]:
        print_json(entry)
    else:
        verb = "created" if response.status_code == 201 else "updated"
        out.print(f"{verb} {namespace}/{key} version {entry['version']} "
                  f"(position {entry['position']})")


@main.command()
@click.argument("address")
@click.argument("file", type=click.File("rb"))
@click.option("--json-patch", "json_patch", is_flag=True,
              help="FILE is an RFC 6902 JSON Patch (default: RFC 7386 merge patch).")
@click.option("--if-match", type=int, help="Only if the entry is at this version.")
@click.option("--reason", help="Why (recorded in the history).")
@click.option("--idempotency-key", help="Make retries of this write safe.")
@click.pass_context
def patch(ctx: click.Context, address: str, file: Any, json_patch: bool, if_match: int | None,
          reason: str | None, idempotency_key: str | None) -> None:
    """Patch ADDRESS with the patch in FILE ('-' for stdin)."""
    namespace, key = split_address(address)
    headers = write_headers(if_match, reason, idempotency_key)
    headers["Content-Type"] = ("application/json-patch+json" if json_patch
                               else "application/merge-patch+json")
    entry = _client(ctx).call("PATCH", entry_path(namespace, key), content=file.read(),
                              headers=headers).json()
    if ctx.obj["json"]:
        print_json(entry)
    else:
        out.print(f"patched {namespace}/{key} version {entry['version']} "
                  f"(position {entry['position']})")


def _coordinates(version: int | None = None, as_of: str | None = None,
                 position: int | None = None) -> dict[str, Any]:
    given = {"version": version, "as_of": as_of, "position": position}
    return {k: v for k, v in given.items() if v is not None}


@main.command()
@click.argument("address")
@click.option("--version", type=int, help="A past version.")
@click.option("--as-of", help="As it was at this RFC 3339 time (e.g. 2026-11-01T12:00Z).")
@click.option("--position", type=int, help="As it was at this global log position.")
@click.pass_context
def get(ctx: click.Context, address: str, version: int | None, as_of: str | None,
        position: int | None) -> None:
    """Print the entry at ADDRESS (NAMESPACE/KEY), now or at a past point."""
    namespace, key = split_address(address)
    params = _coordinates(version, as_of, position)
    entry = _client(ctx).call("GET", entry_path(namespace, key), params=params).json()
    show_entry(entry, ctx.obj["json"])


@main.command()
@click.argument("address")
@click.option("--if-match", type=int, help="Only if the entry is at this version.")
@click.option("--reason", help="Why (recorded in the history).")
@click.option("--idempotency-key", help="Make retries of this write safe.")
@click.pass_context
def rm(ctx: click.Context, address: str, if_match: int | None, reason: str | None,
       idempotency_key: str | None) -> None:
    """Delete the entry at ADDRESS (its history stays)."""
    namespace, key = split_address(address)
    entry = _client(ctx).call("DELETE", entry_path(namespace, key),
                              headers=write_headers(if_match, reason, idempotency_key)).json()
    if ctx.obj["json"]:
        print_json(entry)
    else:
        out.print(f"deleted {namespace}/{key} in version {entry['version']} "
                  f"(position {entry['position']})")


@main.command()
@click.argument("address")
@click.option("--to", "to_version", type=int, help="The version whose content comes back.")
@click.option("--as-of", help="…or the content it had at this RFC 3339 time.")
@click.option("--reason", help="Why (recorded in the history).")
@click.option("--if-match", type=int, help="Only if the entry is at this version.")
@click.pass_context
def revert(ctx: click.Context, address: str, to_version: int | None, as_of: str | None,
           reason: str | None, if_match: int | None) -> None:
    """Bring back a past content of ADDRESS as a new version (undeletes too)."""
    namespace, key = split_address(address)
    spec: dict[str, Any] = {"to_version": to_version} if to_version is not None else {}
    if as_of is not None:
        spec["as_of"] = as_of
    if reason:
        spec["reason"] = reason
    headers = write_headers(if_match, None, None)
    headers["Content-Type"] = "application/json"
    entry = _client(ctx).call("POST", entry_path(namespace, key) + "/revert",
                              content=orjson.dumps(spec), headers=headers).json()
    if ctx.obj["json"]:
        print_json(entry)
    else:
        out.print(f"reverted {namespace}/{key}: version {entry['version']} has the content "
                  f"of {'version ' + str(to_version) if to_version else as_of} "
                  f"(position {entry['position']})")


@main.command()
@click.argument("namespace")
@click.option("--as-of", help="Make it what it was at this RFC 3339 time…")
@click.option("--position", type=int, help="…or at this global log position.")
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--reason", help="Why (recorded on every event; required unless --dry-run).")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@click.option("--idempotency-key", help="Make retries of this restore safe.")
@click.pass_context
def restore(ctx: click.Context, namespace: str, as_of: str | None, position: int | None,
            prefix: str, reason: str | None, dry_run: bool,
            idempotency_key: str | None) -> None:
    """Make NAMESPACE (or its keys under --prefix) what it was at a past time or position:
    re-creates, reverts and deletes entries in one transaction; history is appended to,
    never rewritten."""
    if (as_of is None) == (position is None):
        raise click.UsageError("give --as-of or --position (one of them)")
    spec: dict[str, Any] = {"dry_run": dry_run, "key_prefix": prefix}
    spec.update({"as_of": as_of} if as_of is not None else {"position": position})
    if reason:
        spec["reason"] = reason
    headers = write_headers(None, None, idempotency_key)
    headers["Content-Type"] = "application/json"
    result = _client(ctx).call("POST", f"/v1/namespaces/{quote(namespace, safe='')}/restore",
                               content=orjson.dumps(spec), headers=headers).json()
    if ctx.obj["json"]:
        print_json(result)
        return
    steps = result["operations"]
    scope = f"{namespace}/{prefix}*" if prefix else namespace
    verb = "would change" if dry_run else "changed"
    out.print(f"{scope} at position {result['position']}: {verb} {len(steps)} "
              f"entr{'y' if len(steps) == 1 else 'ies'}"
              + ("" if dry_run or not steps else f" (correlation id {result['correlation_id']})"))
    if not steps:
        return
    columns = ["KEY", "ACTION", "FROM", "TO", "CHANGE"]
    if not dry_run:
        columns += ["VERSION", "POSITION"]
    table = Table(*columns, box=None)
    for step in steps:
        row = [step["key"], step["action"], str(step["from_version"]),
               "" if step["to_version"] is None else str(step["to_version"]),
               summarize_patch(step["patch"])]
        if not dry_run:
            row += [str(step["version"]), str(step["position"])]
        table.add_row(*row)
    out.print(table)


@main.command()
@click.argument("file", type=click.File("rb"))
@click.option("--reason", help="Why (recorded on every event).")
@click.option("--idempotency-key", help="Make retries of this batch safe.")
@click.pass_context
def batch(ctx: click.Context, file: Any, reason: str | None,
          idempotency_key: str | None) -> None:
    """Apply the operations in FILE (a JSON array, or {"operations": [...]}; - for stdin)
    all or nothing: {"op": "put"|"patch"|"delete", "namespace", "key", "document" |
    "patch" (+ "patch_type": "merge"|"json"), "if_match"}."""
    try:
        data = orjson.loads(file.read())
    except orjson.JSONDecodeError as e:
        fail(EXIT_OTHER, "malformed_json", f"{file.name}: {e}")
    body = {"operations": data} if isinstance(data, list) else data
    if reason and isinstance(body, dict):
        body["reason"] = reason
    headers = write_headers(None, None, idempotency_key)
    headers["Content-Type"] = "application/json"
    result = _client(ctx).call("POST", "/v1/batch", content=orjson.dumps(body),
                               headers=headers).json()
    if ctx.obj["json"]:
        print_json(result)
        return
    table = Table("ENTRY", "VERSION", "POSITION", box=None)
    for o in result["operations"]:
        table.add_row(f"{o['namespace']}/{o['key']}", str(o["version"]), str(o["position"]))
    out.print(f"applied {len(result['operations'])} operations in one transaction "
              f"(correlation id {result['correlation_id']})")
    out.print(table)


@main.group()
def namespace() -> None:
    """Show or change a namespace's settings (every change is recorded as an event)."""


@namespace.command("show")
@click.argument("name")
@click.pass_context
def namespace_show(ctx: click.Context, name: str) -> None:
    """Show NAME's settings and entry counts."""
    data = _client(ctx).call("GET", f"/v1/namespaces/{quote(name, safe='')}").json()
    if ctx.obj["json"]:
        print_json(data)
        return
    settings = data["settings"]
    out.print(f"{name}  settings version {data['settings_version']}  "
              f"{data['entries']} entries  {data['deleted']} deleted")
    for setting, value in settings.items():
        out.print(f"  {setting}: {'' if value is None else value}")


@namespace.command("set")
@click.argument("name")
@click.option("--conflict-policy", type=click.Choice(["merge", "strict", "last-writer-wins"]),
              help="What a write with a stale If-Match does.")
@click.option("--description", help="What the namespace holds.")
@click.option("--reason", help="Why (recorded in the settings' history).")
@click.option("--if-match", type=int, help="Only if the settings are at this version.")
@click.pass_context
def namespace_set(ctx: click.Context, name: str, conflict_policy: str | None,
                  description: str | None, reason: str | None,
                  if_match: int | None) -> None:
    """Change NAME's settings; the ones not given keep their value."""
    client = _client(ctx)
    path = f"/v1/namespaces/{quote(name, safe='')}"
    current = client.call("GET", path).json()
    settings = dict(current["settings"])
    if conflict_policy is not None:
        settings["conflict_policy"] = conflict_policy
    if description is not None:
        settings["description"] = description
    expected = if_match if if_match is not None else current["settings_version"]
    headers = write_headers(expected or None, reason, None, if_none_match=expected == 0)
    headers["Content-Type"] = "application/json"
    result = client.call("PUT", path, content=orjson.dumps(settings), headers=headers).json()
    if ctx.obj["json"]:
        print_json(result)
        return
    out.print(f"{name}: settings version {result['settings_version']} "
              f"(position {result['position']}): "
              + ", ".join(f"{k}={v}" for k, v in result["settings"].items()
                          if v is not None))


def _pages(client: Client, path: str, params: dict[str, Any], limit: int | None) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page_params = {**params, **({"cursor": cursor} if cursor else {})}
        data = client.call("GET", path, params=page_params).json()
        items.extend(data["items"])
        cursor = data["next_cursor"]
        if cursor is None or (limit is not None and len(items) >= limit):
            return items[:limit] if limit is not None else items


@main.command()
@click.argument("namespace", required=False)
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--limit", type=int, help="At most this many entries.")
@click.option("--as-of", help="As the namespace was at this RFC 3339 time.")
@click.option("--position", type=int, help="As it was at this global log position.")
@click.pass_context
def ls(ctx: click.Context, namespace: str | None, prefix: str, limit: int | None,
       as_of: str | None, position: int | None) -> None:
    """List the entries of NAMESPACE (or, without one, the namespaces)."""
    client = _client(ctx)
    if namespace is None:
        rows = _pages(client, "/v1/namespaces", {"limit": 1000}, limit)
        if ctx.obj["json"]:
            print_json(rows)
            return
        table = Table("NAMESPACE", "ENTRIES", "DELETED", "LAST POSITION", box=None)
        for r in rows:
            table.add_row(r["namespace"], str(r["entries"]), str(r["deleted"]),
                          str(r["last_position"]))
        out.print(table)
        return
    path = f"/v1/namespaces/{quote(namespace, safe='')}/entries"
    page_size = min(limit, 1000) if limit else 1000
    entries = _pages(client, path, {"prefix": prefix, "limit": page_size,
                                    **_coordinates(as_of=as_of, position=position)}, limit)
    if ctx.obj["json"]:
        print_json(entries)
        return
    table = Table("KEY", "VERSION", "POSITION", "RECORDED AT", box=None)
    for e in entries:
        table.add_row(e["key"], str(e["version"]), str(e["position"]), e["recorded_at"])
    out.print(table)


@main.command()
@click.argument("address")
@click.option("--desc", is_flag=True, help="Newest first.")
@click.option("--limit", type=int, help="At most this many events.")
@click.pass_context
def history(ctx: click.Context, address: str, desc: bool, limit: int | None) -> None:
    """Show every change of ADDRESS: who, when, why and what changed."""
    namespace, key = split_address(address)
    page_size = min(limit, 1000) if limit else 1000
    events = _pages(_client(ctx), entry_path(namespace, key) + "/history",
                    {"order": "desc" if desc else "asc", "limit": page_size}, limit)
    if ctx.obj["json"]:
        print_json(events)
        return
    table = Table("VERSION", "TYPE", "RECORDED AT", "POSITION", "ACTOR", "REASON", "CHANGE",
                  box=None)
    for e in events:
        table.add_row(str(e["version"]), e["event_type"].removeprefix("entry."),
                      e["recorded_at"], str(e["position"]), e["actor"], e["reason"] or "",
                      summarize_patch(e["patch"]))
    out.print(table)


@main.command()
@click.argument("target")
@click.option("--after", type=int, help="Start after this global position (default: now).")
@click.pass_context
def watch(ctx: click.Context, target: str, after: int | None) -> None:
    """Print the changes of TARGET (NAMESPACE or NAMESPACE/KEY) as they are committed.

    Follows the server's event stream (Server-Sent Events) and resumes it after a dropped
    connection from the last position seen. Ctrl-C stops."""
    namespace, _, key = target.partition("/")
    params: dict[str, Any] = {"namespace": namespace}
    if key:
        params["key"] = key
    if after is not None:
        params["after"] = after
    client = _client(ctx)
    last: str | None = None
    try:
        while True:
            headers = {"Last-Event-ID": last} if last is not None else {}
            try:
                with client.http.stream("GET", "/v1/events/stream", params=params,
                                        headers=headers, timeout=None) as response:
                    if response.status_code >= 400:
                        response.read()
                        fail_on_problem(response)
                    for line in response.iter_lines():
                        if line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("data: "):
                            show_change(orjson.loads(line[6:]), ctx.obj["json"])
            except httpx.TransportError as e:
                click.echo(f"warning: stream interrupted ({e}); resuming", err=True)
                time.sleep(1.0)
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


@main.command()
@click.argument("address")
@click.argument("from_version", type=int)
@click.argument("to_version", type=int)
@click.pass_context
def diff(ctx: click.Context, address: str, from_version: int, to_version: int) -> None:
    """What changed in ADDRESS from FROM_VERSION to TO_VERSION (0: before it existed).

    A unified line diff; with --json, the RFC 6902 patch."""
    namespace, key = split_address(address)
    params: dict[str, Any] = {"from": from_version, "to": to_version}
    if ctx.obj["json"]:
        print_json(_client(ctx).call("GET", entry_path(namespace, key) + "/diff",
                                     params=params).json())
        return
    text = _client(ctx).call("GET", entry_path(namespace, key) + "/diff",
                             params={**params, "format": "text"}).text
    click.echo(text, nl=False)


@main.command()
@click.option("--namespace", help="Only this namespace.")
@click.option("--key-prefix", help="Only keys starting with this (needs --namespace).")
@click.option("--actor", help="Only changes by this actor.")
@click.option("--since", help="From this RFC 3339 time.")
@click.option("--until", help="Up to this RFC 3339 time.")
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
    client = _client(ctx)
    if fmt != "table":
        accept = "text/csv" if fmt == "csv" else "application/x-ndjson"
        with client.http.stream("GET", "/v1/audit", params=params,
                                headers={"Accept": accept}, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                fail_on_problem(response)
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
        return
    events = _pages(client, "/v1/audit", {**params, "limit": 1000}, None)
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


def summarize_patch(patch: list[dict[str, Any]]) -> str:
    parts = []
    for op in patch[:3]:
        path = op["path"] or "/"
        value = f" {orjson.dumps(op['value']).decode()}" if "value" in op else ""
        if len(value) > 40:
            value = value[:37] + "..."
        parts.append(f"{op['op']} {path}{value}")
    if len(patch) > 3:
        parts.append(f"(+{len(patch) - 3} more)")
    return "; ".join(parts)


from .replay import replay  # noqa: E402  (its module imports this one's helpers lazily)

main.add_command(replay)


main.add_command(check)

from .backup.commands import export, import_  # noqa: E402

main.add_command(export)
main.add_command(import_)

from .digest import digest  # noqa: E402

main.add_command(digest)

from .verify import verify  # noqa: E402

main.add_command(verify)

from .chaos import chaos  # noqa: E402

main.add_command(chaos)


if __name__ == "__main__":
    main()
