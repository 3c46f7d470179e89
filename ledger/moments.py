"""A moment the ledger can take: one whose UTC equivalent a ``datetime`` holds (years 1
to 9999), as every time the database returns is read back into one. PostgreSQL accepts
``0001-01-01T00:00:00+00:01`` (a minute before year 1 in UTC); psycopg cannot read it
back, which made it an error of the server's instead of the caller's."""

from __future__ import annotations

from datetime import UTC, datetime


def representable(moment: datetime) -> bool:
    """Whether ``moment``, taken to UTC, is still a ``datetime`` (a naive one is: it is
    refused elsewhere, for its missing time zone)."""
    if moment.tzinfo is None:
        return True
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True
