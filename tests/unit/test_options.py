"""The CLI's times (ops/options.py): RFC 3339 with a UTC offset, within the years a
datetime holds once taken to UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nexus_ssot.ops.options import moment


def test_a_time_with_its_offset_is_read_as_written() -> None:
    assert moment(" 2026-01-31T12:00:00+01:00 ") == datetime(2026, 1, 31, 11, tzinfo=UTC)


@pytest.mark.parametrize(("text", "says"), [
    ("yesterday", "is not an RFC 3339 time"),
    ("2026-01-31T12:00:00", "has no UTC offset"),
    ("0001-01-01T00:00:00+00:01", "outside the years 1 to 9999"),
    ("9999-12-31T23:59:00-00:01", "outside the years 1 to 9999"),
])
def test_a_time_that_is_not_one_says_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        moment(text)
