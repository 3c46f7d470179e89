"""RFC 6962 Merkle trees: roots, incremental frontiers and audit paths agree."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus_ssot.integrity.merkle import (
    EMPTY_ROOT,
    Frontier,
    audit_path,
    leaf_hash,
    node_hash,
    root,
    root_from_path,
)
from tests.examples import examples


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962's definition, recursively, as the reference."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(8, "big")) for i in range(n)]


def test_known_answers() -> None:
    assert root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    a, b, c = leaves(3)
    assert root([a]) == a
    assert root([a, b, c]) == node_hash(node_hash(a, b), c)
    # RFC 6962's leaf and node prefixes keep a leaf from passing for a node
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()


@settings(max_examples=examples(60), deadline=None)
@given(st.integers(1, 300))
def test_root_frontier_and_audit_paths_agree_with_the_definition(n: int) -> None:
    ls = leaves(n)
    expected = mth(ls)
    assert root(ls) == expected
    frontier = Frontier()
    stored: dict[tuple[int, int], bytes] = {}
    for i, leaf in enumerate(ls):
        for level, index, node in frontier.add(leaf):
            stored[(level, index)] = node
        assert frontier.root() == mth(ls[: i + 1])
    assert frontier.size == n

    def subtree(start: int, end: int) -> bytes:
        size = end - start  # a perfect subtree is stored; any other is hashed
        if size & (size - 1) == 0 and start % size == 0:
            return stored[(size.bit_length() - 1, start // size)]
        return mth(ls[start:end])

    for index in {0, n // 2, n - 1}:
        path = audit_path(index, n, subtree)
        assert root_from_path(index, n, ls[index], path) == expected
        if path:  # any other leaf, or a tampered path, leads elsewhere
            other = leaf_hash(b"forged")
            assert root_from_path(index, n, other, path) != expected
            assert root_from_path(index, n, ls[index], [other, *path[1:]]) != expected


def test_bad_paths_are_refused() -> None:
    ls = leaves(5)
    path = audit_path(2, 5, lambda s, e: mth(ls[s:e]))
    with pytest.raises(ValueError, match="not in a tree"):
        root_from_path(5, 5, ls[0], path)
    with pytest.raises(ValueError, match="longer"):
        root_from_path(2, 5, ls[2], [*path, ls[0]])
    with pytest.raises(ValueError, match="shorter"):
        root_from_path(2, 5, ls[2], path[:-1])
