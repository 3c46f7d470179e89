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
