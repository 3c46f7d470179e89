"""Content negotiation for every route: a read whose ``Accept`` allows none of the media
types the route answers with is a 406."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from nexus_ssot.ledger.errors import NotAcceptable


async def acceptable(request: Request) -> None:
    """A read whose Accept header allows none of the media types its route answers with
    (its documented 200 representations) is a 406, not an answer the client cannot use.
    (``async``: a plain function would run in the thread pool, for every request.)"""
    route = request.scope.get("route")
    if request.method != "GET" or route is None:
        return
    check(request.headers.get("accept"), offered_by(route))


def check(accept: str | None, offered: set[tuple[str, str]]) -> None:
    """Raise 406 when ``accept`` (an Accept header) allows none of ``offered``."""
    if not accept:
        return
    ranges = [r for r in (_media_range(part) for part in accept.split(",")) if r is not None]
    if not offered or not ranges:
        return  # nothing to negotiate, or an Accept too garbled to hold against the client
    for kind, sub, q in ranges:
        if q > 0 and any(kind in ("*", o_kind) and sub in ("*", o_sub)
                         for o_kind, o_sub in offered):
            return
    raise NotAcceptable(
        f"Accept allows none of {', '.join('/'.join(o) for o in sorted(offered))}",
        field="Accept")


def offered_by(route: Any) -> set[tuple[str, str]]:
    types = set(getattr(route, "responses", {}).get(200, {}).get("content", {}))
    response_class = getattr(route, "response_class", None)
    response_class = getattr(response_class, "value", response_class)  # FastAPI's default
    media_type = getattr(response_class, "media_type", None)
    if media_type and not types:
        types.add(media_type)
    return {(t.split("/", 1)[0], t.split("/", 1)[1]) for t in types if "/" in t}


def _media_range(text: str) -> tuple[str, str, float] | None:
    kind, _, parameters = text.strip().lower().partition(";")
    if kind.count("/") != 1:
        return None
    q = 1.0
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip() == "q":
            try:
                q = float(value)
            except ValueError:
                return None
    main, sub = kind.strip().split("/")
    return main.strip(), sub.strip(), q
