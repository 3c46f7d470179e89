"""The bench's report logic (ops/bench): the CPU budget against its targets, noisy steps,
the baselines' rows and which results become ``latest`` — on made-up figures, without
running the bench."""

from __future__ import annotations

import os
from typing import Any

import pytest

from nexus_ssot.ops.bench import broadcast, budget, etcd, projections, report, turns
from nexus_ssot.ops.bench.budget import FOLLOWERS, HTTP, OTHER, WRITER, ThreadRow
from nexus_ssot.ops.bench.measuring import (
    NOISY_OTHER,
    CpuMeter,
    ProcessRow,
    _Snapshot,
    bearer,
    header_dict,
)

QUIET, BUSY = 2.0, NOISY_OTHER + 10


def http_step(rate: float, *, p50: float = 1.0, p99: float = 10.0, other: float = QUIET,
              non_2xx: int = 0) -> dict[str, Any]:
    return {"requests_per_s": rate, "p50_ms": p50, "p99_ms": p99, "non_2xx": non_2xx,
            "errors": 0, "cpu": {"other": other}, "mean_batch": None}


def phase(ms: dict[str, float], *, other: float = QUIET, batch: float | None = 1.0,
          caught_up: bool = True, total: float = 0.5) -> dict[str, Any]:
    return {"ms_per_op": ms, "cpu": {"other": other}, "mean_batch": batch,
            "followers_caught_up": caught_up, "seconds": 10.0, "total_percent_of_core": total,
            "ops": 100, "threads_ms_per_op": {}, "percent_of_core": {}}


def good_budget(**changes: Any) -> dict[str, Any]:
    phases = {
        "put_1": phase({HTTP: 0.4, WRITER: 0.45, FOLLOWERS: 0.25}),
        "put_16": phase({HTTP: 0.4, WRITER: 0.2, FOLLOWERS: 0.2}, batch=5.1),
        "put_64": phase({HTTP: 0.3, WRITER: 0.14, FOLLOWERS: 0.2}, batch=15.8),
        "get_1": phase({HTTP: 0.2, WRITER: 0.0, FOLLOWERS: 0.0}),
        "idle": phase({HTTP: 4.0, WRITER: 0.0, FOLLOWERS: 3.0}, batch=None, total=0.7),
    }
    phases.update(changes)
    return {"phases": phases}


def base_report(**parts: Any) -> dict[str, Any]:
    return {"started_at": "2026-01-01T00:00:00+00:00", "quick": False, "only": None,
            "duration_s": 10.0, "server_workers": 2,
            "machine": {"nproc": 2, "python": "3.11", "git": {"commit": "abc"}}, **parts}


def by_step(rows: list[dict[str, Any]], start: str) -> list[dict[str, Any]]:
    return [row for row in rows if row["step"].startswith(start)]


# --- the CPU budget --------------------------------------------------------------------------


def test_a_budget_within_every_target_passes() -> None:
    rows = budget.evaluate(good_budget())
    assert len(rows) == 10
    assert all(row["passed"] is True for row in rows), rows
    assert [report.status(r) for r in report.evaluate(base_report(budget=good_budget()))] \
        == ["PASS"] * 10


def test_each_kind_is_held_to_its_own_target() -> None:
    rows = budget.evaluate(good_budget(
        put_1=phase({HTTP: 0.51, WRITER: 0.5, FOLLOWERS: 0.31}),
        put_16=phase({HTTP: 0.51, WRITER: 0.9, FOLLOWERS: 0.31}, batch=5.0),
        put_64=phase({HTTP: 0.3, WRITER: 0.16, FOLLOWERS: 0.3}, batch=16.0),
        get_1=phase({HTTP: 0.26})))
    verdicts = {(kind, at): row["passed"] for row in rows
                for kind in (HTTP, WRITER, FOLLOWERS)
                for at in ("PUT @1 ", "PUT @16", "PUT @64", "GET")
                if f", {kind}, " in row["step"] and at in row["step"]}
    assert verdicts == {
        (HTTP, "PUT @1 "): False, (WRITER, "PUT @1 "): True, (FOLLOWERS, "PUT @1 "): False,
        (HTTP, "PUT @16"): False, (FOLLOWERS, "PUT @16"): False,
        (HTTP, "PUT @64"): True, (WRITER, "PUT @64"): False, (FOLLOWERS, "PUT @64"): True,
        (HTTP, "GET"): False}


def test_the_writers_batch_target_fails_unless_measured_at_batches_of_about_16() -> None:
    rows = budget.evaluate(good_budget(
        put_64=phase({HTTP: 0.3, WRITER: 0.05, FOLLOWERS: 0.1}, batch=6.2)))
    row = next(r for r in rows if f", {WRITER}, PUT @64" in r["step"])
    assert row["passed"] is False and "mean batch 6.2" in row["note"]
    assert "(writer batches of ~16, mean batch 6.2)" in row["step"]


def test_idle_must_stay_under_one_percent_of_a_core() -> None:
    rows = budget.evaluate(good_budget(idle=phase({HTTP: 6.0, FOLLOWERS: 4.0}, total=1.0)))
    idle = by_step(rows, "(r) idle")
    assert idle[0]["passed"] is False and idle[0]["unit"] == "% of a core"


def test_followers_that_never_caught_up_fail_whatever_their_cpu() -> None:
    rows = budget.evaluate(good_budget(
        put_16=phase({HTTP: 0.1, WRITER: 0.1, FOLLOWERS: 0.01}, caught_up=False)))
    row = next(r for r in rows if "followers" in r["step"] and "@16" in r["step"])
    assert row["passed"] is False and "not caught up" in row["note"]


def test_a_missing_kind_has_no_verdict() -> None:
    rows = budget.evaluate(good_budget(put_1=phase({WRITER: 0.1, FOLLOWERS: 0.1})))
    row = next(r for r in rows if "HTTP workers, PUT @1 " in r["step"])
    assert row["passed"] is None and row["value"] is None


def test_processes_are_told_apart_by_their_command_line() -> None:
    root = 100
    assert budget.kind_of(root, root, "/venv/bin/python /venv/bin/ssot serve") == FOLLOWERS
    assert budget.kind_of(101, root, "/venv/bin/python -m nexus_ssot.ops.cli writer "
                                     "--socket /run/x.sock") == WRITER
    assert budget.kind_of(102, root, "/venv/bin/python -m nexus_ssot.ops.cli http-worker "
                                     "--fd 11 --ready-fd 15") == HTTP
    assert budget.kind_of(103, root, "/venv/bin/python -c from multiprocessing."
                                     "resource_tracker import main;main(4)") == OTHER
    assert budget.kind_of(104, root, "nats-server -js") == OTHER


def test_cpu_is_added_up_per_kind_and_per_thread_name() -> None:
    tick = budget._TICK_MS
    before = {(1, 1): ThreadRow(FOLLOWERS, "ssot-broadcaste", 10),
              (2, 2): ThreadRow(HTTP, "python", 5), (3, 3): ThreadRow(HTTP, "python", 7)}
    after = {(1, 1): ThreadRow(FOLLOWERS, "ssot-broadcaste", 14),
             (2, 2): ThreadRow(HTTP, "python", 6), (3, 3): ThreadRow(HTTP, "python", 9),
             (3, 4): ThreadRow(HTTP, "asyncio_0", 2)}  # born meanwhile: counts whole
    kinds, threads = budget.spent(before, after)
    assert kinds == {FOLLOWERS: 4 * tick, HTTP: 5 * tick}
    assert threads == {f"{FOLLOWERS} / ssot-broadcaste": 4 * tick,
                       f"{HTTP} / python": 3 * tick, f"{HTTP} / asyncio_0": 2 * tick}
    figures = budget.phase_figures("put_1", 2, 0.5, kinds, threads,
                                   {"other": 1.0, "postgres": 40.0, "nats": None})
    assert figures["ms_per_op"][HTTP] == round(5 * tick / 2, 3)
    # 40 % of a core for 0.5 s is 200 ms, over 2 operations; a server not measured is left out
    assert figures["beside_ms_per_op"] == {"postgres": 100.0}
    table = budget.summarize({"phases": {"put_1": figures}})
    assert "| PostgreSQL | NATS |" in table[3]
    assert f"| {round(4 * tick / 2, 3):.3f} | 100.000 | — |" in table[5]
    assert figures["total_percent_of_core"] == round(9 * tick / 0.5 / 10, 2)
    assert next(iter(figures["threads_ms_per_op"])) == f"{FOLLOWERS} / ssot-broadcaste"


# --- noisy steps -----------------------------------------------------------------------------


def test_a_passing_step_on_a_busy_machine_is_noisy_and_a_failing_one_still_fails() -> None:
    rep = base_report(
        library={"saves_per_s": 1000.0, "cpu": {}},
        http={"put_16": http_step(2500, other=BUSY), "put_64": http_step(1000, other=BUSY),
              "put_1": http_step(500, other=QUIET)},
        budget=good_budget(get_1=phase({HTTP: 0.2}, other=BUSY)))
    rows = report.evaluate(rep)
    put16 = by_step(rows, "(c) PUT If-Match @16")[0]
    put64 = by_step(rows, "(c) PUT If-Match @64")[0]
    assert put16["passed"] is True and report.status(put16) == "NOISY"
    assert put64["passed"] is False and report.status(put64) == "FAIL"
    assert report.status(by_step(rows, "(c) PUT If-Match @1")[0]) == "PASS"
    assert report.status(by_step(rows, "(r) CPU per GET")[0]) == "NOISY"
    assert set(report.noisy_steps(rep, rows)) == {put16["step"], put64["step"],
                                                  by_step(rows, "(r) CPU per GET")[0]["step"]}
    text = report.markdown(rep, rows)
    assert "**Noisy run**" in text and "| NOISY |" in text


def test_the_header_gives_the_hosts_speed_at_the_start_and_the_end() -> None:
    rep = base_report(budget=good_budget())
    text = report.markdown(rep, report.evaluate(rep))
    assert "Host speed" not in text  # a report from before the figures were taken
    rep["machine"]["speed"] = {"adds_10m_s": 0.8, "dict_sort_1m_s": 0.3141}
    rep["machine"]["speed_at_end"] = {"adds_10m_s": 0.95, "dict_sort_1m_s": 0.4}
    text = report.markdown(rep, report.evaluate(rep))
    assert ("Host speed (CPU seconds, best of three; lower is faster): 10M Python additions "
            "0.800 s, 1M dict entries built and sorted 0.314 s; at the end: 10M Python "
            "additions 0.950 s, 1M dict entries built and sorted 0.400 s.") in text
    rep["machine"]["speed"]["wakeup_round_trip_us"] = 18.25
    text = report.markdown(rep, report.evaluate(rep))
    assert ("1M dict entries built and sorted 0.314 s, a byte to another process and back "
            "18.2 µs of wall clock; at the end: 10M Python additions 0.950 s") in text


def test_a_quiet_run_says_nothing_of_noise() -> None:
    rep = base_report(budget=good_budget())
    rows = report.evaluate(rep)
    assert report.noisy_steps(rep, rows) == []
    assert "Noisy" not in report.markdown(rep, rows)


def test_a_noisy_line_in_a_parts_own_table_makes_the_run_noisy() -> None:
    rep = base_report(broadcast={"summary_md": ["| (g) commit → NATS | … | PASS |"]})
    assert report.noisy_steps(rep, []) == []
    rep["broadcast"]["summary_md"].append("| (g) commit → NATS | … | NOISY |")
    assert report.noisy_steps(rep, []) == ["(broadcast)"]
    assert report.results_name(rep, [], "S") == ("bench-S-noisy", False)


def test_only_a_full_quiet_run_replaces_latest() -> None:
    quiet = [{"step": "x", "noisy": False}]
    noisy = [{"step": "x", "noisy": True}]
    assert report.results_name(base_report(), quiet, "S") == ("bench-S", True)
    assert report.results_name(base_report(), noisy, "S") == ("bench-S-noisy", False)
    assert report.results_name(base_report(only="budget"), quiet, "S") == (
        "bench-S-budget", False)


# --- headline targets and baselines ----------------------------------------------------------


def test_put_at_one_connection_must_answer_within_two_ms_at_the_median() -> None:
    slow = report.evaluate(base_report(http={"put_1": http_step(400, p50=2.0)}))
    fast = report.evaluate(base_report(http={"put_1": http_step(600, p50=1.6)}))
    assert slow[0]["passed"] is False and fast[0]["passed"] is True
    assert "p50 < 2 ms" in fast[0]["target"]


def in_turns(*rounds: tuple[float, float, float], other: float = QUIET) -> dict[str, Any]:
    """(c) in turns from rounds of (library, PUT @16, PUT @64) rates."""
    rates = [{"library": b, "put_16": p16, "put_64": p64} for b, p16, p64 in rounds]
    slots = [{"round": i, "label": label, "requests_per_s": rate, "p99_ms": 12.0}
             for i, r in enumerate(rates) for label, rate in r.items() if label != "library"]
    return {"rounds": rates, "slots": slots, "slot_s": 3.0, "cpu": {"other": other},
            "ratios": turns.ratios(rates)}


def test_rounds_in_turns_reverse_their_order_every_other_round() -> None:
    assert turns.order(0) == ["library", "put_16", "put_64"]
    assert turns.order(1) == ["put_64", "put_16", "library"]
    assert turns.order(2) == turns.order(0)


def test_the_ratio_in_turns_is_the_median_of_each_rounds_own_ratio() -> None:
    # the host fast in round 2 for both sides: the totals lean on it, the median does not
    got = turns.ratios([{"library": 1000, "put_16": 1900, "put_64": 2400},
                        {"library": 2000, "put_16": 4200, "put_64": 5000},
                        {"library": 1000, "put_16": 2100, "put_64": 2600}])
    assert got["put_16"]["round_ratios"] == [1.9, 2.1, 2.1]
    assert got["put_16"]["median"] == 2.1 and got["put_16"]["range"] == [1.9, 2.1]
    assert got["put_16"]["totals"] == round(8200 / 4000, 3)
    assert got["put_64"]["median"] == 2.5 and got["put_64"]["rounds"] == 3
    assert turns.ratios([{"library": 0.0, "put_16": 10.0, "put_64": 10.0}]) == {}


def test_the_put_rows_are_judged_by_the_rounds_in_turns_when_they_ran() -> None:
    http = {"put_16": http_step(1900), "put_64": http_step(2400)}
    alone = report.evaluate(base_report(library={"saves_per_s": 1000}, http=http))
    assert [row["passed"] for row in by_step(alone, "(c)")] == [False, False]
    beside = report.evaluate(base_report(library={"saves_per_s": 1000}, http=http,
                                         turns=in_turns((900, 1900, 2300), (950, 2000, 2450),
                                                        (1000, 2100, 2600))))
    put16, put64 = by_step(beside, "(c)")
    assert put16["ratio"] == 2.105 and put16["passed"] is True
    assert put64["ratio"] == 2.579 and put64["passed"] is True
    assert "against (b) alone 1.90x" in put16["note"] and "3 rounds" in put16["note"]
    slow = report.evaluate(base_report(library={"saves_per_s": 1000},
                                       http={"put_16": http_step(2300, p99=60.0)},
                                       turns=in_turns((1000, 2100, 2600))))
    assert by_step(slow, "(c)")[0]["passed"] is False  # the p99 is still (c)'s own
    busy = report.evaluate(base_report(library={"saves_per_s": 1000}, http=http,
                                       turns=in_turns((1000, 2100, 2600), other=BUSY)))
    assert all(row["noisy"] for row in by_step(busy, "(c)"))


def test_rounds_in_turns_alone_make_rows_of_their_own_and_a_table() -> None:
    made = base_report(only="turns", turns=in_turns((1000, 1900, 2400), (1000, 2100, 2600)))
    rows = report.evaluate(made)
    put16, put64 = by_step(rows, "(c)")
    assert put16["step"] == "(c) PUT If-Match @16, in turns with the library"
    assert put16["ratio"] == 2.0 and put16["passed"] is True and put16["value"] == 2000
    assert put64["ratio"] == 2.5 and put64["passed"] is True
    text = report.markdown(made, rows)
    assert "| 1 | 1,000 | 1,900 (1.90x) | 2,400 (2.40x) |" in text
    assert "| 2 | 1,000 | 2,100 (2.10x) | 2,600 (2.60x) |" in text
    full = base_report(server={"acknowledged_writes": 100_127, "events_in_store": 179_000},
                       turns={**in_turns((1000, 2100, 2600)), "acknowledged_writes": 78_873})
    assert ("Writes acknowledged: 100,127 (and 78,873 before them, by (c) in turns); events "
            "stored: 179,000;") in report.markdown(full, report.evaluate(full))


def test_get_is_measured_against_the_trivial_fastapi_endpoint() -> None:
    trivial = {"get_16": http_step(8000)}
    half = report.evaluate(base_report(http={"get_16": http_step(4100)}, baseline=trivial))
    get, floor = by_step(half, "(d)")[0], by_step(half, "(s)")[0]
    assert get["passed"] is True and get["note"] == "0.51x trivial FastAPI"
    assert floor["passed"] is None and floor["value"] == 8000
    short = report.evaluate(base_report(http={"get_16": http_step(3900)}, baseline=trivial))
    assert by_step(short, "(d)")[0]["passed"] is False  # ≥ 3,000 req/s but 0.49x
    alone = report.evaluate(base_report(http={"get_16": http_step(3100)}))
    assert by_step(alone, "(d)")[0]["passed"] is True
    assert by_step(alone, "(d)")[0]["note"] == "trivial FastAPI not measured"
    both = report.evaluate(base_report(
        http={"get_16": http_step(4100), "get_16_own": http_step(3900)}, baseline=trivial))
    one, own = by_step(both, "(d)")
    assert (one["step"], own["step"]) == ("(d) GET one entry @16",
                                          "(d) GET @16, each connection its own entry")
    assert own["note"] == "0.49x trivial FastAPI" and own["passed"] is False
    assert len(by_step(both, "(s)")) == 1  # the baseline's own row, once


def test_without_etcd_the_report_says_so_in_one_line_and_nothing_fails() -> None:
    rows = report.evaluate(base_report(etcd={"installed": False}))
    assert len(rows) == 1 and rows[0]["passed"] is None
    assert rows[0]["note"] == etcd.NOT_INSTALLED and report.status(rows[0]) == "—"
    assert "etcd is not installed" in report.markdown(base_report(), rows)
    assert report.evaluate(base_report()) == []  # not run at all: no row


def test_our_rates_are_shown_as_a_fraction_of_etcds() -> None:
    found = {"installed": True, "version": "3.4.23", "gateway": "/v3",
             "put_16": http_step(2000), "put_64": http_step(4000), "get_16": http_step(6000)}
    ours = {"put_16": http_step(1200), "put_64": http_step(1500), "get_16": http_step(3000)}
    rows = etcd.evaluate(found, ours)
    assert [(r["note"], r["passed"]) for r in rows] == [
        ("ours 0.6x", True), ("ours 0.38x", False), ("ours 0.5x", True)]
    assert "/v3/kv/range" in rows[2]["step"]
    assert etcd.evaluate(found, {})[0]["passed"] is None


def test_commit_to_nats_fails_when_the_load_falls_short_of_its_rate() -> None:
    raw = {"delivery": {"p50_ms": 0.2, "p99_ms": 0.5}, "delivered": 10,
           "publish_per_s_64_in_flight": 20000}
    catch = {"backlog_events": 10, "events_per_s": 20000}

    def ledger(rate: int) -> dict[str, Any]:
        return {"writes": 10, "delivered": 10, "writes_per_s": rate, "rate": 1000,
                "delivery": {"p50_ms": 2.0, "p99_ms": 10.0},
                "delivery_after_http_ack": {"p50_ms": 0.1, "p99_ms": 1.0}}

    row = next(line for line in broadcast.summarize(raw, ledger(990), catch) if "(g) commit"
               in line)
    assert row.endswith("| PASS |")
    row = next(line for line in broadcast.summarize(raw, ledger(500), catch) if "(g) commit"
               in line)
    assert row.endswith("| FAIL |")
    busy = {**ledger(990), "cpu": {"other": BUSY}}
    row = next(line for line in broadcast.summarize(raw, busy, catch) if "(g) commit" in line)
    assert row.endswith("| NOISY |")


def test_the_token_travels_as_a_header_line_and_as_a_dict() -> None:
    assert bearer(None) == "" and header_dict("") == {}
    line = bearer("t0k")
    assert line == "Authorization: Bearer t0k\r\n"
    assert header_dict(line) == {"Authorization": "Bearer t0k"}


def test_the_nats_servers_cpu_is_counted_apart_from_other_processes() -> None:
    """NATS carries the step's own traffic (the broadcaster, the KV mirror, the bench's
    subscriber), as PostgreSQL does: it is not another process's noise."""
    def snapshot(wall: float, nats: int, stray: int, embedded: int, busy: int) -> _Snapshot:
        return _Snapshot(wall, {
            10: ProcessRow(1, "ssot", 0, 0),  # the server, which embeds a nats-server
            11: ProcessRow(10, "nats-server", embedded, 0),
            20: ProcessRow(1, "nats-server", nats, 0),  # the machine's
            30: ProcessRow(1, "stress", stray, 0)}, busy, 0, 0.0)

    meter = CpuMeter(None)
    meter.server_pid = 10
    ticks = os.sysconf("SC_CLK_TCK")
    # one second: the machine's NATS used 30 % of a core, another process 20 %, the
    # server's own NATS 10 %
    before = snapshot(0.0, 0, 0, 0, 0)
    after = snapshot(1.0, int(0.3 * ticks), int(0.2 * ticks), int(0.1 * ticks),
                     int(0.6 * ticks))
    cpu = meter.share(before, after, children_are_load=False)
    assert cpu.nats == pytest.approx(30, abs=1)
    assert cpu.server == pytest.approx(10, abs=1)
    assert cpu.other == pytest.approx(20, abs=1)


def test_commit_to_nats_names_where_the_cpu_went() -> None:
    raw = {"delivery": {"p50_ms": 0.2, "p99_ms": 0.5}, "delivered": 10,
           "publish_per_s_64_in_flight": 20000}
    ledger = {"writes": 10, "delivered": 10, "writes_per_s": 990, "rate": 1000,
              "delivery": {"p50_ms": 2.0, "p99_ms": 10.0},
              "delivery_after_http_ack": {"p50_ms": 0.1, "p99_ms": 1.0},
              "cpu": {"server": 110.0, "postgres": 40.0, "nats": 14.0, "other": 2.0}}
    lines = broadcast.summarize(raw, ledger, {"backlog_events": 10, "events_per_s": 20000})
    assert lines[-1].endswith("server 110, PostgreSQL 40, NATS 14, other processes 2")
    assert next(line for line in lines if "(g) commit" in line).endswith("| PASS |")


def test_live_lag_says_which_seconds_held_lags_over_the_target() -> None:
    timeline = [(100.0 + i / 10, 20.0) for i in range(50)]  # 5 s at 20 ms
    timeline[23] = (102.3, 180.0)  # a stall in the third second
    timeline[24] = (102.4, 90.0)
    timeline[41] = (104.1, 60.0)
    seconds = projections.by_second(timeline, 50.0)
    assert seconds == {"seconds": 5, "seconds_over": 2,
                       "worst": {"second": 2, "writes_over": 2, "max_ms": 180.0}}
    assert projections.by_second([(1.0, 10.0), (2.5, 30.0)], 50.0) == {
        "seconds": 2, "seconds_over": 0, "worst": None}
    assert projections.by_second([], 50.0)["worst"] is None
