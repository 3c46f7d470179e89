"""A read scoped to a namespace that does not exist answers ``404 namespace_not_found``,
never an empty answer: a misspelt name must not look like a namespace with nothing in it.

A namespace exists once it has settings or an entry (ever: deleting every entry leaves it
existing). A read at a past point (``as_of``, ``position``) asks whether it existed then,
as the fold of the log up to there would: before its first event it did not. The routes
ask only when their own read found nothing, so a read that finds something costs nothing
more (the audit trail, which may stream, asks first); the question itself is two index
lookups (``projections/namespace_origin.py``).
"""

from __future__ import annotations

from typing import Any

from nexus_ssot.ledger.errors import LedgerError, NotFound
from nexus_ssot.projections.namespace_origin import first_position


async def missing_namespace(conn: Any, namespace: str, *, cut: int | None = None,
                            when: str | None = None) -> NotFound | None:
    """The refusal of a read of ``namespace`` (at position ``cut``, which ``when`` words)
    if it does not exist (did not exist yet), else None."""
    first = await first_position(conn, namespace)
    if first is None:
        return NotFound(
            f"namespace {namespace} does not exist (it has neither settings nor entries): "
            f"check its name, or create it with PUT /v1/namespaces/{namespace}",
            code="namespace_not_found", field="namespace")
    if cut is not None and first > cut:
        return NotFound(f"namespace {namespace} did not exist yet {when or f'at position {cut}'}",
                        code="namespace_not_found", field="namespace", position=cut)
    return None


async def require_namespace(conn: Any, namespace: str, *, cut: int | None = None,
                            when: str | None = None) -> None:
    """Raise ``namespace_not_found`` unless ``namespace`` exists (existed at ``cut``)."""
    missing = await missing_namespace(conn, namespace, cut=cut, when=when)
    if missing is not None:
        raise missing


async def unless_namespace_missing(conn: Any, namespace: str, error: LedgerError, *,
                                   cut: int | None = None,
                                   when: str | None = None) -> LedgerError:
    """``error`` (something in ``namespace`` was not found), or ``namespace_not_found``
    when it is the namespace itself that is missing: what to raise."""
    return await missing_namespace(conn, namespace, cut=cut, when=when) or error
