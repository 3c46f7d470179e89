"""The ``ssot`` commands on namespaces over the HTTP API: list them and their entries (ls),
show or change their settings (namespace show/set), and restore one as it was (restore)."""

from __future__ import annotations

from typing import Any

import click
import orjson
from rich.table import Table

from .console import out, print_json
from .entry_commands import summarize_patch
from .http_client import client_of, coordinates, namespace_path, pages, write_headers
from .options import POSITION, TIME


@click.command()
@click.argument("namespace", required=False)
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--limit", type=int, help="At most this many entries.")
@click.option("--as-of", type=TIME, help="As the namespace was at this RFC 3339 time.")
@click.option("--position", type=POSITION, help="As it was at this global log position.")
@click.pass_context
def ls(ctx: click.Context, namespace: str | None, prefix: str, limit: int | None,
       as_of: str | None, position: int | None) -> None:
    """List the entries of NAMESPACE (or, without one, the namespaces)."""
    client = client_of(ctx)
    if namespace is None:
        rows = pages(client, "/v1/namespaces", {"limit": 1000}, limit)
        if ctx.obj["json"]:
            print_json(rows)
            return
        table = Table("NAMESPACE", "ENTRIES", "DELETED", "LAST POSITION", box=None)
        for r in rows:
            table.add_row(r["namespace"], str(r["entries"]), str(r["deleted"]),
                          str(r["last_position"]))
        out.print(table)
        return
    path = namespace_path(namespace) + "/entries"
    page_size = min(limit, 1000) if limit else 1000
    entries = pages(client, path, {"prefix": prefix, "limit": page_size,
                                   **coordinates(as_of=as_of, position=position)}, limit)
    if ctx.obj["json"]:
        print_json(entries)
        return
    table = Table("KEY", "VERSION", "POSITION", "RECORDED AT", box=None)
    for e in entries:
        table.add_row(e["key"], str(e["version"]), str(e["position"]), e["recorded_at"])
    out.print(table)


@click.group()
def namespace() -> None:
    """Show or change a namespace's settings (every change is recorded as an event)."""


@namespace.command("show")
@click.argument("name")
@click.pass_context
def namespace_show(ctx: click.Context, name: str) -> None:
    """Show NAME's settings and entry counts."""
    data = client_of(ctx).call("GET", namespace_path(name)).json()
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
@click.option("--schema-format", type=click.Choice(["annotate", "assert"]),
              help="Whether format in the namespace's schema only annotates (the default) "
              "or asserts.")
@click.option("--description", help="What the namespace holds.")
@click.option("--reason", help="Why (recorded in the settings' history).")
@click.option("--if-match", type=int, help="Only if the settings are at this version.")
@click.pass_context
def namespace_set(ctx: click.Context, name: str, conflict_policy: str | None,
                  schema_format: str | None, description: str | None, reason: str | None,
                  if_match: int | None) -> None:
    """Change NAME's settings; the ones not given keep their value. A namespace that does
    not exist yet is created with them (the defaults for those not given)."""
    client = client_of(ctx)
    path = namespace_path(name)
    found = client.get_unless(path, "namespace_not_found")
    current: dict[str, Any] = (found.json() if found is not None
                               else {"settings": {}, "settings_version": 0})
    settings = dict(current["settings"])
    if conflict_policy is not None:
        settings["conflict_policy"] = conflict_policy
    if schema_format is not None:
        settings["schema_format"] = schema_format
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
              f"{'unchanged ' if result.get('unchanged') else ''}"
              f"(position {result['position']}): "
              + ", ".join(f"{k}={v}" for k, v in result["settings"].items()
                          if v is not None))


@click.command()
@click.argument("namespace")
@click.option("--as-of", type=TIME, help="Make it what it was at this RFC 3339 time…")
@click.option("--position", type=POSITION, help="…or at this global log position.")
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
    result = client_of(ctx).call("POST", namespace_path(namespace) + "/restore",
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
