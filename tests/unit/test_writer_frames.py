"""The writer's wire (ledger/writer_service.py): frames read out of a connection's bytes
however they arrive — split anywhere, several at once, a large one in many parts — and
refused when too large or not JSON."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest

from nexus_ssot.ledger import writer_service
from nexus_ssot.ledger.writer_service import Frames, frame

MESSAGES: list[dict[str, Any]] = [
    {"id": 1, "outcome": {"a": "é" * 3}},
    {"id": 2, "ops": [["Put", {"key": "k"}, {}]], "idem": None, "atomic": False},
    {"id": 3, "error": {"type": "InvalidInput", "message": "no"}},
]
STREAM = b"".join(frame(orjson.dumps(m)) for m in MESSAGES)


def read(parts: list[bytes]) -> list[dict[str, Any]]:
    frames, found = Frames(), []
    for part in parts:
        frames.feed(part, found)
    return found


def test_frames_are_read_whole_wherever_the_bytes_are_split() -> None:
    for cut in range(len(STREAM) + 1):
        assert read([STREAM[:cut], STREAM[cut:]]) == MESSAGES
    assert read([STREAM[i:i + 1] for i in range(len(STREAM))]) == MESSAGES
    assert read([STREAM]) == MESSAGES


def test_a_large_frame_in_many_parts_is_read_once_it_is_whole() -> None:
    big = {"id": 9, "document": "x" * 300_000}
    data = frame(orjson.dumps(big)) + frame(orjson.dumps(MESSAGES[0]))
    frames, found = Frames(), []
    for at in range(0, len(data), 4096):
        frames.feed(data[at:at + 4096], found)
        if at + 4096 < 300_000:
            assert found == []  # nothing until the frame is whole
    assert found == [big, MESSAGES[0]]


def test_a_frame_over_the_limit_is_refused_before_its_bytes_come(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_service, "_MAX_FRAME", 10)
    with pytest.raises(ConnectionError, match="larger than 10"):
        Frames().feed(struct.pack(">I", 11), [])


def test_a_frame_that_is_not_json_is_refused_after_the_frames_before_it() -> None:
    found: list[dict[str, Any]] = []
    with pytest.raises(ValueError):
        Frames().feed(frame(orjson.dumps(MESSAGES[0])) + frame(b"{not json"), found)
    assert found == [MESSAGES[0]]


def test_a_lone_surrogate_escape_is_read_for_decide_to_refuse() -> None:
    found: list[dict[str, Any]] = []
    Frames().feed(frame(b'{"id": 4, "document": "\\ud800"}'), found)
    assert found == [{"id": 4, "document": "\ud800"}]
