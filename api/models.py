"""Response shapes, for the OpenAPI document. Hot paths build these bodies directly."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Entry(BaseModel):
    namespace: str
    key: str
    version: int = Field(description="Version of the entry (1, 2, 3…); also its ETag")
    position: int = Field(description="Global log position of the event that made it")
    recorded_at: str = Field(description="Database commit clock, RFC 3339 UTC")
    document: Any = Field(description="The JSON document (null for a deleting version)")


class WriteResult(Entry):
    """The answer to a write; the resolution members appear when its If-Match was stale,
    ``unchanged`` when it appended nothing."""

    unchanged: bool | None = Field(
        None, description="true: the entry already was what the write asked for, so "
        "nothing was appended; version, position and recorded_at are those of the "
        "version it found (absent when the write appended an event)")
    document_hidden: bool | None = Field(
        None, description="true: the caller may write the entry but not read it, so the "
        "document is not shown (null)")
    merged: bool | None = Field(None, description="A stale If-Match merged by replay")
    base_version: int | None = Field(None, description="The version the write was based on")
    rebased_over: list[int] | None = Field(None, description="The versions it was merged over")
    resolution: dict[str, Any] | None = Field(
        None, description='How a stale If-Match was resolved: {"policy": "merge", '
        '"base_version", "rebased_over"} or {"policy": "last-writer-wins", '
        '"expected_version", "overwritten_version"}')


class HistoryEvent(Entry):
    event_type: str = Field(description="entry.created|updated|patched|deleted|restored, "
                            "namespace.configured")
    event_id: str
    actor: str
    reason: str | None
    correlation_id: str
    causation_id: str | None
    idempotency_key: str | None
    patch: list[dict[str, Any]] = Field(description="RFC 6902 patch from the previous version")
    resolution: dict[str, Any] | None = Field(
        None, description="How a stale If-Match was resolved (null when it was not stale)")
    auth: dict[str, Any] | None = Field(
        None, description='How the actor authenticated, e.g. {"method": "token", '
        '"token_id": "3f2a…"} or {"method": "oidc", "issuer": "https://idp.example"}, '
        'with "proxy" and "on_behalf_of" when a trusted proxy acted for an end user; never '
        "a secret. Absent for events recorded before it was")


class EntryPage(BaseModel):
    items: list[Entry]
    next_cursor: str | None


class HistoryPage(BaseModel):
    items: list[HistoryEvent]
    next_cursor: str | None


class NamespaceCount(BaseModel):
    """Counts are null where the caller may read only some keys of the namespace."""

    namespace: str
    entries: int | None
    deleted: int | None
    last_position: int | None
    #: When the change at ``last_position`` was recorded (RFC 3339).
    last_recorded_at: str | None


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
    type: str = Field(description="io.nexus.ssot.entry.created|updated|patched|deleted|"
                      "restored, or io.nexus.ssot.namespace.configured")
    subject: str = Field(description="The entry's key")
    time: str
    datacontenttype: str
    data: dict[str, Any] = Field(description="namespace, key, version, position, document, "
                                 "patch, actor, reason, correlation_id, causation_id; "
                                 "resolution when a stale If-Match was resolved; auth (how "
                                 "the actor authenticated) when it was recorded")


class EventPage(BaseModel):
    items: list[CloudEvent]
    next_cursor: str | None


class NamespaceSettings(BaseModel):
    conflict_policy: Literal["merge", "strict", "last-writer-wins"] = Field(
        "merge", description="What a write with a stale If-Match does: merge (three-way, "
        "409 on colliding paths), strict (412), last-writer-wins (applies, recorded)")
    schema_format: Literal["annotate", "assert"] = Field(
        "annotate", description="Whether `format` in the namespace's schema only annotates "
        "(the default) or asserts (docs/schemas.md); shown once set")
    description: str | None = Field(None, max_length=1024)


class Namespace(BaseModel):
    namespace: str
    settings: NamespaceSettings
    settings_version: int = Field(description="Version of the settings (0: never set); "
                                  "their ETag")
    entries: int | None = Field(description="null where the caller may read only some keys")
    deleted: int | None
    last_position: int | None


class SettingsResult(BaseModel):
    namespace: str
    settings: NamespaceSettings
    settings_version: int
    position: int
    recorded_at: str
    unchanged: bool | None = Field(
        None, description="true: these were the settings already, so nothing was "
        "recorded; settings_version and position are those of the settings found")


class BatchResult(BaseModel):
    correlation_id: str
    operations: list[WriteResult]


class RestoreStep(BaseModel):
    key: str
    action: Literal["revert", "recreate", "delete"]
    from_version: int = Field(description="The entry's version before the restore")
    to_version: int | None = Field(description="The version whose content it gets back "
                                   "(null for a delete)")
    patch: list[dict[str, Any]] = Field(description="RFC 6902 patch from now to then")
    version: int | None = Field(None, description="The version the restore appended "
                                "(absent on a dry run)")
    position: int | None = None


class RestoreResult(BaseModel):
    namespace: str
    key_prefix: str
    position: int = Field(description="The cut restored to")
    dry_run: bool
    correlation_id: str
    operations: list[RestoreStep]


class NamespaceStats(BaseModel):
    namespace: str
    entries: int = Field(description="Live entries")
    deleted: int = Field(description="Entries whose last event deleted them")
    writes: int = Field(description="Events ever appended in the namespace")
    last_position: int | None = Field(description="The position of its last entry event "
                                      "(null: none applied yet, e.g. only settings)")
    last_recorded_at: str | None
    writes_by_actor: dict[str, int]
    view_position: int = Field(description="The log position the view has applied")
