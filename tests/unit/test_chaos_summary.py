"""The chaos run's human summary lists the timings its faults measured, and only those."""

from __future__ import annotations

from typing import Any

from nexus_ssot.ops.chaos.checker import summary


def _report(measured: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ok": True, "seed": 1, "duration": 60.0, "clients": 2,
        "operations": {"total": 10, "writes_acknowledged": 4, "writes_rejected": 1,
                       "writes_unknown": 0, "reads": 5, "retried": 0},
        "events": 4, "subscribers": {"sse": 4},
        "faults": {"count": len(measured), "by_kind": {}, "failed": [], "skipped": [],
                   "measured": measured},
        "anomalies": {},
    }


def test_each_fault_that_measured_a_time_has_a_line_and_no_other_does() -> None:
    text = summary(_report([
        {"kind": "kill_api", "writer_outlived_s": 0.104, "writer_still_alive": False},
        {"kind": "kill_writer", "killed": [4242]},
        {"kind": "slow_clients", "connections": 64, "opened": 64, "closed_by_server": 0},
    ]))
    lines = text.splitlines()
    assert "  kill_api: writer_outlived 0.104 s" in lines
    assert not [line for line in lines if line.startswith(("  kill_writer", "  slow_clients"))]
