"""The ``ssot`` commands on single entries over the HTTP API: write them (put, patch, rm,
revert, and batch for several in one transaction), read them now or at a past point (get)
and read their past (history, diff)."""

from __future__ import annotations

from typing import Any

import click
import orjson
from rich.table import Table

from .console import EXIT_USAGE, fail, out, print_json
from .http_client import client_of, coordinates, entry_path, pages, split_address, write_headers
from .options import POSITION, TIME


@click.command()
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
    response = client_of(ctx).call("PUT", entry_path(namespace, key), content=file.read(),
                                   headers=headers)
    entry = response.json()
    if ctx.obj["json"]:
        print_json(entry)
    else:
        verb = ("created" if response.status_code == 201
                else "unchanged" if entry.get("unchanged") else "updated")
        out.print(f"{verb} {namespace}/{key} version {entry['version']} "
                  f"(position {entry['position']})")


@click.command()
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
    entry = client_of(ctx).call("PATCH", entry_path(namespace, key), content=file.read(),
                                headers=headers).json()
    if ctx.obj["json"]:
        print_json(entry)
    else:
        verb = "unchanged" if entry.get("unchanged") else "patched"
        out.print(f"{verb} {namespace}/{key} version {entry['version']} "
                  f"(position {entry['position']})")


@click.command()
@click.argument("address")
@click.option("--version", type=int, help="A past version.")
@click.option("--as-of", type=TIME,
              help="As it was at this RFC 3339 time (e.g. 2026-11-01T12:00Z).")
@click.option("--position", type=POSITION, help="As it was at this global log position.")
@click.option("--min-position", type=POSITION,
              help="Read a state that includes this log position (the one a write printed): "
              "from a read replica once it holds it, else from the primary.")
@click.pass_context
def get(ctx: click.Context, address: str, version: int | None, as_of: str | None,
        position: int | None, min_position: int | None) -> None:
    """Print the entry at ADDRESS (NAMESPACE/KEY), now or at a past point."""
    namespace, key = split_address(address)
    params = coordinates(version, as_of, position, min_position)
    entry = client_of(ctx).call("GET", entry_path(namespace, key), params=params).json()
    show_entry(entry, ctx.obj["json"])


@click.command()
@click.argument("address")
@click.option("--if-match", type=int, help="Only if the entry is at this version.")
@click.option("--reason", help="Why (recorded in the history).")
@click.option("--idempotency-key", help="Make retries of this write safe.")
@click.pass_context
def rm(ctx: click.Context, address: str, if_match: int | None, reason: str | None,
       idempotency_key: str | None) -> None:
    """Delete the entry at ADDRESS (its history stays)."""
    namespace, key = split_address(address)
    entry = client_of(ctx).call("DELETE", entry_path(namespace, key),
                                headers=write_headers(if_match, reason, idempotency_key)).json()
    if ctx.obj["json"]:
        print_json(entry)
    else:
        out.print(f"deleted {namespace}/{key} in version {entry['version']} "
                  f"(position {entry['position']})")


@click.command()
@click.argument("address")
@click.option("--to", "to_version", type=int, help="The version whose content comes back.")
@click.option("--as-of", type=TIME, help="…or the content it had at this RFC 3339 time.")
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
    entry = client_of(ctx).call("POST", entry_path(namespace, key) + "/revert",
                                content=orjson.dumps(spec), headers=headers).json()
    if ctx.obj["json"]:
        print_json(entry)
    else:
        what = "already has" if entry.get("unchanged") else "has"
        out.print(f"{'unchanged' if entry.get('unchanged') else 'reverted'} "
                  f"{namespace}/{key}: version {entry['version']} {what} the content "
                  f"of {'version ' + str(to_version) if to_version else as_of} "
                  f"(position {entry['position']})")


@click.command()
@click.argument("address")
@click.option("--desc", is_flag=True, help="Newest first.")
@click.option("--limit", type=int, help="At most this many events.")
@click.pass_context
def history(ctx: click.Context, address: str, desc: bool, limit: int | None) -> None:
    """Show every change of ADDRESS: who, when, why and what changed."""
    namespace, key = split_address(address)
    page_size = min(limit, 1000) if limit else 1000
    events = pages(client_of(ctx), entry_path(namespace, key) + "/history",
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


@click.command()
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
        print_json(client_of(ctx).call("GET", entry_path(namespace, key) + "/diff",
                                       params=params).json())
        return
    text = client_of(ctx).call("GET", entry_path(namespace, key) + "/diff",
                               params={**params, "format": "text"}).text
    # ends with a newline: the shell's prompt after it starts on a line of its own
    click.echo(text, nl=bool(text) and not text.endswith("\n"))


@click.command()
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
        fail(EXIT_USAGE, "malformed_json", f"{file.name}: {e}")
    body = {"operations": data} if isinstance(data, list) else data
    if reason and isinstance(body, dict):
        body["reason"] = reason
    headers = write_headers(None, None, idempotency_key)
    headers["Content-Type"] = "application/json"
    result = client_of(ctx).call("POST", "/v1/batch", content=orjson.dumps(body),
                                 headers=headers).json()
    if ctx.obj["json"]:
        print_json(result)
        return
    table = Table("ENTRY", "VERSION", "POSITION", box=None)
    for o in result["operations"]:
        table.add_row(f"{o['namespace']}/{o['key']}", str(o["version"]), str(o["position"]))
    unchanged = sum(1 for o in result["operations"] if o.get("unchanged"))
    out.print(f"applied {len(result['operations'])} operations in one transaction "
              f"(correlation id {result['correlation_id']})"
              + (f"; {unchanged} changed nothing" if unchanged else ""))
    out.print(table)


def show_entry(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(entry)
        return
    out.print(f"{entry['namespace']}/{entry['key']}  version {entry['version']}  "
              f"position {entry['position']}  recorded {entry['recorded_at']}")
    click.echo(orjson.dumps(entry["document"], option=orjson.OPT_INDENT_2).decode())


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
