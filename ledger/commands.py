"""What a write asks for: the commands ``decide`` takes, their preconditions, and the
context the edge supplies (who, why, when) so that the decision stays pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class Expectation:
    """Preconditions of a write: ``if_match`` is the version the writer last saw;
    ``if_none_match`` asks for create-only (fails if the entry currently exists)."""

    if_match: int | None = None
    if_none_match: bool = False
    must_exist: bool = False  # If-Match: *
    #: The exact current version, live or deleted (0: never written). Not subject to the
    #: namespace's conflict policy: what a restore plan was computed against.
    at_version: int | None = None


@dataclass(frozen=True)
class Command:
    namespace: str
    key: str
    expected: Expectation = Expectation()


@dataclass(frozen=True)
class Put(Command):
    document: Any = None


@dataclass(frozen=True)
class MergePatch(Command):
    patch: Any = None


@dataclass(frozen=True)
class JsonPatch(Command):
    operations: Any = None


@dataclass(frozen=True)
class Delete(Command):
    pass


@dataclass(frozen=True)
class Restore(Command):
    """Bring back the content an entry had at ``from_version`` (also undeletes)."""

    from_version: int = 0
    document: Any = None


@dataclass(frozen=True)
class ConfigureNamespace(Command):
    """Set the settings of the namespace named by ``key`` (its stream lives in the system
    namespace ``SETTINGS_NAMESPACE``). Build it with ``configure()``."""

    settings: Any = None


@dataclass(frozen=True)
class SetSchema(Command):
    """Set a schema: a namespace's (key ``namespaces/<namespace>``) or a shared definition
    (``definitions/<name>``) in the system namespace ``SCHEMAS_NAMESPACE``. ``record`` is
    the stored document (``schemas.records``). ``checked_position`` is the namespace's last
    position when its entries were checked against the schema: the write is refused if an
    entry of the namespace changed since (None: not checked, a definition)."""

    record: Any = None
    checked_position: int | None = None


#: A write's W3C trace context, its ``traceparent`` and ``tracestate`` header values
#: (``telemetry``; docs/tracing.md).
Trace = tuple[str, str | None]


@dataclass(frozen=True)
class Context:
    """Who, why and when, supplied by the edge so the decision stays pure."""

    event_id: UUID
    timestamp: datetime
    actor: str
    correlation_id: str
    reason: str | None = None
    causation_id: str | None = None
    idempotency_key: str | None = None
    #: How the actor authenticated (``Identity.auth_record()``: ``method`` and, as they
    #: apply, ``issuer``, ``token_id``, ``proxy`` and ``on_behalf_of``; never a secret),
    #: or None.
    auth: dict[str, Any] | None = None
    #: The trace context the request came in (stored with each event it appends, not part
    #: of the event's content or hash), or None.
    trace: Trace | None = None
