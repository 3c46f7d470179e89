"""What a route's query parameters take (api/query_values.py): one value unless declared
as a list, a whole number when declared as one; the route's own and its dependencies'."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Query
from fastapi.routing import APIRoute

from nexus_ssot.api.query_values import query_parameters


def _paging(limit: int = 10, cursor: str | None = None) -> None:
    return None


def test_lists_take_many_values_and_whole_numbers_are_known() -> None:
    app = FastAPI()

    @app.get("/things/{name}")
    async def things(
        name: str,
        version: int | None = None,
        tag: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI query)
        kind: Annotated[set[int] | None, Query()] = None,
        label: Annotated[str | None, Query(alias="x-label")] = None,
        dry_run: bool = False,
        paging: None = Depends(_paging),
    ) -> None:
        return None

    [route] = [r for r in app.router.routes if isinstance(r, APIRoute)]
    taken = query_parameters(route)
    assert taken.single == {"version", "x-label", "dry_run", "limit", "cursor"}
    assert taken.whole == {"version", "limit"}
