"""Response shapes, for the OpenAPI document. Hot paths build these bodies directly."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Entry(BaseModel):
    namespace: str
    key: str
    version: int = Field(description="Version of the entry (1, 2, 3…); also its ETag")
    position: int = Field(description="Global log position of the event that made it")
    recorded_at: str = Field(description="Database commit clock, RFC 3339 UTC")
    document: Any = Field(description="The JSON document (null for a deleting version)")


class HistoryEvent(Entry):
    event_type: str = Field(description="entry.created|updated|patched|deleted|restored")
    event_id: str
    actor: str
    reason: str | None
    correlation_id: str
    causation_id: str | None
    idempotency_key: str | None
    patch: list[dict[str, Any]] = Field(description="RFC 6902 patch from the previous version")


class EntryPage(BaseModel):
    items: list[Entry]
    next_cursor: str | None


class HistoryPage(BaseModel):
    items: list[HistoryEvent]
    next_cursor: str | None


class NamespaceCount(BaseModel):
    namespace: str
    entries: int
    deleted: int
    last_position: int


class NamespacePage(BaseModel):
    items: list[NamespaceCount]
    next_cursor: str | None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None
    instance: str | None = None
    correlation_id: str | None = None


class CloudEvent(BaseModel):
    """An entry event as a CloudEvents 1.0 structured JSON object."""

    specversion: str
    id: str
    source: str
    type: str = Field(description="io.nexus.ssot.entry.created|updated|patched|deleted|restored")
    subject: str = Field(description="The entry's key")
    time: str
    datacontenttype: str
    data: dict[str, Any] = Field(description="namespace, key, version, position, document, "
                                 "patch, actor, reason, correlation_id, causation_id")


class EventPage(BaseModel):
    items: list[CloudEvent]
    next_cursor: str | None
