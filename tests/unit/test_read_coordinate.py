"""The query strings the entry's fast path reads itself (``params.read_coordinate``) are
read into the value the framework would give: never a value it would refuse, nor another
one. Anything else is left to the framework (None)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from nexus_ssot.api.params import (
    MAX_INT,
    AsOf,
    AtPosition,
    PastVersion,
    WrittenPosition,
    read_coordinate,
)

#: What the route validates each parameter into, as the framework does.
ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "version": TypeAdapter(PastVersion), "position": TypeAdapter(AtPosition),
    "min_position": TypeAdapter(WrittenPosition), "as_of": TypeAdapter(AsOf)}


def framework(name: str, value: str) -> Any:
    """The value the route would get, or ValidationError."""
    return ADAPTERS[name].validate_python(value)


def query(name: str, value: str) -> bytes:
    return urlencode({name: value}, quote_via=quote).encode()


@pytest.mark.parametrize(("raw", "taken"), [
    (b"version=5", {"version": 5}),
    (b"version=1", {"version": 1}),
    (f"version={MAX_INT}".encode(), {"version": MAX_INT}),
    (b"position=0", {"position": 0}),
    (b"position=1234", {"position": 1234}),
    (b"min_position=0", {"min_position": 0}),
    (b"min_position=77", {"min_position": 77}),
    (f"min_position={MAX_INT}".encode(), {"min_position": MAX_INT}),
    (b"as_of=2026-12-01T08:00:00Z", {"as_of": datetime.fromisoformat("2026-12-01T08:00:00+00:00")}),
    (b"as_of=2026-12-01T08%3A00%3A00.25%2B05%3A30",
     {"as_of": datetime.fromisoformat("2026-12-01T08:00:00.250000+05:30")}),
])
def test_plain_spellings_are_taken(raw: bytes, taken: dict[str, Any]) -> None:
    assert read_coordinate(raw) == taken


@pytest.mark.parametrize("raw", [
    b"version=0", b"version=05", b"version=%2B5", b"version=5.0", b"version=",
    f"version={MAX_INT + 1}".encode(), b"position=-1", b"position=00",
    b"as_of=2026-12-01T08:00:00", b"as_of=2026-12-01T08:00:00+05:30",  # + is a space
    b"as_of=2026-12-01 08:00:00Z", b"as_of=2026-12-01t08:00:00Z", b"as_of=2026-02-30T08:00:00Z",
    b"as_of=2026-12-01T08:00:00.1234567Z", b"as_of=2026-12-01T08:00Z", b"as_of=1733040000",
    b"min_position=-1", b"min_position=007", f"min_position={MAX_INT + 1}".encode(),
    b"version=5&version=6", b"version=5&ignored=1", b"position=3&min_position=3", b"key=5",
])
def test_every_other_spelling_is_left_to_the_framework(raw: bytes) -> None:
    assert read_coordinate(raw) is None


def _agrees(raw: bytes) -> None:
    taken = read_coordinate(raw)
    if taken is None:
        return
    ((name, value),) = taken.items()
    text = unquote(raw.decode().split("=", 1)[1])
    expected = framework(name, text)  # raises if the framework would refuse it
    assert value == expected
    if isinstance(value, datetime):  # the same instant, and the same offset as well
        assert value.utcoffset() == expected.utcoffset()
    else:
        assert type(value) is type(expected) is int


@given(st.sampled_from(["version", "position", "min_position"]),
       st.from_regex(r"[-+ 0-9._e]{0,22}", fullmatch=True) | st.integers(-5, MAX_INT + 5).map(str))
def test_a_number_taken_is_the_frameworks(name: str, text: str) -> None:
    _agrees(query(name, text))


@given(st.from_regex(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,8})?)?"
    r"(Z|z|[+-][0-9]{2}:?[0-9]{2})?", fullmatch=True))
def test_a_time_taken_is_the_frameworks(text: str) -> None:
    _agrees(query("as_of", text))


@st.composite
def time_spellings(draw: st.DrawFn) -> str:
    """A real moment, spelt in one of the ways RFC 3339 and its neighbours allow (the
    plain ones, which the fast path takes, a quarter of the time)."""
    moment = draw(st.datetimes())
    text = moment.strftime("%Y-%m-%d") + draw(st.sampled_from("TTTTt ")) + f"{moment:%H:%M}"
    text += draw(st.sampled_from(["", f":{moment:%S}", f":{moment:%S}.{moment:%f}",
                                  f":{moment:%S}.{moment:%f}",
                                  f":{moment:%S}.{moment.microsecond // 1000:03d}",
                                  f":{moment:%S}.{moment:%f}9"]))
    hours, minutes = draw(st.integers(0, 25)), draw(st.integers(0, 59))
    offset = f"{hours:02d}:{minutes:02d}"
    return text + draw(st.sampled_from(["", "Z", "Z", "z", f"+{offset}", f"+{offset}",
                                        f"-{offset}", f"+{offset}".replace(":", "")]))


@given(time_spellings())
def test_a_real_time_taken_is_the_frameworks(text: str) -> None:
    _agrees(query("as_of", text))


@given(st.datetimes(timezones=st.timezones()))
def test_every_aware_time_in_its_iso_spelling_is_taken_as_the_framework_reads_it(
        moment: datetime) -> None:
    text = moment.isoformat()
    taken = read_coordinate(query("as_of", text))
    offset = moment.utcoffset()
    if offset is not None and offset.total_seconds() % 60 == 0:  # no seconds in the offset
        assert taken is not None
        # (field by field: across zones, == calls a time a fold makes ambiguous unequal)
        assert taken["as_of"].replace(tzinfo=None) == moment.replace(tzinfo=None)
        assert taken["as_of"].utcoffset() == offset
    _agrees(query("as_of", text))


def test_a_refused_value_is_never_taken() -> None:
    for name, text in [("version", "0"), ("position", "-1"), ("min_position", "-1"),
                       ("as_of", "2026-13-01T00:00:00Z")]:
        with pytest.raises(ValidationError):
            framework(name, text)
        assert read_coordinate(query(name, text)) is None
