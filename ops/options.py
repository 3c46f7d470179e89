"""The option types the ``ssot`` commands share, checked on the command line: a value
that is not valid is a usage error (exit 2) naming its option, before a server is asked,
whichever command takes it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from nexus_ssot.ledger.moments import representable

#: A global log position: 0, 1, 2, …
POSITION = click.IntRange(min=0)


def moment(text: str) -> datetime:
    """``text`` as an RFC 3339 time with its UTC offset; ValueError saying what is wrong."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)"
                         ) from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (e.g. 2026-01-31T12:00:00Z)")
    if not representable(value):
        raise ValueError(f"{text!r} lies outside the years 1 to 9999 once taken to UTC")
    return value


class Time(click.ParamType[str, Any]):
    """An RFC 3339 time with its UTC offset, passed on as written."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        try:
            moment(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return str(value).strip()


TIME = Time()
