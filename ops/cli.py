"""The ``ssot`` command: run the server, and read and write entries over the HTTP API.

This module is the command group; the commands live with what they work on (entries,
namespaces, the change log, the ledger's processes, backups, views, checks).

Every command exits with the codes of one table (``console.py``; docs/operations.md#exit-
codes) and prints an error as one line on stderr: ``error: <code>: <message>``.
"""

from __future__ import annotations

import gc

import click

from .console import Ssot

#: Each command and where it lives, in the order of the groups below: a command's module is
#: imported only when that command runs (or ``--help`` lists them all), so ``ssot get``
#: does not pay for the imports of ``ssot chaos`` on every start.
COMMANDS: dict[str, str] = {
    # the ledger's processes
    "serve": "process_commands:serve", "env": "process_commands:env",
    "writer": "process_commands:writer", "http-worker": "process_commands:http_worker",
    "reconcile": "process_commands:reconcile",
    "project": "process_commands:project", "broadcast": "process_commands:broadcast",
    "digest": "digest:digest",
    "status": "status:status",  # their health on one screen
    # entries
    "put": "entry_commands:put", "patch": "entry_commands:patch", "get": "entry_commands:get",
    "rm": "entry_commands:rm", "revert": "entry_commands:revert",
    "batch": "entry_commands:batch", "history": "entry_commands:history",
    "diff": "entry_commands:diff",
    # namespaces
    "ls": "namespace_commands:ls", "namespace": "namespace_commands:namespace",
    "restore": "namespace_commands:restore",
    # schemas and data quality
    "schema": "schema_commands:schema", "quality": "schema_commands:quality",
    # the change log
    "watch": "change_commands:watch", "audit": "change_commands:audit",
    # schema, views, checks, backups
    "migrate": "migrate_command:migrate", "replay": "replay:replay", "check": "check:check",
    "verify": "verify:verify", "export": "backup.commands:export",
    "import": "backup.commands:import_", "chaos": "chaos:chaos",
    # identity and access
    "token": "access_cli:token", "policy": "access_cli:policy", "whoami": "access_cli:whoami",
    "explain": "access_cli:explain",
    "access": "access_commands:access",  # NATS users from the policy
}


@click.group(cls=Ssot, commands_at=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nexus-ssot", prog_name="ssot",
                      message="%(prog)s %(version)s")
@click.option("--url", envvar="SSOT_URL", default="http://127.0.0.1:8080", show_default=True,
              help="Base URL of the ledger API (env SSOT_URL).")
@click.option("--token", envvar="SSOT_TOKEN", default=None, show_default=False,
              help="Bearer token (env SSOT_TOKEN; default: the admin token in the data "
                   "dir, <SSOT_DATA_DIR>/admin-token, when this user can read it).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None, as_json: bool) -> None:
    """NEXUS SSOT Ledger: event-sourced single source of truth for JSON records."""
    ctx.obj = {"url": url, "json": as_json, "token": token}


def run() -> None:
    """The ``ssot`` command as a process (its console script, ``python -m``): ``main``,
    then, as the process ends, everything it imported and built frozen (``gc.freeze``), so
    that the collections of the interpreter's exit do not walk it all again: ~60 ms of
    the ~0.5 s an ``ssot verify`` took. (Objects are still freed by their reference
    counts; a long-running command froze its start-up heap already, ops/heap.py.)"""
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    run()
