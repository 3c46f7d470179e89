"""What the unit tests of the ledger's domain build entries from: contexts, states, events
decided or recorded as old history might hold them, and a type-strict JSON equality."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jsonpatch
import orjson

from nexus_ssot.ledger.addressing import stream_id
from nexus_ssot.ledger.commands import Command, Context
from nexus_ssot.ledger.documents import Limits
from nexus_ssot.ledger.domain import decide
from nexus_ssot.ledger.events import EntryEvent, EntryState, evolve

NS = "orders"
KEY = "eu/2024/order-1"
LIMITS = Limits()
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

_ids = iter(range(1, 1_000_000))


def ctx(**overrides: Any) -> Context:
    """A fresh context: a new event id and a later timestamp on every call."""
    n = next(_ids)
    fields: dict[str, Any] = {
        "event_id": UUID(int=n),
        "timestamp": T0 + timedelta(seconds=n),
        "actor": "alice",
        "correlation_id": f"corr-{n}",
    }
    fields.update(overrides)
    return Context(**fields)


def canon(value: Any) -> bytes:
    """Type-strict JSON equality (1, 1.0 and true are all different here)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def apply_recorded_patch(previous: Any, event: EntryEvent) -> Any:
    """What a consumer gets by applying the event's RFC 6902 patch with a stock library."""
    return jsonpatch.apply_patch(copy.deepcopy(previous), event.patch)


def previous_document(state: EntryState | None) -> Any:
    return None if state is None or state.deleted else state.document


def run(
    commands: Iterable[Command], state: EntryState | None = None, limits: Limits = LIMITS
) -> tuple[EntryState | None, list[EntryEvent]]:
    """Decide each command against the state so far; fold each event in."""
    events = []
    for command in commands:
        event = decide(state, command, ctx(), limits)
        events.append(event)
        state = evolve(state, event)
    return state, events


def nested(depth: int) -> Any:
    """An object nested ``depth`` levels deep: ``{"a": {"a": ... 1}}``."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def recorded(
    cls: type[EntryEvent], version: int, document: Any, *, namespace: str = NS,
    key: str = KEY, **extra: Any,
) -> EntryEvent:
    """An event built directly, as it might sit in old history (no validation at all)."""
    return cls(
        originator_id=stream_id(namespace, key),
        originator_version=version,
        timestamp=T0 + timedelta(minutes=version),
        event_id=UUID(int=10_000 + version),
        namespace=namespace,
        key=key,
        document=document,
        patch=[],
        actor="legacy-importer",
        reason=None,
        correlation_id=f"legacy-{version}",
        causation_id=None,
        idempotency_key=None,
        **extra,
    )


LIVE = EntryState(NS, KEY, 3, {"status": "open", "items": [1, 2], "meta": {"by": "bob"}})
GONE = EntryState(NS, KEY, 4, None, deleted=True)
