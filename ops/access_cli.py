"""The ``ssot`` commands on identity and access over the HTTP API: API tokens (token
create/list/revoke), policies (policy put/show/ls/rm/history), ``whoami`` and ``explain``."""

from __future__ import annotations

from typing import IO, Any

import click
import orjson
from rich.table import Table

from .console import out, print_json
from .http_client import client_of, pages


@click.group()
def token() -> None:
    """Make, list and revoke API tokens (the secret is shown once)."""


@token.command("create")
@click.argument("subject")
@click.option("--group", "groups", multiple=True, help="A group of the token (repeatable).")
@click.option("--expires-in", type=click.IntRange(1), help="Seconds until it expires "
              "(needed when you make one for yourself; at most 90 days then).")
@click.option("--description", help="What the token is for.")
@click.pass_context
def token_create(ctx: click.Context, subject: str, groups: tuple[str, ...],
                 expires_in: int | None, description: str | None) -> None:
    """Make a token for SUBJECT; prints the token (once) on stdout."""
    body = {"subject": subject, "groups": list(groups), "expires_in": expires_in,
            "description": description}
    made = client_of(ctx).call("POST", "/v1/access/tokens", json=body).json()
    if ctx.obj["json"]:
        print_json(made)
        return
    click.echo(made["token"])
    click.echo(f"token {made['id']} for {made['subject']}"
               + (f", expires {made['expires_at']}" if made["expires_at"] else "")
               + " (the secret is not kept: store it now)", err=True)


@token.command("list")
@click.pass_context
def token_list(ctx: click.Context) -> None:
    """Your tokens (every token, for an administrator); never their secrets."""
    items = client_of(ctx).call("GET", "/v1/access/tokens").json()["items"]
    if ctx.obj["json"]:
        print_json(items)
        return
    table = Table("ID", "SUBJECT", "GROUPS", "EXPIRES AT", "CREATED BY", "DESCRIPTION",
                  box=None)
    for t in items:
        table.add_row(t["id"], t["subject"], ",".join(t["groups"]),
                      (t["expires_at"] or "never") + (" (expired)" if t["expired"] else ""),
                      t["created_by"], t["description"] or "")
    out.print(table)


@token.command("revoke")
@click.argument("token_id")
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke the token TOKEN_ID: every worker refuses it within a second."""
    revoked = client_of(ctx).call("DELETE", f"/v1/access/tokens/{token_id}").json()
    if ctx.obj["json"]:
        print_json(revoked)
        return
    click.echo(f"revoked token {revoked['id']} of {revoked['subject']}")


@click.group()
def policy() -> None:
    """Set, show and remove access policies (each change is a recorded event)."""


@policy.command("put")
@click.argument("name")
@click.argument("file", type=click.File("rb"))
@click.option("--if-match", type=int, help="Only if the policy is at this version.")
@click.option("--reason", help="Why (recorded with the change).")
@click.pass_context
def policy_put(ctx: click.Context, name: str, file: IO[bytes], if_match: int | None,
               reason: str | None) -> None:
    """Set policy NAME from FILE (a JSON policy document; - for stdin)."""
    headers = {"Content-Type": "application/json"}
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    if reason:
        headers["X-Reason"] = reason
    result = client_of(ctx).call("PUT", f"/v1/access/policies/{name}", content=file.read(),
                                 headers=headers).json()
    if ctx.obj["json"]:
        print_json(result)
        return
    click.echo(f"policy {name} version {result['version']} "
               f"{'unchanged ' if result.get('unchanged') else ''}"
               f"(position {result['position']})")


@policy.command("show")
@click.argument("name")
@click.option("--version", type=int, help="A past version.")
@click.pass_context
def policy_show(ctx: click.Context, name: str, version: int | None) -> None:
    """Print policy NAME as JSON."""
    params = {"version": version} if version is not None else None
    result = client_of(ctx).call("GET", f"/v1/access/policies/{name}", params=params).json()
    print_json(result if ctx.obj["json"] else result["policy"])


@policy.command("ls")
@click.pass_context
def policy_ls(ctx: click.Context) -> None:
    """The policies in force, with their number of rules."""
    items = client_of(ctx).call("GET", "/v1/access/policies").json()["items"]
    if ctx.obj["json"]:
        print_json(items)
        return
    table = Table("NAME", "RULES", "DESCRIPTION", box=None)
    for p in items:
        table.add_row(p["name"], str(len(p["policy"]["rules"])), p["policy"]["description"]
                      or "")
    out.print(table)


@policy.command("rm")
@click.argument("name")
@click.pass_context
def policy_rm(ctx: click.Context, name: str) -> None:
    """Remove policy NAME (a deleting version: its history stays)."""
    result = client_of(ctx).call("DELETE", f"/v1/access/policies/{name}").json()
    click.echo(f"removed policy {name} (version {result['version']})")


@policy.command("history")
@click.argument("name")
@click.pass_context
def policy_history(ctx: click.Context, name: str) -> None:
    """Every version of policy NAME: who changed it, when and why."""
    events = pages(client_of(ctx), f"/v1/access/policies/{name}/history", {"limit": 1000},
                   None)
    if ctx.obj["json"]:
        print_json(events)
        return
    table = Table("VERSION", "RECORDED AT", "TYPE", "ACTOR", "REASON", box=None)
    for e in events:
        table.add_row(str(e["version"]), e["recorded_at"], e["event_type"], e["actor"],
                      e["reason"] or "")
    out.print(table)


@click.command()
@click.option("--namespace", help="Also what you may do in this namespace.")
@click.pass_context
def whoami(ctx: click.Context, namespace: str | None) -> None:
    """Who the server takes you for (subject, groups, how you authenticated)."""
    params = {"namespace": namespace} if namespace else None
    me: dict[str, Any] = client_of(ctx).call("GET", "/v1/access/whoami", params=params).json()
    if ctx.obj["json"]:
        print_json(me)
        return
    click.echo(f"{me['subject']} ({me['method']}"
               + (f", token {me['token_id']}" if me["token_id"] else "") + ")")
    click.echo(f"groups: {', '.join(me['groups']) or '-'}")
    if me.get("actions"):
        click.echo(f"in {namespace}: " + ", ".join(
            f"{a} ({scope})" for a, scope in me["actions"].items() if scope != "none"))


@click.command()
@click.argument("action")
@click.argument("address")
@click.option("--subject", help="Explain for another subject (administrators).")
@click.option("--group", "groups", multiple=True, help="That subject's groups.")
@click.pass_context
def explain(ctx: click.Context, action: str, address: str, subject: str | None,
            groups: tuple[str, ...]) -> None:
    """Why ACTION on ADDRESS (NAMESPACE or NAMESPACE/KEY) is allowed or denied."""
    namespace, _, key = address.partition("/")
    params: dict[str, Any] = {"action": action, "namespace": namespace}
    if key:
        params["key"] = key
    if subject:
        params["subject"] = subject
    if groups:
        params["groups"] = list(groups)
    decision = client_of(ctx).call("GET", "/v1/access/explain", params=params).json()
    if ctx.obj["json"]:
        out.print(orjson.dumps(decision).decode())
        return
    click.echo(f"{decision['decision']}: {decision['reason']}")
