"""Merkle trees over the log, as RFC 6962 (Certificate Transparency) defines them.

The tree over leaves d[0:n] has the hash MTH: for n = 1 the leaf hash
``SHA-256(0x00 || d[0])``; for n > 1, with k the largest power of two below n,
``SHA-256(0x01 || MTH(d[0:k]) || MTH(d[k:n]))``. An audit path proves one leaf is in a tree
of a given size and root; anyone can check one with ``hashlib`` alone (see docs/integrity.md).

``Frontier`` keeps the roots of the perfect subtrees covering the leaves so far (at most
one per power of two), so a root is computed as leaves arrive, in O(log n) memory: the
root of n leaves is those subtree roots folded from the smallest up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of the leaf hashes ``leaves`` (already ``leaf_hash``-ed)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    # Bottom-up pairing gives RFC 6962's tree: an odd node at the end of a level is
    # carried up unchanged, which is exactly where the largest-power-of-two split puts it.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def audit_path(index: int, size: int, subtree: Callable[[int, int], bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of the first ``size`` leaves;
    ``subtree(start, end)`` gives MTH of leaves [start, end) (from stored nodes or by
    hashing leaves). RFC 6962 section 2.1.1."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    path.reverse()
    return path


def root_from_path(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root an audit path leads to from leaf hash ``leaf`` (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ValueError("the audit path is longer than the tree is deep")
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("the audit path is shorter than the tree is deep")
    return r


@dataclass
class Frontier:
    """The perfect subtrees covering the leaves so far: ``nodes[i]`` is the root of a
    subtree of ``2**levels[i]`` leaves, largest first."""

    size: int = 0
    levels: list[int] = field(default_factory=list)
    nodes: list[bytes] = field(default_factory=list)

    def add(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append a leaf hash; return the perfect subtrees it completed as
        (level, index at that level, hash), the leaf itself first."""
        done = [(0, self.size, leaf)]
        level, node = 0, leaf
        while self.levels and self.levels[-1] == level:
            node = node_hash(self.nodes.pop(), node)
            self.levels.pop()
            level += 1
            done.append((level, self.size >> level, node))
        self.levels.append(level)
        self.nodes.append(node)
        self.size += 1
        return done

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        r = self.nodes[-1]
        for node in reversed(self.nodes[:-1]):
            r = node_hash(node, r)
        return r
