"""A query value is read one way only, the way it is written. Two spellings that the
framework would accept and read its own way are refused instead (400
``invalid_parameter``, naming the parameter), so that a proxy, a gateway's policy or a
log in front of the ledger never reads a request one way while the ledger reads it
another (HTTP parameter pollution), and a client's mistake is told, not guessed:

- a parameter that takes one value, given more than once (``?limit=5&limit=500``): the
  framework would read the last; parameters declared as lists (``?view=a&view=b``) take
  every value;
- a whole number written otherwise than in digits (``?to_position=0.0``, ``+1``,
  ``1_000``, `` 1``), which pydantic's lax parsing reads as a number.

A global dependency of the app, like content negotiation and authorization: it runs once
the framework has matched the route (``scope["route"]``). A request without a query
string costs it one lookup; one with a query string a pass over the values the framework
parsed, and the route's parameters are looked up once per route."""

from __future__ import annotations

import types
import typing
from collections import Counter
from typing import Any, NamedTuple

from fastapi import params
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request

from .params import DIGITS

_MANY = (list, set, frozenset, tuple)


class QueryParameters(NamedTuple):
    single: frozenset[str]  # the names of those that take one value
    whole: frozenset[str]  # the names of those that are whole numbers


#: id(route) → (route, its parameters): routes are not hashable, and live as long as
#: their app (the route is kept beside its id, so that the id is never another's)
_KNOWN: dict[int, tuple[APIRoute, QueryParameters]] = {}


async def plain_query(request: Request) -> None:
    query = request.scope.get("query_string")
    if not query:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    pairs = request.query_params.multi_items()  # (parsed once: the framework reads it too)
    declared = _parameters(route)
    counts = Counter(name for name, _ in pairs)
    for name, count in counts.items():
        if count > 1 and name in declared.single:
            _refuse(name, f"given {count} times; it takes one value")
    for name, value in pairs:
        if name in declared.whole and not DIGITS.fullmatch(value):
            _refuse(name, "must be a whole number written in digits, e.g. 5")


def _refuse(name: str, message: str) -> typing.NoReturn:
    raise RequestValidationError([{"loc": ("query", name), "type": "plain_query",
                                   "msg": message}])


def _parameters(route: APIRoute) -> QueryParameters:
    known = _KNOWN.get(id(route))
    if known is None or known[0] is not route:
        known = _KNOWN[id(route)] = (route, query_parameters(route))
    return known[1]


def query_parameters(route: APIRoute) -> QueryParameters:
    """What ``route``'s query parameters (its dependencies' included) take."""
    fields = [field for field in get_flat_params(route.dependant)
              if isinstance(field.field_info, params.Query)]
    return QueryParameters(
        single=frozenset(f.alias for f in fields if not _takes_many(f.field_info.annotation)),
        whole=frozenset(f.alias for f in fields if _is_whole(f.field_info.annotation)))


def _kinds(annotation: Any) -> list[Any]:
    """The types a parameter's value may have: ``Annotated`` unwrapped, a union's members
    but ``None``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [kind for arg in typing.get_args(annotation) if arg is not type(None)
                for kind in _kinds(arg)]
    return [annotation]


def _takes_many(annotation: Any) -> bool:
    """``list[str]``, ``list[str] | None``, ``Annotated[set[int], …]``: a parameter
    repeated for each of its values."""
    return any(kind in _MANY or typing.get_origin(kind) in _MANY for kind in _kinds(annotation))


def _is_whole(annotation: Any) -> bool:
    """``int``, ``int | None``, ``Annotated[int, …]`` (not ``bool``)."""
    kinds = _kinds(annotation)
    return bool(kinds) and all(kind is int for kind in kinds)
