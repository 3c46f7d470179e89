"""The bench's measure of the host (``measuring.host_speed``): plain Python in CPU seconds,
and the wake-up of another process over pipes, which takes a process of its own."""

from __future__ import annotations

from nexus_ssot.ops.bench.measuring import host_speed, wakeup_round_trip_us


def test_the_hosts_speed_is_measured_in_cpu_seconds_and_a_wake_up_in_microseconds() -> None:
    speed = host_speed(repeat=1)
    assert set(speed) == {"adds_10m_s", "dict_sort_1m_s", "wakeup_round_trip_us"}
    assert 0 < speed["adds_10m_s"] < 60 and 0 < speed["dict_sort_1m_s"] < 60
    assert 0 < speed["wakeup_round_trip_us"] < 100_000


def test_a_wake_up_is_a_round_trip_through_another_process() -> None:
    # a round trip cannot be shorter than two system calls each side: well over 1 µs, and
    # the echo process answers every byte (it raises when one goes unanswered)
    assert wakeup_round_trip_us(round_trips=200) > 1.0
