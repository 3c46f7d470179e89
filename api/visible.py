"""Listings that show only what the caller may see: rows the policy hides are skipped
before a page is cut, so a page, its length and its cursor (the last key shown) say
nothing about hidden keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from nexus_ssot.access.policy import KeyFilter

R = TypeVar("R")

#: Rows read per step when the policy hides some.
SCAN_BATCH = 500


def scan_prefix(keys: KeyFilter, prefix: str) -> str | None:
    """The narrowest prefix to scan for keys under ``prefix`` the caller may see; None
    when it may see none of them."""
    if keys.everything:
        return prefix
    if keys.nothing:
        return None
    overlapping = [p for p in keys.prefixes if p.startswith(prefix) or prefix.startswith(p)]
    if not overlapping:
        return None
    if len(overlapping) == 1:
        return max(overlapping[0], prefix, key=len)
    return prefix


async def visible_rows(fetch: Callable[[str, int], Awaitable[list[R]]],
                       key_of: Callable[[R], str], keys: KeyFilter, after: str,
                       limit: int) -> list[R]:
    """Up to ``limit + 1`` rows after ``after`` the caller may see (one more than a page,
    as ``pagination.page`` wants), reading ``fetch(after, n)`` in key order."""
    if keys.everything:
        return await fetch(after, limit + 1)
    shown: list[R] = []
    while len(shown) <= limit:
        rows = await fetch(after, SCAN_BATCH)
        shown += [r for r in rows if keys.allows(key_of(r))]
        if len(rows) < SCAN_BATCH:
            break
        after = key_of(rows[-1])
    return shown[:limit + 1]
