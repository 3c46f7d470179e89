"""What the ledger stores for a schema: the entry ``_schemas/namespaces/<ns>`` (a
namespace's schema) or ``_schemas/definitions/<name>`` (a shared definition), whose
document is a record::

    {"schema": {...}, "definitions": {"money": 3}, "allow_existing_violations": false}

``definitions`` pins the version of each shared definition the schema refers to (directly
or through another definition), taken when the schema was set: what a schema means never
changes after it is recorded, so "the schema current at a position" is one record. A
deleted namespace schema entry means "no schema"."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..addressing import SCHEMAS_NAMESPACE, check_namespace
from ..errors import InvalidInput, InvalidSchema, quoted
from ..events import EntryState
from .compiler import check_schema

NAMESPACE_PREFIX = "namespaces/"
DEFINITION_PREFIX = "definitions/"

#: A shared definition's name, as in ``urn:ssot:schemas:<name>``.
DEFINITION_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class SchemaRecord:
    """A schema as recorded: the JSON Schema, the definition versions it is pinned to,
    whether it was set over entries violating it, and the version of its entry."""

    schema: Any
    definitions: dict[str, int] = field(default_factory=dict)
    allow_existing_violations: bool = False
    version: int = 0

    def document(self) -> dict[str, Any]:
        """The stored document of this record."""
        return {"schema": self.schema, "definitions": dict(sorted(self.definitions.items())),
                "allow_existing_violations": self.allow_existing_violations}


def namespace_key(namespace: str) -> str:
    return NAMESPACE_PREFIX + check_namespace(namespace)


def definition_key(name: str) -> str:
    return DEFINITION_PREFIX + check_definition_name(name)


def check_definition_name(name: str) -> str:
    if not DEFINITION_NAME.fullmatch(name):
        raise InvalidInput(
            f"schema name {quoted(name)} is invalid: use 1-63 lowercase letters, digits, "
            "'_', '.' or '-', starting with a letter or digit",
            code="invalid_schema_name", field="name")
    return name


def is_namespace_schema(namespace: str, key: str) -> bool:
    return namespace == SCHEMAS_NAMESPACE and key.startswith(NAMESPACE_PREFIX)


def record_from(document: Any, version: int) -> SchemaRecord | None:
    """The record a stored document holds (None: a deleted entry, no schema). Never
    raises: what was recorded is read as it was."""
    if not isinstance(document, dict) or "schema" not in document:
        return None
    pins = document.get("definitions")
    return SchemaRecord(
        schema=document["schema"],
        definitions=dict(pins) if isinstance(pins, dict) else {},
        allow_existing_violations=bool(document.get("allow_existing_violations")),
        version=version,
    )


def record_of(state: EntryState | None) -> SchemaRecord | None:
    """The record of a schema entry's state (None: never set, or deleted)."""
    if state is None or state.deleted:
        return None
    return record_from(state.document, state.version)


def check_record(key: str, document: Any) -> dict[str, Any]:
    """Validate the record to store under ``key``; return it as stored. Its schema must
    be a draft 2020-12 schema whose shared definitions are all pinned."""
    if key.startswith(NAMESPACE_PREFIX):
        check_namespace(key[len(NAMESPACE_PREFIX):])
    elif key.startswith(DEFINITION_PREFIX):
        check_definition_name(key[len(DEFINITION_PREFIX):])
    else:
        raise InvalidInput(f"{quoted(key)} names no schema", code="invalid_key", field="key")
    if not isinstance(document, dict) or "schema" not in document:
        raise InvalidSchema("a schema record is an object with a schema", field="")
    pins = document.get("definitions", {})
    if not isinstance(pins, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pins.values()):
        raise InvalidSchema("definitions must map names to versions", field="definitions")
    allow = document.get("allow_existing_violations", False)
    if not isinstance(allow, bool):
        raise InvalidSchema("allow_existing_violations must be true or false",
                            field="allow_existing_violations")
    for name, where in check_schema(document["schema"]).items():
        if name not in pins:
            raise InvalidSchema(f"$ref at {where} names the shared schema {quoted(name)}, "
                                "which is not pinned", field=where)
    return SchemaRecord(document["schema"], {str(k): v for k, v in pins.items()},
                        allow).document()
