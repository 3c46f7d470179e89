"""Search: the live entries of a namespace whose key or document holds a piece of text.

The ``entry_search`` view keeps, per live entry, the searched text — ``key || ' ' ||
document::text`` (the document's JSON text, so member names and values alike) — under a
trigram index (``pg_trgm``, GIN). It is an asynchronous view, folded from the log's
history rows one statement per range, so a write does not update the index while it
holds the log's lock (it did, in ``entries``' own index until migration 0023: each
write's trigrams, and now and then the merge of GIN's pending list, went into the
writer's transaction). A search is one query: a case-insensitive substring match over the
view's text, each match checked again against the entry's current document in
``entries`` (so a hit the view has not caught up with is never shown), in key order and
keyset-paginated like the listing of a namespace. An entry written after the view's
position is not found yet: ``min_position`` waits for it (``api/search.py``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

from psycopg import AsyncConnection

from nexus_ssot.ledger.log_tail import LogEvent

from .current_state import PAST_PREFIX
from .runtime import Tables, apply_ctes
from .sql import entry_json

NAME = "entry_search"

#: GIN's pending list is merged into the tree once it passes this many kB (the default, 4
#: MB, made one range in a few hundred merge thousands of documents' trigrams at once).
_PENDING_LIST_KB = 512

_DDL = """
CREATE TABLE IF NOT EXISTS {search} (
    namespace text NOT NULL,
    key text NOT NULL,
    text text NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS {index} ON {search} USING gin (text gin_trgm_ops)
    WITH (gin_pending_list_limit = {pending});
"""

# A range's fold: each entry's last history row of the range; a deleted entry's text
# removed, a live one's written (a document that is JSON null, which the history may hold
# as SQL NULL, as ``null``). The history has a row for every event of an entry;
# namespace settings have none and are not searched.
_FOLD = """
_last AS (
    SELECT DISTINCT ON (namespace, key) namespace, key, event_type, document
    FROM entry_history WHERE position > %(after)s AND position <= %(upto)s
    ORDER BY namespace, key, position DESC
), _gone AS (
    DELETE FROM {search} s USING _last l
    WHERE s.namespace = l.namespace AND s.key = l.key AND l.event_type = 'entry.deleted'
), _live AS (
    INSERT INTO {search} (namespace, key, text)
    SELECT namespace, key, key || ' ' || coalesce(document::text, 'null') FROM _last
    WHERE event_type <> 'entry.deleted'
    ON CONFLICT (namespace, key) DO UPDATE SET text = EXCLUDED.text
)"""


@functools.lru_cache(maxsize=16)
def _fold(search: str) -> bytes:
    return _FOLD.format(search=search).encode()


class EntrySearch:
    """The view (a ``StatementView``: its range and its position commit in one
    statement)."""

    name: ClassVar[str] = NAME
    tables: ClassVar[tuple[str, ...]] = ("view_entry_search",)
    side_effects: ClassVar[bool] = False
    #: Its statement reads each range from the version history: no events needed.
    reads_events: ClassVar[bool] = False

    def ddl(self, t: Tables) -> str:
        name = self.tables[0]
        return _DDL.format(search=t[name], index=f'"{t.plain[name]}_text_idx"',
                           pending=_PENDING_LIST_KB)

    async def apply(self, conn: AsyncConnection[Any], after: int, upto: int,
                    t: Tables) -> None:
        await apply_ctes(conn, _fold(t[self.tables[0]]), {"after": after, "upto": upto})

    async def range_statement(self, conn: AsyncConnection[Any], after: int, upto: int,
                              t: Tables, events: Sequence[LogEvent]
                              ) -> tuple[bytes, dict[str, Any]]:
        return _fold(t[self.tables[0]]), {}


# The view's matches, each checked against the entry's current text: a row the view still
# holds for an entry changed since (or deleted) is not shown unless the entry still
# matches. The check is a LATERAL subquery (its LIMIT keeps it from being merged into a
# plain join): as a join, the planner, blind to how many entries the second match keeps,
# made ``entries`` the outer side and scanned the view once per entry (10 s for a value
# 1,250 of 10,000 entries hold, against 5 ms this way).
_SEARCH = (
    "SELECT s.key, e.entry FROM {search} s JOIN LATERAL ("
    f" SELECT {entry_json('e')} AS entry FROM entries e"
    "  WHERE e.namespace = s.namespace AND e.key = s.key AND NOT e.deleted"
    "  AND (e.key || ' ' || coalesce(e.document::text, 'null')) ILIKE %(pattern)s LIMIT 1"
    ") e ON true"
    " WHERE s.namespace = %(namespace)s AND s.key > %(after)s AND s.key >= %(prefix)s"
    " AND s.key < %(past)s AND starts_with(s.key, %(prefix)s) AND s.text ILIKE %(pattern)s"
    " ORDER BY s.key LIMIT %(limit)s"
)


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's own characters (``\\``, ``%``, ``_``) matched literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_entries(
    conn: AsyncConnection[tuple[Any, ...]], namespace: str, text: str, *, prefix: str,
    after: str, limit: int, t: Tables | None = None,
) -> list[tuple[str, bytes]]:
    """Live entries of ``namespace`` under ``prefix`` whose key or document contains
    ``text`` (case-insensitive), in key order after the key ``after``, as far as the view
    has applied the log."""
    search = (t or Tables(EntrySearch.tables))[EntrySearch.tables[0]]
    params = {"namespace": namespace, "after": after, "prefix": prefix,
              "past": prefix + PAST_PREFIX, "pattern": like_pattern(text), "limit": limit}
    # Never prepared: a generic plan cannot see the pattern, and it picks the key order's
    # index with the match as a filter (scanning the namespace for a rare text: a second
    # over 100,000 entries, against 4 ms for the custom plan that uses the trigram index).
    cur = await conn.execute(_SEARCH.format(search=search), params, prepare=False)
    return [(row[0], row[1].encode()) for row in await cur.fetchall()]
