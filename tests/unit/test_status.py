"""How ``ssot status`` judges the log's state: the thresholds, line by line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nexus_ssot.ledger.operation_runs import LastRun
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.projections.log_state import Follower, LogState
from nexus_ssot.projections.status_checks import AMBER, GREEN, RED, Check, judge, overall, schemas
from nexus_ssot.projections.views import VIEW_NAMES

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def state(**changes: object) -> LogState:
    base: dict[str, object] = dict(
        head=100, now=NOW, broadcaster=Follower("default", 100, 0, 0.0),
        views=[Follower(name, 100, 0, 0.0) for name in VIEW_NAMES], digest_age_seconds=30.0,
        digest_seq=3, digest_lag_seconds=0.0,
        runs={"export": LastRun("export", NOW, True, NOW - timedelta(minutes=5)),
              "verify": LastRun("verify", NOW, True, NOW - timedelta(hours=2))})
    base.update(changes)
    return LogState(**base)  # type: ignore[arg-type]


def levels(found: LogState, **settings: object) -> dict[str, str]:
    return {c.name: c.level for c in judge(found, Settings(**settings))}  # type: ignore[arg-type]


def test_a_current_ledger_is_green_everywhere() -> None:
    assert set(levels(state()).values()) == {GREEN}


def test_a_follower_is_amber_from_5_seconds_behind_and_red_from_a_minute() -> None:
    assert levels(state(broadcaster=Follower("default", 90, 10, 4.9)))["broadcaster"] == GREEN
    assert levels(state(broadcaster=Follower("default", 90, 10, 5.0)))["broadcaster"] == AMBER
    assert levels(state(broadcaster=Follower("default", 9, 91, 60.0)))["broadcaster"] == RED
    assert levels(state(views=[]))["view namespace_stats"] == AMBER  # never ran
    assert levels(state(views=[]), projections=False)["view namespace_stats"] == GREEN


def test_a_backup_older_than_15_minutes_is_amber_and_a_failed_verify_red() -> None:
    old = LastRun("export", NOW, True, NOW - timedelta(minutes=16))
    assert levels(state(runs={"export": old}))["last backup"] == AMBER
    failed = LastRun("verify", NOW, False, NOW - timedelta(hours=1))
    assert levels(state(runs={"verify": failed}))["last verify"] == RED
    assert levels(state(runs={}))["last verify"] == AMBER


def test_events_waiting_long_for_a_digest_mean_the_digester_is_not_running() -> None:
    every = Settings().digest_every_seconds
    assert levels(state(digest_lag_seconds=every))["digests"] == GREEN
    assert levels(state(digest_lag_seconds=10 * every + 600))["digests"] == RED
    assert levels(state(digest_lag_seconds=10 ** 6), digests=False)["digests"] == GREEN


def test_a_notify_queue_that_fills_is_amber_from_5_percent_and_red_from_half() -> None:
    assert levels(state())["notify queue"] == GREEN
    assert levels(state(notify_queue_usage=0.049))["notify queue"] == GREEN
    assert levels(state(notify_queue_usage=0.05))["notify queue"] == AMBER
    assert levels(state(notify_queue_usage=0.5))["notify queue"] == RED


def test_entries_violating_their_schema_make_the_schemas_line_amber() -> None:
    assert schemas((0, 0, 0, 0)).level == GREEN
    assert schemas((2, 0, 0, 5)).level == GREEN
    assert schemas((2, 3, 1, 0)).level == AMBER
    assert schemas(None).level == AMBER  # the quality view not built yet


def test_the_overall_level_is_the_worst_line() -> None:
    def lines(*levels: str) -> list[Check]:
        return [Check(f"part {i}", level, "", "") for i, level in enumerate(levels)]

    assert overall(lines(GREEN, GREEN)) == GREEN
    assert overall(lines(GREEN, AMBER, GREEN)) == AMBER
    assert overall(lines(AMBER, RED, GREEN)) == RED
