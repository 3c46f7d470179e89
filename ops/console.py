"""What every ``ssot`` command shares at the terminal: the exit codes, the one-line error
on stderr (``error: <code>: <message>``) and the output for people (``out``) or scripts
(``print_json``).

The exit codes, one table for every command (docs/operations.md#exit-codes):

    0    done (a check found nothing wrong)
    1    a check found a problem (verify, check, reconcile), a refused import, a refusal
         by the access policy (401, 403), any other failure
    2    usage: a bad option, argument or setting, or a request the server refused as
         malformed (400, 406, 413, 415)
    3    not found (404)
    4    a precondition failed or a conflict (409, 412, 422)
    5    unavailable: the database, NATS or the API not configured or unreachable, or the
         server asking to retry (429, 5xx)
    130  interrupted

``Ssot``, the command group's class, turns what a command leaves uncaught into that table:
click's usage errors, an unreachable database or NATS server, an error of the ledger's
tree raised in process, an interrupt.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import click
import orjson
from rich.console import Console

EXIT_OTHER, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_PRECONDITION, EXIT_UNAVAILABLE = 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
EXIT_CODES = frozenset({EXIT_OTHER, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_PRECONDITION,
                        EXIT_UNAVAILABLE, EXIT_INTERRUPTED})

# Tables keep their full width when piped (no terminal to fit), so scripts see every column.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def fail(exit_code: int, code: str, message: str) -> NoReturn:
    """Print ``error: <code>: <message>`` on one line (a driver's message may span several)
    and exit with ``exit_code``."""
    click.echo(f"error: {code}: {' '.join(message.split())}", err=True)
    sys.exit(exit_code)


def not_configured(*settings: str) -> NoReturn:
    """Exit 5: the command needs ``settings`` (``SSOT_DATABASE_URL``, …) and has none."""
    fail(EXIT_UNAVAILABLE, "not_configured", f"set {' and '.join(settings)}")


def print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def exit_code_of_status(status: int) -> int:
    """The exit code of an HTTP error status, by the table above."""
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (409, 412, 422):
        return EXIT_PRECONDITION
    if status == 429 or status >= 500:
        return EXIT_UNAVAILABLE
    if status in (400, 406, 413, 415):
        return EXIT_USAGE
    return EXIT_OTHER


class Ssot(click.Group):
    """The ``ssot`` group: every failure a command leaves uncaught ends as one line on
    stderr with its exit code from the table, never as a traceback or click's usage
    block.

    ``commands_at`` names each command's ``module:attribute`` within this package: a
    command's module is imported when the command is asked for, not when ``ssot`` starts."""

    def __init__(self, *args: Any, commands_at: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands_at = dict(commands_at or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.commands_at})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.commands_at:
            module, attribute = self.commands_at[cmd_name].split(":")
            package = __name__.rpartition(".")[0]
            command = getattr(importlib.import_module(f".{module}", package), attribute)
            assert command.name == cmd_name, (command.name, cmd_name)
            self.add_command(command)
        return super().get_command(ctx, cmd_name)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:
            hint = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            fail(EXIT_USAGE, "usage", e.format_message() + hint)
        except click.ClickException as e:
            fail(e.exit_code, "error", e.format_message())
        except click.Abort:
            fail(EXIT_INTERRUPTED, "interrupted", "stopped before it finished")
        except Exception as e:
            known = failure_of(e)
            if known is None:
                raise  # a fault of ours: its traceback is what to report
            fail(*known)
        sys.exit(rv if isinstance(rv, int) else 0)


def failure_of(error: Exception) -> tuple[int, str, str] | None:
    """(exit code, code, message) of an expected failure; None for a fault of ours. The
    drivers' modules are looked up, not imported: one that was never imported raised
    nothing, and ``ssot`` keeps starting fast."""
    from nexus_ssot.ledger.errors import (
        EditConflict,
        InvalidInput,
        LedgerError,
        NotFound,
        PreconditionFailed,
        Unavailable,
        Unprocessable,
    )
    from nexus_ssot.ledger.redaction import redact_url

    if isinstance(error, LedgerError):
        exit_code = (EXIT_USAGE if isinstance(error, InvalidInput) else EXIT_NOT_FOUND
                     if isinstance(error, NotFound) else EXIT_PRECONDITION
                     if isinstance(error, PreconditionFailed | EditConflict | Unprocessable)
                     else EXIT_UNAVAILABLE if isinstance(error, Unavailable) else EXIT_OTHER)
        return exit_code, error.code, error.message
    text = redact_url(str(error).strip()) or type(error).__name__
    psycopg, nats_errors = sys.modules.get("psycopg"), sys.modules.get("nats.errors")
    if psycopg is not None and isinstance(error, psycopg.OperationalError):
        return EXIT_UNAVAILABLE, "unreachable", f"the database: {text}"
    if nats_errors is not None and isinstance(error, nats_errors.NoServersError
                                              | nats_errors.TimeoutError):
        return EXIT_UNAVAILABLE, "unreachable", f"NATS: {text}"
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(error, httpx.TransportError):
        return EXIT_UNAVAILABLE, "unreachable", f"the API: {text}"
    pydantic = sys.modules.get("pydantic")
    if (pydantic is not None and isinstance(error, pydantic.ValidationError)
            and error.title == "Settings"):
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return EXIT_USAGE, "invalid_setting", f"SSOT_{where.upper()}: {first.get('msg')}"
    return None
