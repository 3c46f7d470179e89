"""Cursor pagination: the opaque ``next_cursor`` of a page, and the page's JSON body."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from starlette.responses import Response

from nexus_ssot.ledger.errors import InvalidInput

from .params import JSON, MAX_INT

T = TypeVar("T")


def encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


#: The members a cursor may carry, and their types (a position or version is a bigint).
_CURSOR_MEMBERS: dict[str, tuple[type, ...]] = {
    "k": (str, type(None)), "p": (str,), "n": (str,), "o": (str,), "ns": (str, type(None)),
    "after": (int,), "v": (int,), "at": (int,)}


def _cursor_member(name: str, value: Any) -> bool:
    types = _CURSOR_MEMBERS.get(name)
    if types is None or not isinstance(value, types) or isinstance(value, bool):
        return False
    return not isinstance(value, int) or 0 <= value <= MAX_INT


def decode_cursor(cursor: str | None, *required: str, **expected: Any) -> dict[str, Any] | None:
    """The members of a ``next_cursor`` (``required`` ones present, ``expected`` ones equal
    to this query's); a cursor made up or altered by a client is a 400, not a crash."""
    if cursor is None:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict) or any(data.get(k) != v for k, v in expected.items()) \
                or not set(required) <= set(data) \
                or not all(_cursor_member(k, v) for k, v in data.items()):
            raise ValueError
        return data
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidInput(
            "cursor is not a next_cursor returned for this same query",
            code="invalid_cursor", field="cursor",
        ) from None


def page(
    rows: Sequence[T], limit: int, body: Callable[[T], bytes],
    cursor_after: Callable[[T], dict[str, Any]], extra: dict[str, Any] | None = None,
) -> Response:
    """A page of at most ``limit`` items from ``rows`` (fetched with one extra to learn
    whether more follow), with ``extra`` members after ``next_cursor``."""
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(cursor_after(rows[-1])) if more else None
    tail = b"".join(b"," + orjson.dumps(k) + b":" + orjson.dumps(v)
                    for k, v in (extra or {}).items())
    return Response(
        b'{"items":[' + b",".join(body(r) for r in rows) + b'],"next_cursor":'
        + orjson.dumps(next_cursor) + tail + b"}",
        media_type=JSON,
    )
