"""Shared SQL fragments: the one JSON shape of an entry, built by PostgreSQL."""

#: RFC 3339 UTC with microseconds, e.g. 2026-11-27T07:43:53.123456Z.
RECORDED_AT = (
    "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
)



def row_json(columns: str) -> str:
    """Compact JSON of the named columns of the current row (``json`` values verbatim,
    so documents keep their key order), e.g. ``row_json("key, version")``."""
    return f"(SELECT row_to_json(j) FROM (SELECT {columns}) j)::text"


def entry_json(alias: str = "") -> str:
    """The entry body used everywhere an entry is returned, from a row of ``entries`` or
    ``entry_history`` (qualified by ``alias`` when the query joins both)."""
    a = f"{alias}." if alias else ""
    recorded_at = RECORDED_AT.replace("recorded_at AT", f"{a}recorded_at AT")
    return row_json(f"{a}namespace, {a}key, {a}version, {a}position,"
                    f" {recorded_at} AS recorded_at, {a}document")


ENTRY_JSON = entry_json()


def with_member_if_set(json_text: str, column: str) -> str:
    """``json_text`` (an object's) with one more member, ``column``'s value, when that is
    not null; when it is, the object as it was (no null member). For ``auth``: events from
    before it was recorded keep the JSON they always had."""
    return (f"CASE WHEN {column} IS NULL THEN {json_text} ELSE left({json_text}, -1)"
            f" || ',\"{column}\":' || {column}::text || '}}' END")


#: One event of the version history (a row of ``entry_history``): the entry it made, its
#: metadata and patch, and ``auth`` when it was recorded.
EVENT_JSON = with_member_if_set(row_json(
    f"namespace, key, version, position, {RECORDED_AT} AS recorded_at, event_type, event_id,"
    " actor, reason, correlation_id, causation_id, idempotency_key, patch, document,"
    " resolution"), "auth")
