"""The ``ssot`` command: run the server, and read and write entries over the HTTP API.

This module is the command group; the commands live with what they work on (entries,
namespaces, the change log, the ledger's processes, backups, views, checks).

Every command exits with the codes of one table (``console.py``; docs/operations.md#exit-
codes) and prints an error as one line on stderr: ``error: <code>: <message>``.
"""

from __future__ import annotations

import click

from .access_cli import explain, policy, token, whoami
from .access_commands import access
from .backup.commands import export, import_
from .change_commands import audit, watch
from .chaos import chaos
from .check import check
from .console import Ssot
from .digest import digest
from .entry_commands import batch, diff, get, history, patch, put, revert, rm
from .migrate_command import migrate
from .namespace_commands import ls, namespace, restore
from .process_commands import broadcast, env, project, reconcile, serve, writer
from .replay import replay
from .schema_commands import quality, schema
from .status import status
from .verify import verify


@click.group(cls=Ssot, context_settings={"help_option_names": ["-h", "--help"]})
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


for command in (
    serve, env, writer, reconcile, project, broadcast, digest,  # the ledger's processes
    status,  # their health on one screen
    put, patch, get, rm, revert, batch, history, diff,  # entries
    ls, namespace, restore,  # namespaces
    schema, quality,  # schemas and data quality
    watch, audit,  # the change log
    migrate, replay, check, verify, export, import_, chaos,  # schema, views, checks, backups
    token, policy, whoami, explain,  # identity and access
    access,  # NATS users from the policy
):
    main.add_command(command)


if __name__ == "__main__":
    main()
