"""``http.parse_json``'s cheap test for what only the exact parse can refuse
(``_may_be_ambiguous``): it must never miss a number orjson would not keep exactly, and
should not send ordinary text to the slow parse."""

from __future__ import annotations

import orjson
import pytest

from nexus_ssot.api.http import _may_be_ambiguous, parse_json
from nexus_ssot.ledger.errors import InvalidInput


def ambiguous(body: bytes) -> bool:
    return _may_be_ambiguous(body, orjson.loads(body))


@pytest.mark.parametrize("text", ["service-2999", "node-100", "queue-e-000", "v1-e+1000",
                                  "payments-api-eu-west-1", "cache-E-123", "e-000"])
def test_text_shaped_like_an_exponent_is_no_alarm(text: str) -> None:
    body = orjson.dumps({"name": text, "port": 5432, "flags": [text, 1.5, -2]})
    assert not ambiguous(body)
    assert parse_json(body) == orjson.loads(body)


@pytest.mark.parametrize("number", ["1e-400", "1E-400", "-2.5e-999", "1e0300", "1.0e+300",
                                    "1.7E+308", "5e-324", "12345678901234567890"])
def test_every_long_exponent_or_digit_run_is_looked_at(number: str) -> None:
    assert ambiguous(b'{"a": [0, {"b": %s}]}' % number.encode())


@pytest.mark.parametrize(("number", "path"), [("1e-400", "document.a"),
                                              ("-2.5E-999", "document.a")])
def test_a_number_too_small_for_a_double_is_still_refused(number: str, path: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_json(b'{"a": %s, "b": "service-100"}' % number.encode(), field="document")
    assert refused.value.code == "number_out_of_range" and refused.value.field == path


@pytest.mark.parametrize("text", ["caf\u00e9", "na\u00efve \u00c5ngstr\u00f6m", "bell\x07 rings",
                                  "\u00a0non-breaking"])
def test_escaped_non_ascii_text_is_no_alarm(text: str) -> None:
    # as Python's json.dumps writes it by default: \u00e9 and the like
    import json

    body = json.dumps({"city": text, "n": 1}).encode()
    assert b"\\u00" in body
    assert not ambiguous(body)
    assert parse_json(body) == {"city": text, "n": 1}


@pytest.mark.parametrize("escape", [b"\\u003a", b"\\u003A"])
def test_an_escaped_colon_beside_a_duplicate_member_is_still_refused(escape: bytes) -> None:
    # the escaped colon adds one to the value written back, the duplicate takes one away
    body = b'{"a": "x' + escape + b'y", "b": 1, "b": 2}'
    assert ambiguous(body)
    with pytest.raises(InvalidInput) as refused:
        parse_json(body, field="document")
    assert refused.value.code == "duplicate_member" and refused.value.field == "document.b"


def test_a_nul_character_is_still_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_json(b'{"a": "x\\u0000y"}', field="document")
    assert refused.value.code == "invalid_unicode" and refused.value.field == "document.a"


# --- the cheap test never misses what the exact parse refuses ----------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nexus_ssot.api.strict_json import first_ambiguity  # noqa: E402

_TEXT = st.text(alphabet=st.sampled_from(list("ab:e-E+019 \x00\u00e9\u2028\\\"")), max_size=8)
_NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.builds(lambda m, f, e: f"{m}{f}e{e}", st.integers(-99, 99),
              st.sampled_from(["", ".5", ".000001"]), st.integers(-420, 420)),
    st.builds(lambda d: "0." + "0" * d + "1", st.integers(0, 30)))


def _string(text: str, ascii_only: bool) -> str:
    import json

    written = json.dumps(text, ensure_ascii=ascii_only)
    # now and then an escaped colon, as some writers spell one
    return written.replace(":", "\\u003a") if ascii_only and len(text) % 3 == 0 else written


def _json(ascii_only: bool) -> st.SearchStrategy[str]:
    leaf = st.one_of(_TEXT.map(lambda t: _string(t, ascii_only)), _NUMBER,
                     st.sampled_from(["true", "false", "null"]))
    return st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(st.sampled_from(["a", "b", "a:b", "e-100"]), inner), max_size=4)
        .map(lambda members: "{" + ", ".join(f"{_string(k, ascii_only)}: {v}"
                                              for k, v in members) + "}")),
        max_leaves=12)


@given(st.booleans().flatmap(_json))
def test_what_the_cheap_test_lets_through_the_exact_parse_would_too(text: str) -> None:
    body = text.encode()
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return  # refused by orjson: the exact parse then names why (http._refusal)
    if not _may_be_ambiguous(body, value):
        assert first_ambiguity(body, "") is None, body


@pytest.mark.parametrize("body", [b'{"id": "1733500000000000000"}',
                                  b'{"at_ns": 1733500000000000000, "n": 9999999999999999999}'])
def test_nineteen_digits_alone_are_no_alarm(body: bytes) -> None:
    assert not ambiguous(body)


@pytest.mark.parametrize(("number", "code"), [("-9223372036854775809", "number_out_of_range"),
                                              ("18446744073709551616", "number_out_of_range")])
def test_an_integer_just_beyond_64_bits_is_still_refused(number: str, code: str) -> None:
    body = b'{"a": %s}' % number.encode()
    assert ambiguous(body)
    with pytest.raises(InvalidInput) as refused:
        parse_json(body, field="document")
    assert refused.value.code == code
