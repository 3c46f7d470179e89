"""The ledger's one error tree.

Every failure the ledger reports to a caller is a ``LedgerError`` with a stable
machine-readable ``code``, a human ``message`` that names what to fix, and, where one
field is at fault, its ``field``. The HTTP edge maps the branches to status codes in
one place (``api/errors.py``); nothing below the edge knows about HTTP.

    LedgerError
    ├── InvalidInput            the request itself is malformed (bad JSON, bad key, …)
    │   ├── DocumentTooLarge
    │   ├── InvalidUnicode      text holding U+0000 or a lone UTF-16 surrogate
    │   ├── UnsupportedMediaType
    │   ├── NotAcceptable       the Accept header allows none of a resource's media types
    │   └── InvalidPatch        a patch document that is not a valid patch
    ├── Unprocessable           well-formed, but cannot be applied
    │   ├── PatchFailed         a patch operation failed (carries the op index)
    │   ├── IdempotencyKeyReused
    │   ├── InvalidSchema       not a draft 2020-12 JSON Schema the ledger can use
    │   └── SchemaViolation     the document violates its namespace's schema
    ├── SchemaViolations        a schema change that the current entries would violate
    ├── PreconditionFailed      If-Match / If-None-Match did not hold
    ├── EditConflict            a stale write collides with changes made since its base
    ├── NotFound                no such entry (or version)
    │   └── EntryGone           the entry existed and was deleted (carries the version)
    └── Unavailable             the store could not be reached; retry later
        ├── ViewBehind          an asynchronous view has not reached min_position yet
        └── SchemaBehind        migrations are pending and this role may not apply them
"""

from __future__ import annotations

from typing import Any

#: The most of a caller's value an error message quotes: enough to recognise it, while the
#: answer to a 12,000 character key stays small.
QUOTE_LIMIT = 200


def quoted(value: Any) -> str:
    """``value`` as an error message quotes it (``repr``): whole up to QUOTE_LIMIT
    characters, else its start and how long it was."""
    if isinstance(value, str):
        return repr(value) if len(value) <= QUOTE_LIMIT else (
            f"{value[:QUOTE_LIMIT]!r}…({len(value):,} characters)")
    return capped(repr(value))


def capped(text: str) -> str:
    """``text`` (a caller's, named in an error: a member name, a field path) whole up to
    QUOTE_LIMIT characters, else its start and how long it was."""
    if len(text) <= QUOTE_LIMIT:
        return text
    return f"{text[:QUOTE_LIMIT]}…({len(text):,} characters)"


class LedgerError(Exception):
    """Root of every error the ledger reports to its callers."""

    code = "ledger_error"

    def __init__(
        self, message: str, *, code: str | None = None, field: str | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:  # a more precise code within the class's branch
            self.code = code
        self.field = field
        self.extra: dict[str, Any] = extra

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class InvalidInput(LedgerError):
    code = "invalid_input"


class DocumentTooLarge(InvalidInput):
    code = "document_too_large"


class InvalidUnicode(InvalidInput):
    """A string or member name holding what no stored text can: U+0000 (PostgreSQL's
    json types refuse it) or a lone UTF-16 surrogate (half of a pair, no character)."""

    code = "invalid_unicode"


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"


class InvalidPatch(InvalidInput):
    code = "invalid_patch"


class NotAcceptable(InvalidInput):
    """None of the media types the request's Accept allows is one the resource has."""

    code = "not_acceptable"


class Unprocessable(LedgerError):
    code = "unprocessable"


class PatchFailed(Unprocessable):
    code = "patch_failed"


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency_key_reused"


class InvalidSchema(Unprocessable):
    """A schema that is not valid against the draft 2020-12 meta-schema, that does not
    compile, or that refers to what the ledger does not hold (a remote ``$ref``, an unknown
    definition); ``field`` is the JSON Pointer of the problem inside the schema."""

    code = "invalid_schema"


class SchemaViolation(Unprocessable):
    """Carries ``violations``: one {path, schema_path, keyword, message} each."""

    code = "schema_violation"


class SchemaViolations(LedgerError):
    """A schema the namespace's current entries violate (carries the dry run's report)."""

    code = "schema_violations"


class PreconditionFailed(LedgerError):
    code = "precondition_failed"


class EditConflict(LedgerError):
    """Carries ``conflicts``: one {path, base, theirs, ours} per colliding JSON path."""

    code = "edit_conflict"


class NotFound(LedgerError):
    code = "not_found"


class EntryGone(NotFound):
    code = "entry_deleted"


class Unauthenticated(LedgerError):
    """No identity: carries ``reason`` (missing, malformed, expired, …) for the access log;
    the answer names no more than the client needs."""

    code = "unauthenticated"


class Forbidden(LedgerError):
    """An identity the policy does not allow this action; carries ``action``."""

    code = "forbidden"


class Unavailable(LedgerError):
    code = "unavailable"


class ViewBehind(Unavailable):
    code = "view_behind"


class SchemaBehind(Unavailable):
    """The database lacks schema migrations and this process's role may not apply them
    (a service role): ``ssot migrate`` as the schema's owner applies them."""

    code = "schema_not_migrated"


def error_record(error: LedgerError) -> dict[str, Any]:
    """``error`` as plain JSON, whole: what the writer's socket carries and what an
    idempotency key remembers of a refusal (``error_from_record`` makes it again)."""
    return {"type": type(error).__name__, "message": error.message, "code": error.code,
            "field": error.field, "extra": error.extra}


def error_from_record(data: dict[str, Any]) -> LedgerError:
    """A fresh error from ``error_record``'s JSON (a ``LedgerError`` for a type unknown
    here)."""
    cls = globals().get(data["type"])
    if not (isinstance(cls, type) and issubclass(cls, LedgerError)):
        cls = LedgerError
    return cls(data["message"], code=data["code"], field=data["field"], **data["extra"])
