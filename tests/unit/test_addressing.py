"""Addressing: which namespaces and keys an entry may have, and the stream id they name."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from nexus_ssot.ledger.addressing import (
    RESERVED_LAST_SEGMENTS,
    check_key,
    check_namespace,
    stream_id,
)
from nexus_ssot.ledger.errors import InvalidInput
from tests.unit.entries import KEY, NS


def test_stream_id_is_stable_for_the_same_namespace_and_key() -> None:
    assert stream_id(NS, KEY) == stream_id(NS, KEY)
    assert isinstance(stream_id(NS, KEY), UUID)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((NS, KEY), (NS, KEY + "x")),
        ((NS, KEY), ("other", KEY)),
        (("ab", "c"), ("a", "bc")),
        (("a", "b/c"), ("a-b", "c")),
    ],
)
def test_different_entries_get_different_stream_ids(
    a: tuple[str, str], b: tuple[str, str]
) -> None:
    assert stream_id(*a) != stream_id(*b)


@pytest.mark.parametrize(
    "key",
    ["k", "a/b/c", "A.b_c-D", "...", "v1.2", "history/of/it", "my-history", "x/histories",
     "a" * 512, "/".join(["s"] * 256)],
)
def test_valid_keys_are_accepted_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("/a", id="leading slash"),
        pytest.param("a/", id="trailing slash"),
        pytest.param("a//b", id="empty segment"),
        pytest.param(".", id="dot"),
        pytest.param("a/./b", id="dot segment"),
        pytest.param("..", id="dotdot"),
        pytest.param("a/../b", id="dotdot segment"),
        pytest.param("a b", id="space"),
        pytest.param("a?b", id="question mark"),
        pytest.param("a%2Fb", id="percent"),
        pytest.param("caf\u00e9", id="non-ascii"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("a" * 513, id="too long"),
        *(pytest.param(f"x/{s}", id=f"reserved {s}") for s in sorted(RESERVED_LAST_SEGMENTS)),
        pytest.param("history", id="reserved alone"),
    ],
)
def test_invalid_keys_are_rejected_naming_the_key_field(key: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_key(key)
    assert type(caught.value) is InvalidInput
    assert caught.value.code == "invalid_key"
    assert caught.value.field == "key"


@pytest.mark.parametrize("namespace", ["a", "0ns", "my_ns-1", "a" * 63])
def test_valid_namespaces_are_accepted_unchanged(namespace: str) -> None:
    assert check_namespace(namespace) == namespace


@pytest.mark.parametrize(
    "namespace",
    ["", "Orders", "_ns", "-ns", "a.b", "a/b", "ns ", "n\u00e9", "a" * 64],
)
def test_invalid_namespaces_are_rejected_naming_the_namespace_field(namespace: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_namespace(namespace)
    assert caught.value.code == "invalid_namespace"
    assert caught.value.field == "namespace"


@pytest.mark.parametrize("check", [check_namespace, check_key], ids=["namespace", "key"])
def test_a_trailing_newline_is_not_a_valid_namespace_or_key(check: Any) -> None:
    with pytest.raises(InvalidInput):
        check("orders\n")
