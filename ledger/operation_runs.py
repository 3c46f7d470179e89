"""The last run of the operations monitoring watches (``verify``, ``export``): recorded by
whoever ran one, read by ``ssot status`` and ``GET /metrics`` (table ``operation_runs``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import psycopg

Operation = Literal["verify", "export"]

_RECORD = (
    "INSERT INTO operation_runs AS r (operation, finished_at, ok, last_ok_at, detail)"
    " VALUES (%(op)s, clock_timestamp(), %(ok)s,"
    "  CASE WHEN %(ok)s THEN clock_timestamp() END, %(detail)s::jsonb)"
    " ON CONFLICT (operation) DO UPDATE SET finished_at = EXCLUDED.finished_at,"
    "  ok = EXCLUDED.ok, detail = EXCLUDED.detail,"
    "  last_ok_at = COALESCE(EXCLUDED.last_ok_at, r.last_ok_at)"
)

#: Each operation's last run: (operation, finished_at, ok, last_ok_at), by the database's
#: clock; also ``now``, the database's clock at the time of the query.
LAST_RUNS = "SELECT operation, finished_at, ok, last_ok_at FROM operation_runs"


@dataclass(frozen=True)
class LastRun:
    operation: str
    finished_at: datetime
    ok: bool
    last_ok_at: datetime | None


def record_run(database_url: str, operation: Operation, ok: bool,
               detail: dict[str, Any] | None = None) -> None:
    """Record that ``operation`` just finished, successfully or not."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(_RECORD, {"op": operation, "ok": ok,
                               "detail": orjson.dumps(detail or {}).decode()})


def try_record_run(database_url: str, operation: Operation, ok: bool,
                   detail: dict[str, Any] | None = None) -> str | None:
    """``record_run``, for a command whose own work is done whatever happens here (a
    read-only role, say): None, or why the run could not be recorded."""
    try:
        record_run(database_url, operation, ok, detail)
    except psycopg.Error as e:
        return f"the run was not recorded for monitoring ({type(e).__name__}: {e})".strip()
    return None


def verify_detail(report: Any) -> dict[str, Any]:
    """What a verify run records of its report (integrity.verify's ``Report``)."""
    return {"from_position": report.from_position, "to_position": report.to_position,
            "events": report.events, "problem_count": report.problem_count}


async def record_run_async(conn: psycopg.AsyncConnection[Any], operation: Operation,
                           ok: bool, detail: dict[str, Any] | None = None) -> None:
    await conn.execute(_RECORD, {"op": operation, "ok": ok,
                                 "detail": orjson.dumps(detail or {}).decode()})


def last_runs(rows: list[tuple[Any, ...]]) -> dict[str, LastRun]:
    """The rows of ``LAST_RUNS`` by operation."""
    return {row[0]: LastRun(*row) for row in rows}
