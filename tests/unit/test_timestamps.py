"""A commit time as the leaves, the CloudEvents and the API spell it: RFC 3339 UTC with
microseconds, exactly what ``strftime("%Y-%m-%dT%H:%M:%S.%fZ")`` writes (the digests'
leaves are hashed over it: not one byte may differ from the spelling of the events
already digested)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from nexus_ssot.ledger.chain import timestamp

ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)),
                         timezone(timedelta(hours=-9, minutes=-30))])


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=ZONES))
def test_a_commit_time_is_spelled_as_strftime_spells_it(moment: datetime) -> None:
    assert timestamp(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_whole_seconds_keep_their_six_digits() -> None:
    assert timestamp(datetime(2026, 12, 5, 8, 0, tzinfo=UTC)) == "2026-12-05T08:00:00.000000Z"
    assert timestamp(datetime(999, 1, 1, tzinfo=UTC)) == \
        datetime(999, 1, 1, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
