"""A query parameter that takes one value is given one: ``?limit=5&limit=500`` is refused
(400 ``invalid_parameter``, naming the parameter), where the framework would read the
last of the values and drop the others. A request that a proxy, a gateway's policy or a
log in front of the ledger can read one way and the ledger another is not answered
(HTTP parameter pollution); a client that repeats a parameter by mistake learns it.

Parameters declared as lists (``?view=a&view=b``) take as many values as they are given.
A global dependency of the app, like content negotiation and authorization: it runs once
the framework has matched the route (``scope["route"]``); it costs a request without a
query string one lookup, and one with a query string its parse."""

from __future__ import annotations

import types
import typing
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl

from fastapi import params
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request

_MANY = (list, set, frozenset, tuple)


async def single_values(request: Request) -> None:
    query = request.scope.get("query_string")
    if not query:
        return
    counts = Counter(name for name, _ in parse_qsl(query.decode("latin-1"),
                                                   keep_blank_values=True))
    repeated = [name for name, count in counts.items() if count > 1]
    if not repeated:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    single = single_valued(route)  # (only for a request that repeats a parameter)
    for name in repeated:
        if name in single:
            raise RequestValidationError([{
                "loc": ("query", name), "type": "repeated",
                "msg": f"given {counts[name]} times; it takes one value",
            }])


def single_valued(route: APIRoute) -> frozenset[str]:
    """The names of ``route``'s query parameters (its dependencies' included) that take
    one value."""
    return frozenset(field.alias for field in get_flat_params(route.dependant)
                     if isinstance(field.field_info, params.Query)
                     and not _takes_many(field.field_info.annotation))


def _takes_many(annotation: Any) -> bool:
    """``list[str]``, ``list[str] | None``, ``Annotated[set[int], …]``: a parameter
    repeated for each of its values."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _takes_many(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_takes_many(arg) for arg in typing.get_args(annotation))
    return annotation in _MANY or origin in _MANY
