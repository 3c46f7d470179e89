"""What every ``ssot`` command shares at the terminal: the exit codes, the one-line error
on stderr (``error: <code>: <message>``) and the output for people (``out``) or scripts
(``print_json``).

Exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 precondition failed / conflict,
5 server (or database) unreachable or unavailable, 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
import orjson
from rich.console import Console

EXIT_OTHER, EXIT_NOT_FOUND, EXIT_PRECONDITION, EXIT_UNAVAILABLE = 1, 3, 4, 5
EXIT_INTERRUPTED = 130

# Tables keep their full width when piped (no terminal to fit), so scripts see every column.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def fail(exit_code: int, code: str, message: str) -> NoReturn:
    click.echo(f"error: {code}: {message}", err=True)
    sys.exit(exit_code)


def print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
