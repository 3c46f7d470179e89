"""Entry subjects on NATS: filterable by namespace and folder, and reversible."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus_ssot.ledger.subjects import (
    decode_token,
    encode_token,
    entry_subject,
    namespace_filter,
    parse_subject,
)

CASES = [
    ("config", "services/payments/db.url", "ssot.config.services.payments.db%2Eurl"),
    ("config", "features/new-ui", "ssot.config.features.new-ui"),
    ("master_data", "a*b/c>d/e f/é", "ssot.master_data.a%2Ab.c%3Ed.e%20f.%C3%A9"),
]


@pytest.mark.parametrize(("namespace", "key", "subject"), CASES)
def test_a_subject_names_its_entry_and_gives_it_back(namespace: str, key: str,
                                                     subject: str) -> None:
    assert entry_subject("ssot", namespace, key) == subject
    assert parse_subject("ssot", subject) == (namespace, key)
    tokens = subject.split(".")
    assert all(t and not set(t) & set("*> \t") for t in tokens)


def test_filters_select_a_namespace_or_a_folder() -> None:
    assert namespace_filter("ssot", "config") == "ssot.config.>"
    assert namespace_filter("ssot", "config", "services/") == "ssot.config.services.>"


def test_a_foreign_subject_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_subject("ssot", "other.config.k")


def _per_character(segment: str) -> str:
    """The encoding as first written: every character on its own."""
    return "".join(ch if re.fullmatch(r"[A-Za-z0-9_-]", ch)
                   else "".join(f"%{b:02X}" for b in ch.encode()) for ch in segment)


@given(st.text(max_size=40) | st.from_regex(r"[A-Za-z0-9_-]{0,30}", fullmatch=True))
def test_a_token_is_encoded_character_by_character_as_ever(segment: str) -> None:
    # (a segment of safe characters only is taken whole: the same token)
    assert encode_token(segment) == _per_character(segment)
    assert decode_token(encode_token(segment)) == segment
