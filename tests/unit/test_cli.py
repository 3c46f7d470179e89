"""The ``ssot`` group finds each command where its table says."""

from __future__ import annotations

import click

from nexus_ssot.ops.cli import COMMANDS, main


def test_every_command_is_found_where_the_table_says_under_its_own_name() -> None:
    ctx = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name
    assert main.list_commands(ctx) == sorted(COMMANDS)
    assert main.get_command(ctx, "no-such-command") is None

