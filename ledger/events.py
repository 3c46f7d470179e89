"""An entry's events, the state they fold into, and the aggregate the event store loads.

``evolve(state, event)`` folds an event into state and never raises, so history recorded
under older rules always loads. Versions count 1, 2, 3… across deletes: a PUT after a
delete re-creates the entry as the next version, so its history is never broken.

The topic stored with each event names its class; ``TYPE_OF_TOPIC`` is the one map from
a stored topic to the event's public type name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, AggregateEvent
from eventsourcing.utils import register_topic


@dataclass(frozen=True)
class EntryState:
    """The folded state of one entry stream. ``deleted`` entries keep their last version."""

    namespace: str
    key: str
    version: int
    document: Any
    deleted: bool = False
    #: The hash of its last event (the next event's ``prev_hash``); None if unchained.
    #: Not part of equality: two states with the same content are the same state.
    hash: str | None = field(default=None, compare=False)
    #: Where its last event is: its id, and (once committed) its global position and
    #: commit time. What a write that leaves the entry unchanged answers with, so that
    #: answer needs no read; None where not known (an event not yet committed).
    event_id: UUID | None = field(default=None, compare=False)
    position: int | None = field(default=None, compare=False)
    recorded_at: datetime | None = field(default=None, compare=False)

    def placed(self, position: int, recorded_at: datetime) -> EntryState:
        """This state once its last event is committed at ``position`` and
        ``recorded_at``: ``dataclasses.replace`` without its walk over the fields, which
        the writer paid for every event it committed."""
        return EntryState(self.namespace, self.key, self.version, self.document,
                          self.deleted, self.hash, self.event_id, position, recorded_at)


# The topic stored with every event names its class: each class gives its own (an explicit
# TOPIC is inherited), fixed as first stored (by ``nexus_ssot.ledger.domain``, where the
# classes lived then), wherever the class lives now.


class Entry(Aggregate):
    """The event-sourced aggregate of one entry; its state is an ``EntryState``."""

    TOPIC = "nexus_ssot.ledger.domain:Entry"
    state: EntryState | None

    class Created(Aggregate.Created):
        """The library's creation event, which entries never use (``EntryCreated`` creates
        them); an aggregate with an explicit topic must give it one too."""

        TOPIC = "nexus_ssot.ledger.domain:Entry.Created"


@dataclass(frozen=True)
class EntryEvent(AggregateEvent):
    """Base of every entry event: the resulting document, the RFC 6902 patch from the
    previous version, and the metadata of the change."""

    TOPIC = "nexus_ssot.ledger.domain:EntryEvent"

    event_id: UUID
    namespace: str
    key: str
    document: Any
    patch: list[dict[str, Any]]
    actor: str
    reason: str | None
    correlation_id: str
    causation_id: str | None
    idempotency_key: str | None
    #: How a stale If-Match was resolved under the namespace's conflict policy, e.g.
    #: {"policy": "merge", "base_version": 3, "rebased_over": [4, 5]}; None otherwise.
    resolution: dict[str, Any] | None = None
    #: The hash chain of the stream (see ``integrity``): the previous event's hash (None
    #: for version 1) and this event's own.
    prev_hash: str | None = None
    hash: str | None = None
    #: How the actor authenticated, e.g. {"method": "token", "token_id": "3f2a…"} (see
    #: ``access.identity.Identity.auth_record``); None when unknown (events before it).
    auth: dict[str, Any] | None = None

    #: 2 added ``resolution``, 3 the hash chain, 4 ``auth``; older events load with None
    #: for them (``ssot verify`` reports an unchained event as such). 5 added no member:
    #: its hash covers every member it stores (``chain.WHOLE_STATE``).
    class_version = 5

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["resolution"] = None

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["prev_hash"] = state["hash"] = None

    @staticmethod
    def upcast_v3_v4(state: dict[str, Any]) -> None:
        state["auth"] = None

    @staticmethod
    def upcast_v4_v5(state: dict[str, Any]) -> None:
        """Nothing to add: version 5 changed what the hash covers, not the members."""

    def mutate(self, aggregate: Any) -> Any:
        if aggregate is None:
            aggregate = Entry.__new__(Entry)
            aggregate.__base_init__(self.originator_id, 0, self.timestamp)
            aggregate.state = None
        return super().mutate(aggregate)

    def apply(self, aggregate: Any) -> None:
        aggregate.state = evolve(aggregate.state, self)


@dataclass(frozen=True)
class EntryCreated(EntryEvent):
    TOPIC = "nexus_ssot.ledger.domain:EntryCreated"


@dataclass(frozen=True)
class EntryUpdated(EntryEvent):
    TOPIC = "nexus_ssot.ledger.domain:EntryUpdated"


@dataclass(frozen=True)
class EntryPatched(EntryEvent):
    TOPIC = "nexus_ssot.ledger.domain:EntryPatched"


@dataclass(frozen=True)
class EntryDeleted(EntryEvent):
    TOPIC = "nexus_ssot.ledger.domain:EntryDeleted"


@dataclass(frozen=True)
class EntryRestored(EntryEvent):
    TOPIC = "nexus_ssot.ledger.domain:EntryRestored"
    restored_from_version: int = 0


@dataclass(frozen=True)
class NamespaceConfigured(EntryEvent):
    """New settings of the namespace named by ``key``; ``document`` holds them."""

    TOPIC = "nexus_ssot.ledger.domain:NamespaceConfigured"


#: The stable, public name of each event type (used in history, CloudEvents, audit).
EVENT_TYPE_NAMES: dict[type[EntryEvent], str] = {
    EntryCreated: "entry.created",
    EntryUpdated: "entry.updated",
    EntryPatched: "entry.patched",
    EntryDeleted: "entry.deleted",
    EntryRestored: "entry.restored",
    NamespaceConfigured: "namespace.configured",
}

#: The public event type name of each stored topic.
TYPE_OF_TOPIC: dict[str, str] = {cls.TOPIC: name for cls, name in EVENT_TYPE_NAMES.items()}

# Registered, so that a stored topic resolves before any event is written here (the library
# registers Entry's and Entry.Created's as it defines them).
_EVENT_CLASSES: list[type[EntryEvent]] = [EntryEvent, *EVENT_TYPE_NAMES]
for _event_class in _EVENT_CLASSES:
    register_topic(_event_class.TOPIC, _event_class)


def evolve(state: EntryState | None, event: EntryEvent) -> EntryState:
    """Fold one event into the entry state. Never raises: history always loads."""
    return EntryState(
        namespace=event.namespace,
        key=event.key,
        version=event.originator_version,
        document=event.document,
        deleted=isinstance(event, EntryDeleted),
        hash=event.hash,
        event_id=event.event_id,
    )
