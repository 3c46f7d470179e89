"""The bodies of the schema routes, for the OpenAPI document (and its fuzzing)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Violation(BaseModel):
    path: str = Field(description="JSON Pointer into the document")
    schema_path: str = Field(description="JSON Pointer of the failing keyword, followed "
                             "from the schema's root (through $ref)")
    keyword: str
    message: str


class KeyViolations(BaseModel):
    key: str
    violations: list[Violation]


class Compatibility(BaseModel):
    compatible: bool | None = Field(description="Whether every document valid under the "
                                    "previous schema is valid under this one (null: not "
                                    "decided, see sampled)")
    decided: bool = Field(description="Decided from the two schemas (true), or only "
                          "sampled over the current entries (false)")
    reason: str
    sampled: int | None = Field(None, description="Current entries valid under the "
                                "previous schema, checked against this one")
    broken: list[str] | None = Field(None, description="Keys of sampled entries this "
                                     "schema refuses (a few)")


class DataCheck(BaseModel):
    namespace: str
    checked_position: int = Field(description="The entries as of this position")
    entries: int
    conforming: int
    violating: int
    violations: list[KeyViolations] = Field(description="Violating keys (a page)")
    next_cursor: str | None
    compatibility: Compatibility
    definitions: dict[str, int] = Field(description="The shared schemas' versions it is "
                                        "pinned to")


class SchemaResult(BaseModel):
    namespace: str | None = Field(None, description="A namespace's schema")
    name: str | None = Field(None, description="A shared schema")
    version: int
    position: int
    recorded_at: str
    definitions: dict[str, int]
    allow_existing_violations: bool
    unchanged: bool | None = None
    check: dict[str, int] | None = None
    compatibility: Compatibility | None = None


class RecordedSchema(BaseModel):
    version: int
    position: int
    recorded_at: str
    actor: str
    reason: str | None
    schema_: Any = Field(alias="schema")
    definitions: dict[str, int]
    allow_existing_violations: bool
    removed: bool
    namespace: str | None = None
    name: str | None = None


class DocumentCheck(BaseModel):
    namespace: str
    schema_version: int = Field(description="The version of the schema checked against "
                                "(0: the namespace has none)")
    valid: bool
    violations: list[Violation]
