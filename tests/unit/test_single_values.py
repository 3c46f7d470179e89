"""Which query parameters take one value (api/single_values.py): those not declared as
lists, the route's own and its dependencies'."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Query
from fastapi.routing import APIRoute

from nexus_ssot.api.single_values import single_valued


def _paging(limit: int = 10, cursor: str | None = None) -> None:
    return None


def test_parameters_declared_as_lists_take_many_and_the_others_one() -> None:
    app = FastAPI()

    @app.get("/things/{name}")
    async def things(
        name: str,
        version: int | None = None,
        tag: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI query)
        kind: Annotated[set[str] | None, Query()] = None,
        label: Annotated[str | None, Query(alias="x-label")] = None,
        paging: None = Depends(_paging),
    ) -> None:
        return None

    [route] = [r for r in app.router.routes if isinstance(r, APIRoute)]
    assert single_valued(route) == {"version", "x-label", "limit", "cursor"}
