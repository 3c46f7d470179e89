"""The access log's records and flood bound, without a database: what a record stores (and
never stores), how many records of one source and reason a second keeps, the summaries
that stand for the others (their counts add up), the queue's bound, and the row hash."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nexus_ssot.access.flood import Drops, FloodBound
from nexus_ssot.access.log import AccessLog
from nexus_ssot.access.records import MAX_TEXT, QUEUE_FULL, AccessRecord
from nexus_ssot.ledger import access_chain

T0 = datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=UTC)


class Clock:
    """Monotonic seconds the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def denial(source: str = "10.0.0.1", reason: str = "bad_signature", *,
           at: datetime = T0, **members: Any) -> AccessRecord:
    return AccessRecord(decision="deny", status=401, reason=reason, method="GET",
                        path="/v1/namespaces/{namespace}/entries/{key}", source=source,
                        time=at, **members)


def test_a_record_is_stored_with_every_member_and_its_time_in_rfc3339() -> None:
    record = AccessRecord(
        decision="deny", status=403, reason="policy", method="PUT",
        path="/v1/namespaces/{namespace}/entries/{key}", source="192.0.2.7",
        subject="alice", action="write", namespace="config", key="services/db",
        policy="platform", rule=2, correlation_id="c-1", auth_method="token", time=T0)
    assert record.as_json() == {
        "time": "2026-12-03T10:00:00.123456Z", "decision": "deny", "status": 403,
        "reason": "policy", "subject": "alice", "method": "PUT",
        "path": "/v1/namespaces/{namespace}/entries/{key}", "action": "write",
        "namespace": "config", "key": "services/db", "policy": "platform", "rule": 2,
        "correlation_id": "c-1", "source": "192.0.2.7", "auth_method": "token"}
    assert set(record.as_json()) == {f for f in AccessRecord.__dataclass_fields__}


def test_text_members_are_bounded_and_storable() -> None:
    stored = denial(subject="x" * 5000, correlation_id="a\x00b", key="\ud800").as_json()
    assert len(stored["subject"]) == MAX_TEXT and stored["subject"].endswith("…")
    assert stored["correlation_id"] == "a\ufffdb"  # jsonb holds no NUL
    assert stored["key"] == "?"  # no lone surrogate
    access_chain.encode_record(stored)  # canonical JSON of it works


def test_the_default_rule_is_named() -> None:
    assert denial(rule="default").as_json()["rule"] == "default"


def test_the_bound_keeps_n_per_second_for_one_source_and_reason() -> None:
    clock = Clock()
    bound = FloodBound(3, clock)
    kept = [bound.admit(denial(at=T0 + timedelta(milliseconds=i))) for i in range(10)]
    assert kept == [True] * 3 + [False] * 7
    # another source, another reason, another decision: counted on their own
    assert bound.admit(denial(source="10.0.0.2"))
    assert bound.admit(denial(reason="expired"))
    assert bound.admit(AccessRecord("allow", None, "bad_signature", "GET", "/", "10.0.0.1"))
    assert bound.summaries() == []  # the second is not over
    clock.now += 1.0
    [summary] = bound.summaries()
    assert summary == {
        "summary": True, "suppressed": 7, "decision": "deny", "source": "10.0.0.1",
        "reason": "bad_signature", "from": "2026-12-03T10:00:00.126456Z",
        "to": "2026-12-03T10:00:00.132456Z"}
    assert bound.windows == {}  # the keys are forgotten
    assert bound.admit(denial())  # a new second
    assert bound.suppressed_total == 7


def test_suppressed_counts_add_up_over_many_seconds() -> None:
    clock = Clock()
    bound = FloodBound(5, clock)
    stored = 0
    summaries = []
    for second in range(4):
        for i in range(23):
            stored += bound.admit(denial(at=T0 + timedelta(seconds=second, microseconds=i)))
        clock.now += 1.0
        if second == 1:  # summaries not taken: the next record closes the window
            continue
        summaries += bound.summaries()
    summaries += bound.summaries(final=True)
    assert stored == 4 * 5
    assert sum(s["suppressed"] for s in summaries) == 4 * 23 - stored
    assert len(summaries) == 4


def test_final_summaries_include_the_current_second() -> None:
    bound = FloodBound(1, Clock())
    bound.admit(denial())
    bound.admit(denial())
    assert bound.summaries() == []
    assert [s["suppressed"] for s in bound.summaries(final=True)] == [1]


def test_drops_are_summarised_by_decision() -> None:
    drops = Drops()
    for i in range(3):
        drops.drop(denial(at=T0 + timedelta(seconds=i)))
    drops.drop(AccessRecord("allow", 200, "admin", "POST", "/", None, time=T0))
    summaries = {s["decision"]: s for s in drops.summaries()}
    assert summaries["deny"]["suppressed"] == 3
    assert summaries["deny"]["reason"] == QUEUE_FULL
    assert summaries["deny"]["to"] == "2026-12-03T10:00:02.123456Z"
    assert summaries["allow"]["suppressed"] == 1
    assert drops.summaries() == [] and drops.total == 4


def test_a_full_queue_drops_and_counts_without_raising() -> None:
    log = AccessLog(None, queue_size=3, max_per_second=100, clock=Clock())  # type: ignore[arg-type]
    for i in range(5):
        log.record(denial(source=f"10.0.0.{i}"))
    assert log.pending == 3 and log.dropped == 2


def test_recording_never_raises() -> None:
    log = AccessLog(None, clock=Clock())  # type: ignore[arg-type]
    log.record(denial(at="not a time"))  # type: ignore[arg-type]
    assert log.pending == 0


def test_the_row_hash_is_sha256_of_the_canonical_object() -> None:
    record = denial().as_json()
    expected = hashlib.sha256(json.dumps(
        {"seq": 7, "recorded_at": "2026-12-03T10:00:01.000000Z", "record": record,
         "prev_hash": "ab" * 32}, sort_keys=True, separators=(",", ":"),
        ensure_ascii=False).encode()).hexdigest()
    assert access_chain.row_hash(7, "2026-12-03T10:00:01.000000Z", record,
                                 "ab" * 32) == expected
    text = access_chain.encode_record(record)
    assert access_chain.stored_row_hash(7, "2026-12-03T10:00:01.000000Z", text,
                                        "ab" * 32) == expected
    assert access_chain.stored_row_hash(7, "2026-12-03T10:00:01.000000Z", text[:-1],
                                        "ab" * 32) is None


@pytest.mark.parametrize("per_second", [0, -1])
def test_the_bound_must_allow_something(per_second: int) -> None:
    with pytest.raises(ValueError):
        FloodBound(per_second)
