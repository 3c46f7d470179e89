"""Checking a schema against the draft 2020-12 meta-schema, compiling it (with the shared
definitions it is pinned to), and telling a document's violations, each with where in
the document (``path``), where in the schema (``schema_path``, the keywords followed from
the schema's root, through ``$ref``), the ``keyword`` and a message a person can act on.

Validation is ``jsonschema-rs`` (docs/schemas.md says why, with the measurements): a
compiled validator is kept per schema version (``SchemaCache``), so a write pays only for
validating its document. Nothing is ever fetched: references are checked beforehand
(``references``) and the validator's retriever refuses any resource it is not given.

``jsonschema-rs`` and its meta-schema validator are loaded on the first schema checked or
compiled (imported where used; ``_meta``): together ~10 MB of memory, which a process that
never meets a schema (the writer of a ledger without schemas, an HTTP worker that serves
no schema request) does not pay.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidSchema, SchemaViolation, capped
from .references import DEFINITION_URN, referenced_definitions

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

#: At most this many violations are listed for one document (``violation_count`` counts
#: them all).
MAX_VIOLATIONS = 100


@functools.cache
def _meta() -> Any:
    """The draft 2020-12 meta-schema's validator (compiled once, on first use)."""
    import jsonschema_rs

    return jsonschema_rs.validator_for({"$schema": DRAFT_2020_12, "$ref": DRAFT_2020_12},
                                       offline=True)


def pointer(parts: Any) -> str:
    """A JSON Pointer (RFC 6901) of a path's parts."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _refuse_retrieval(uri: str) -> Any:
    raise ValueError(f"{uri} is not held by the ledger, which never fetches a schema")


def check_schema(schema: Any) -> dict[str, str]:
    """Check ``schema`` is a draft 2020-12 JSON Schema whose references stay inside the
    ledger; return the shared definitions it names (see ``referenced_definitions``).
    Raises ``InvalidSchema`` naming the JSON Pointer of the first problem."""
    if not isinstance(schema, dict | bool):
        raise InvalidSchema("a schema must be a JSON object (or true/false)", field="")
    if isinstance(schema, dict):
        declared = schema.get("$schema", DRAFT_2020_12)
        if declared != DRAFT_2020_12:
            raise InvalidSchema(
                f"$schema is {capped(repr(declared))}: only draft 2020-12 "
                f"({DRAFT_2020_12}) is supported; remove $schema or name that one",
                field="/$schema")
    problems = sorted(_meta().iter_errors(schema), key=lambda e: len(e.instance_path))
    if problems:
        first = problems[-1]  # the deepest: the member to fix, not its container
        where = pointer(first.instance_path)
        raise InvalidSchema(
            f"the schema is not valid against the draft 2020-12 meta-schema: at "
            f"{where or '/'}: {capped(first.message)}", field=where,
            problems=[{"path": pointer(e.instance_path), "message": capped(e.message)}
                      for e in problems[:MAX_VIOLATIONS]])
    return referenced_definitions(schema)


@dataclass(frozen=True)
class CompiledSchema:
    """A compiled schema: what tells a document's violations."""

    validator: Any
    #: Whether ``format`` asserts (a date that is not a date violates) or annotates.
    assert_formats: bool

    def conforms(self, document: Any) -> bool:
        return bool(self.validator.is_valid(document))

    def violations(self, document: Any, limit: int = MAX_VIOLATIONS) -> list[dict[str, Any]]:
        """Each violation of ``document`` (none when it conforms), at most ``limit``."""
        if self.validator.is_valid(document):
            return []
        found = []
        for error in self.validator.iter_errors(document):
            path = pointer(error.instance_path)
            found.append({
                "path": path,
                "schema_path": pointer(error.evaluation_path),
                "keyword": error.kind.name,
                "message": f"at {path or '/ (the document)'}: {capped(error.message)}",
            })
            if len(found) >= limit:
                break
        return found

    def check(self, document: Any, namespace: str, key: str) -> None:
        """Raise ``SchemaViolation`` listing every violation of ``document``."""
        if self.validator.is_valid(document):
            return
        violations = self.violations(document)
        raise SchemaViolation(
            f"the document of {namespace}/{key} violates the schema of namespace "
            f"{namespace} ({len(violations)} violation{'s' if len(violations) > 1 else ''}"
            f"; first {violations[0]['message']}); nothing was written",
            field="document", namespace=namespace, violations=violations)


def compile_schema(schema: Any, definitions: Mapping[str, Any], *,
                   assert_formats: bool) -> CompiledSchema:
    """Compile ``schema`` with the shared ``definitions`` (name -> schema) it may refer
    to. Raises ``InvalidSchema`` when it does not compile (a bad regular expression, an
    unknown format under ``assert``, a reference to nothing)."""
    import jsonschema_rs

    registry = jsonschema_rs.Registry(
        [(DEFINITION_URN + name, body) for name, body in sorted(definitions.items())],
        retriever=_refuse_retrieval)
    try:
        validator = jsonschema_rs.Draft202012Validator(
            schema, registry=registry, retriever=_refuse_retrieval,
            validate_formats=assert_formats, ignore_unknown_formats=not assert_formats)
    except jsonschema_rs.ValidationError as e:
        where = pointer(e.instance_path)
        raise InvalidSchema(f"the schema does not compile: at {where or '/'}: "
                            f"{capped(e.message)}", field=where) from None
    except (ValueError, jsonschema_rs.ReferencingError) as e:
        raise InvalidSchema(f"the schema does not compile: {capped(str(e))}",
                            field="") from None
    return CompiledSchema(validator, assert_formats)


class SchemaCache:
    """Compiled schemas by a key that names one schema version (and format mode) for
    good, so a compiled schema is never stale; the least recently used go first."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._compiled: OrderedDict[Hashable, CompiledSchema] = OrderedDict()

    def cached(self, key: Hashable) -> CompiledSchema | None:
        """The schema compiled under ``key``, if it still is."""
        return self._compiled.get(key)

    def get(self, key: Hashable, build: Callable[[], CompiledSchema]) -> CompiledSchema:
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = build()
            while len(self._compiled) > self._size:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        return found
