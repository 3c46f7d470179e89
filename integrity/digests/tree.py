"""The Merkle tree over the log as the database stores it: its leaves (``merkle_leaves``)
and the perfect subtrees they complete (``merkle_nodes``), read back for a frontier or an
audit path.

The tree (RFC 6962, ``merkle``) has one leaf per event of ``ssot_events`` in position
order — leaf ``i`` is the log's ``i``-th event, whatever the gaps in positions — and a
leaf is ``merkle.leaf_hash(chain.leaf_data(position, recorded_at, hash))`` with the
event's own hash from its state (so a digest covers each event's content through its hash,
and its global position and commit time directly). An unchained event (no ``hash``) has
the leaf data ``{"hash":null,"position":…,"recorded_at":…}``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg

from nexus_ssot.ledger import chain

from .. import merkle


def leaf_of(position: int, recorded_at: datetime, hash_hex: str | None) -> bytes:
    """The leaf hash of the log event at ``position``."""
    if hash_hex is None:
        data = chain.canonical({"position": position,
                                    "recorded_at": chain.timestamp(recorded_at),
                                    "hash": None})
    else:
        data = chain.leaf_data(position, recorded_at, hash_hex)
    return merkle.leaf_hash(data)


def _perfect(start: int, end: int) -> tuple[int, int] | None:
    """(level, index) of [start, end) if it is a perfect aligned subtree."""
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        return n.bit_length() - 1, start // n
    return None


def _compose(start: int, end: int, node: Callable[[int, int], bytes]) -> bytes:
    """MTH of leaves [start, end) from the stored perfect subtrees ``node(level, index)``:
    perfect ranges are read, a ragged right edge is hashed from its perfect parts."""
    whole = _perfect(start, end)
    if whole is not None:
        return node(*whole)
    k = 1 << ((end - start - 1).bit_length() - 1)
    return merkle.node_hash(_compose(start, start + k, node),
                            _compose(start + k, end, node))


async def stored_nodes(conn: psycopg.AsyncConnection[Any],
                       wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored hashes of perfect subtrees (level, index); level 0 are the leaves."""
    found: dict[tuple[int, int], bytes] = {}
    leaves = sorted(i for level, i in wanted if level == 0)
    if leaves:
        cur = await conn.execute("SELECT idx, hash FROM merkle_leaves WHERE idx = ANY(%s)",
                                 (leaves,))
        found.update(((0, int(i)), bytes(h)) for i, h in await cur.fetchall())
    nodes = sorted((level, i) for level, i in wanted if level > 0)
    if nodes:
        cur = await conn.execute(
            "SELECT n.level, n.idx, n.hash FROM merkle_nodes n"
            " JOIN unnest(%s::int[], %s::bigint[]) AS w(level, idx) USING (level, idx)",
            ([level for level, _ in nodes], [i for _, i in nodes]))
        found.update(((int(lv), int(i)), bytes(h)) for lv, i, h in await cur.fetchall())
    missing = wanted - found.keys()
    if missing:
        raise RuntimeError(f"the stored Merkle tree lacks the subtrees {sorted(missing)[:5]}")
    return found


async def stored_audit_path(conn: psycopg.AsyncConnection[Any], index: int,
                            size: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of the first ``size`` stored leaves."""
    wanted: set[tuple[int, int]] = set()

    def want(level: int, i: int) -> bytes:
        wanted.add((level, i))
        return merkle.EMPTY_ROOT

    merkle.audit_path(index, size, lambda s, e: _compose(s, e, want))
    nodes = await stored_nodes(conn, wanted)
    return merkle.audit_path(index, size, lambda s, e: _compose(s, e,
                                                                lambda lv, i: nodes[lv, i]))


def frontier_parts(size: int) -> list[tuple[int, int]]:
    """(level, index) of the perfect subtrees covering ``size`` leaves, largest first."""
    parts, start = [], 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            parts.append((level, start >> level))
            start += 1 << level
    return parts

