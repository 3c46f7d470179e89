"""The ``ssot`` commands on schemas over the HTTP API: set a namespace's schema (or only
check it against the namespace's entries: ``--dry-run``), show it, check a document
against it, and show the namespace's data quality (docs/schemas.md)."""

from __future__ import annotations

from typing import Any, BinaryIO

import click
from rich.table import Table

from .console import EXIT_OTHER, EXIT_PRECONDITION, fail, out, print_json
from .http_client import client_of, fail_on_problem, namespace_path, write_headers
from .options import TIME


def _violations(items: list[dict[str, Any]]) -> None:
    """Each violating key with its violations, one line each."""
    for item in items:
        for v in item["violations"]:
            out.print(f"  {item['key']}  {v['message']}  ({v['keyword']} at schema "
                      f"{v['schema_path'] or '/'})", markup=False)


def _check_summary(report: dict[str, Any]) -> None:
    out.print(f"{report['entries']} entries as of position {report['checked_position']}: "
              f"{report['conforming']} conform, {report['violating']} violate")
    compatibility = report["compatibility"]
    verdict = {True: "compatible", False: "not compatible", None: "undecided"}[
        compatibility["compatible"]]
    how = "decided" if compatibility["decided"] else "sampled"
    out.print(f"compatibility with the previous schema: {verdict} ({how}: "
              f"{compatibility['reason']})", markup=False)


@click.group()
def schema() -> None:
    """Set, show and check a namespace's JSON Schema (every change is recorded)."""


@schema.command("set")
@click.argument("namespace")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Only check the namespace's entries against "
              "it; change nothing.")
@click.option("--allow-existing-violations", is_flag=True,
              help="Set it although current entries violate it (recorded).")
@click.option("--reason", help="Why (recorded in the schema's history).")
@click.option("--if-match", type=int, help="Only if the schema is at this version.")
@click.pass_context
def schema_set(ctx: click.Context, namespace: str, file: BinaryIO, dry_run: bool,
               allow_existing_violations: bool, reason: str | None,
               if_match: int | None) -> None:
    """Set NAMESPACE's schema to the JSON Schema in FILE (- for stdin), once its current
    entries conform (or with --allow-existing-violations)."""
    headers = write_headers(if_match, reason, None)
    headers["Content-Type"] = "application/schema+json"
    params = {"dry_run": str(dry_run).lower(),
              "allow_existing_violations": str(allow_existing_violations).lower(),
              "limit": 1000}
    response = client_of(ctx).answer("PUT", namespace_path(namespace) + "/schema",
                                     content=file.read(), headers=headers, params=params)
    body = response.json() if response.headers.get("content-type", "").endswith(
        "json") else {}
    if response.status_code == 409 and body.get("code") == "schema_violations":
        if ctx.obj["json"]:
            print_json(body)
        else:
            _check_summary(body)
            _violations(body["violations"])
        fail(EXIT_PRECONDITION, "schema_violations", body["detail"])
    fail_on_problem(response)
    if ctx.obj["json"]:
        print_json(body)
        return
    if dry_run:
        _check_summary(body)
        _violations(body["violations"])
        return
    out.print(f"{namespace}: schema version {body['version']} "
              f"{'unchanged ' if body.get('unchanged') else ''}(position {body['position']})")
    _check_summary({**body["check"], "compatibility": body["compatibility"]})


@schema.command("show")
@click.argument("namespace")
@click.option("--version", type=int, help="A past version.")
@click.option("--as-of", type=TIME, help="As it was at this RFC 3339 time.")
@click.pass_context
def schema_show(ctx: click.Context, namespace: str, version: int | None,
                as_of: str | None) -> None:
    """Show NAMESPACE's schema (now, at a version, or as of a time)."""
    params = {k: v for k, v in (("version", version), ("as_of", as_of)) if v is not None}
    body = client_of(ctx).call("GET", namespace_path(namespace) + "/schema",
                               params=params).json()
    if ctx.obj["json"]:
        print_json(body)
        return
    pins = ", ".join(f"{n}@{v}" for n, v in body["definitions"].items()) or "none"
    out.print(f"{namespace}: schema version {body['version']} (position {body['position']}, "
              f"{body['recorded_at']}, by {body['actor']}); shared schemas: {pins}",
              markup=False)
    print_json(body["schema"])


@schema.command("check")
@click.argument("namespace")
@click.argument("file", type=click.File("rb"))
@click.pass_context
def schema_check(ctx: click.Context, namespace: str, file: BinaryIO) -> None:
    """Check the document in FILE (- for stdin) against NAMESPACE's schema; exit 1 when it
    violates it. Nothing is written."""
    body = client_of(ctx).call("POST", namespace_path(namespace) + "/schema/validate",
                               content=file.read(),
                               headers={"Content-Type": "application/json"}).json()
    if ctx.obj["json"]:
        print_json(body)
    elif body["valid"]:
        out.print(f"valid against the schema of namespace {namespace} (version "
                  f"{body['schema_version']})"
                  if body["schema_version"] else f"{namespace} has no schema: valid")
    else:
        _violations([{"key": "document", "violations": body["violations"]}])
    if not body["valid"]:
        count = len(body["violations"])
        fail(EXIT_OTHER, "schema_violation",
             f"the document violates the schema of namespace {namespace} (version "
             f"{body['schema_version']}): {count} violation{'s' if count > 1 else ''}")


@click.command()
@click.argument("namespace")
@click.option("--stale-days", type=int, default=90, show_default=True,
              help="Count entries unchanged for longer than this as stale.")
@click.option("--min-position", type=int, help="Wait until the view has this position.")
@click.pass_context
def quality(ctx: click.Context, namespace: str, stale_days: int,
            min_position: int | None) -> None:
    """Show NAMESPACE's data quality against its schema (the schema_quality view)."""
    params: dict[str, Any] = {"stale_days": stale_days, "limit": 1000}
    if min_position is not None:
        params["min_position"] = min_position
    body = client_of(ctx).call("GET", namespace_path(namespace) + "/quality",
                               params=params).json()
    if ctx.obj["json"]:
        print_json(body)
        return
    if body["schema_version"] is None:
        out.print(f"{namespace}: no schema; {body['entries']} entries")
    else:
        out.print(f"{namespace}: schema version {body['schema_version']}, validated up to "
                  f"position {body['validated_position']}: {body['entries']} entries, "
                  f"{body['conforming']} conform ({body['conforming_percent']}%), "
                  f"{body['violating']} violate")
    s, r = body["staleness"], body["refused_writes"]
    table = Table("UNCHANGED FOR", "P50", "P90", "MAX", f"> {stale_days} DAYS", box=None)
    table.add_row("entries", *(f"{s[k]}s" if s[k] is not None else "-"
                               for k in ("p50_seconds", "p90_seconds", "max_seconds")),
                  str(s["stale_entries"]))
    out.print(table)
    out.print(f"writes refused for the schema: {r['last_hour']} in the last hour, "
              f"{r['last_day']} in the last day")
    _violations(body["violations"])
