"""Search a namespace's live entries by text in their keys and documents, from the
asynchronous view ``entry_search`` (``projections/entry_search.py``; read-your-writes
through ``min_position``), showing only what the caller may read: the same key filter
and paging as the listing of a namespace's entries."""

from __future__ import annotations

from typing import Annotated

import psycopg
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from nexus_ssot.ledger.addressing import check_namespace
from nexus_ssot.projections import entry_search

from . import models
from .existence import require_namespace
from .guard import guard_of
from .pagination import decode_cursor, page
from .params import READ_ERRORS, Cursor, KeyPrefix, Limit, Namespace, service_of
from .views import MinPosition, not_built, view_at
from .visible import scan_prefix, visible_rows

router = APIRouter(prefix="/v1")

#: Trigrams need three characters: a shorter text could not use the index and would scan
#: the namespace. A control character (NUL above all, which PostgreSQL's text refuses)
#: never reaches SQL.
SearchText = Annotated[str, Query(
    min_length=3, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$",
    description="Text to find, case-insensitive, in a key or anywhere in a document's JSON "
    "(member names and values); 3 to 200 characters", examples=["eu-west"])]


@router.get(
    "/namespaces/{namespace}/search",
    summary="Live entries whose key or document contains a text, in key order "
            "(asynchronous view entry_search)",
    response_model=models.EntryPage,
    responses=READ_ERRORS,
    tags=["entries"],
)
async def search(
    request: Request,
    namespace: Namespace,
    q: SearchText,
    prefix: KeyPrefix = "",
    limit: Limit = 100,
    cursor: Cursor = None,
    min_position: MinPosition = None,
) -> Response:
    ns = check_namespace(namespace)
    state = decode_cursor(cursor, "k", p=prefix, o=q)
    after = state["k"] if state else ""
    keys = guard_of(request).keys("read", ns)
    scan = scan_prefix(keys, prefix)
    service = service_of(request)
    async with service.pool.connection() as conn:
        position = await view_at(service, conn, entry_search.NAME, min_position)

        async def fetch(start: str, n: int) -> list[tuple[str, bytes]]:
            if scan is None:
                return []
            found: list[tuple[str, bytes]] = await entry_search.search_entries(
                conn, ns, q, prefix=scan, after=start, limit=n)
            return found

        try:
            rows = await visible_rows(fetch, lambda r: r[0], keys, after, limit)
        except psycopg.errors.UndefinedTable:
            await require_namespace(conn, ns, cut=None, when=None)
            raise not_built(entry_search.NAME, position) from None
        if not rows:  # nothing found, or no such namespace?
            await require_namespace(conn, ns, cut=None, when=None)
    return page(rows, limit, lambda r: r[1], lambda r: {"k": r[0], "p": prefix, "o": q})
