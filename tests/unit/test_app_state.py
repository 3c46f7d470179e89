"""``app.state`` holds the service as a plain attribute (api/service.py, ``AppState``):
read several times a request, it must not take Starlette's ``State`` lookup, which fails
first and makes an AttributeError each time; anything else set on it behaves as on
Starlette's ``State``."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.datastructures import State

from nexus_ssot.api.app import create_app
from nexus_ssot.api.service import AppState
from nexus_ssot.ledger.settings import Settings


def test_the_service_is_read_without_the_state_s_failed_lookup(
        monkeypatch: pytest.MonkeyPatch) -> None:
    state = AppState()
    assert state.service is None  # before the lifespan opens it: as if absent
    service: Any = object()

    def never(self: State, key: str) -> Any:
        raise AssertionError(f"{key} was looked up through State.__getattr__")

    state.service = service
    monkeypatch.setattr(State, "__getattr__", never)
    assert state.service is service
    assert getattr(state, "service", None) is service


def test_anything_else_is_kept_as_starlette_keeps_it() -> None:
    state = AppState()
    state.consistency_checks = {}
    assert state.consistency_checks == {}
    assert state["consistency_checks"] == {}
    assert "consistency_checks" not in vars(state)
    assert not hasattr(state, "missing")
    del state.consistency_checks
    assert not hasattr(state, "consistency_checks")


def test_the_app_is_made_with_it() -> None:
    app = create_app(Settings(database_url="postgresql://app-state.invalid/none"))
    assert isinstance(app.state, AppState)
    assert app.state.service is None
