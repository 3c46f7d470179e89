"""The judging behind ``ssot status`` and ``GET /v1/status``: what the log's state
(``log_state.py``) says, line by line, each line green, amber or red with the threshold
that judged it. Pure: no I/O, tested on its own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: `ssot` imports this module for every command
    from nexus_ssot.ledger.settings import Settings

    from .log_state import Follower, LogState

GREEN, AMBER, RED = "green", "amber", "red"

#: A follower (the broadcaster, a view): amber from this many seconds behind, red from
#: the second figure (the change-delivery SLO is 50 ms; a few seconds is a stall).
LAG_AMBER, LAG_RED = 5.0, 60.0
#: The backup objective is an export every 15 minutes: amber past it, red past an hour.
BACKUP_AMBER, BACKUP_RED = 15 * 60.0, 60 * 60.0
#: A full verify is expected daily: amber after a day without a success, red after a week.
VERIFY_AMBER, VERIFY_RED = 25 * 3600.0, 7 * 86_400.0
#: PostgreSQL's NOTIFY queue, the share in use: a working ledger keeps it near 0 (every
#: LISTENer drains it as commits come); PostgreSQL itself warns from half full.
NOTIFY_QUEUE_AMBER, NOTIFY_QUEUE_RED = 0.05, 0.5


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    value: str
    threshold: str


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def level_of(value: float, amber: float, red: float) -> str:
    """Green under ``amber``, amber from it, red from ``red``."""
    return GREEN if value < amber else AMBER if value < red else RED


def by_age(name: str, age: float, amber: float, red: float, what: str) -> Check:
    return Check(name, level_of(age, amber, red), f"{what} {_seconds(age)}",
                 f"amber >= {_seconds(amber)}, red >= {_seconds(red)}")


def follower(name: str, found: Follower | None, expected: bool) -> Check:
    if found is None:
        return Check(name, AMBER if expected else GREEN,
                     "never ran" if expected else "off", "runs under ssot serve")
    check = by_age(name, found.lag_seconds, LAG_AMBER, LAG_RED, "lag")
    return Check(name, check.level, f"{check.value}, {found.lag_events} events "
                 f"(at {found.position})", check.threshold)


def last_run(name: str, state: LogState, operation: str, amber: float, red: float,
             never: str) -> Check:
    run = state.runs.get(operation)
    if run is None:
        return Check(name, AMBER, f"never ({never})", f"amber >= {_seconds(amber)}, "
                     f"red >= {_seconds(red)} since the last success")
    if not run.ok:
        return Check(name, RED, f"last run failed {_seconds(_age(state.now, run.finished_at))}"
                     " ago", "red when the last run failed")
    assert run.last_ok_at is not None
    return by_age(name, _age(state.now, run.last_ok_at), amber, red, "succeeded, age")


def schemas(found: tuple[int, int, int, int] | None) -> Check:
    """The data quality of the namespaces with a schema (the schema_quality view)."""
    threshold = "amber when an entry violates its namespace's schema"
    if found is None:
        return Check("schemas", AMBER, "the quality view is not built yet", threshold)
    with_schema, violating, namespaces, refused = found
    if with_schema == 0:
        return Check("schemas", GREEN, "no namespace has a schema", threshold)
    return Check("schemas", AMBER if violating else GREEN,
                 f"{with_schema} namespaces with a schema, {violating} entries violate it in "
                 f"{namespaces}; {refused} writes refused in the last hour", threshold)


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


def run_views(settings: Settings) -> dict[str, bool]:
    """Each view's name, and whether ``ssot serve`` runs it with these settings (a view
    whose outside service is not configured is not run)."""
    from .views import SERVICE_VIEWS, SQL_VIEWS, NotConfigured

    runs = dict.fromkeys(SQL_VIEWS, settings.projections)
    for name, make in SERVICE_VIEWS.items():
        try:
            make(settings)
            runs[name] = settings.projections
        except NotConfigured:
            runs[name] = False
    return runs


def judge(state: LogState, settings: Settings) -> list[Check]:
    """What the log's state says, line by line (pure: no I/O)."""
    checks = [follower("broadcaster", state.broadcaster, settings.broadcast)]
    views = {v.name: v for v in state.views}
    checks += [follower(f"view {name}", views.get(name), expected)
               for name, expected in run_views(settings).items()]
    if not settings.digests:
        checks.append(Check("digests", GREEN, "off", "SSOT_DIGESTS=false"))
    else:
        # A digest comes after digest_every_seconds when there are new events: an event
        # waiting much longer means the digester is not running.
        every = settings.digest_every_seconds
        lag = by_age("digests", state.digest_lag_seconds, 2 * every + LAG_RED,
                     10 * every + 600, "oldest undigested event")
        age = ("no digest yet" if state.digest_age_seconds is None
               else f"latest {_seconds(state.digest_age_seconds)} ago")
        checks.append(Check("digests", lag.level, f"{age}; {lag.value}", lag.threshold))
    checks.append(notify_queue(state.notify_queue_usage))
    checks.append(last_run("last backup", state, "export", BACKUP_AMBER, BACKUP_RED,
                           "run ssot export on a schedule"))
    checks.append(last_run("last verify", state, "verify", VERIFY_AMBER, VERIFY_RED,
                           "run ssot verify on a schedule"))
    return checks


def notify_queue(usage: float) -> Check:
    """PostgreSQL's NOTIFY queue: each commit's NOTIFY waits in it until every LISTENer
    has read it, and carries the commit's events when they are small (migration 0024), so
    a LISTENer that stopped reading (a stuck process, a session idle in a transaction)
    fills it within hours under load; full, every commit fails."""
    return Check("notify queue", level_of(usage, NOTIFY_QUEUE_AMBER, NOTIFY_QUEUE_RED),
                 f"{usage * 100:.1f} % used",
                 f"amber from {NOTIFY_QUEUE_AMBER * 100:g} %, red from "
                 f"{NOTIFY_QUEUE_RED * 100:g} %: a LISTENer is not reading "
                 "(pg_stat_activity); full, commits fail")


def overall(checks: list[Check]) -> str:
    """The worst level of ``checks``: red if any is red, else amber if any is amber."""
    levels = {c.level for c in checks}
    return RED if RED in levels else AMBER if AMBER in levels else GREEN
