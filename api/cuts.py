"""Where a read (or a restore) at a past point cuts the log: at a position the log has
reached, or at the last event committed at or before a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nexus_ssot.ledger.errors import InvalidInput
from nexus_ssot.projections import entry_at
from nexus_ssot.projections.runtime import head_position


async def cut_at(conn: Any, as_of: datetime | None, position: int | None) -> int:
    """The log position of ``?position=`` (checked against the head) or of ``?as_of=``."""
    if position is not None:
        await within_head(conn, position, "position")
        return position
    assert as_of is not None
    cut: int = await entry_at.position_at(conn, as_of)
    return cut


async def within_head(conn: Any, position: int, field: str) -> int:
    """The log's head, once ``position`` (of the parameter ``field``) is no later than it.
    A position past the head is one no write has returned: read there, it would show
    today's state as if it were a past one, and waited for, it might never come."""
    head: int = await head_position(conn)
    if position > head:
        raise InvalidInput(f"{field} {position} is beyond the log's head ({head}); give a "
                           "position a write returned", code="position_beyond_head",
                           field=field, head_position=head)
    return head
