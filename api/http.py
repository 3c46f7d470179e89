"""Parsing of the HTTP-level inputs of a write: body, media type, preconditions, identity;
and the HTTP forms of a time (RFC 3339) and of a version (ETag)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request

from nexus_ssot.ledger.chain import timestamp
from nexus_ssot.ledger.commands import Expectation
from nexus_ssot.ledger.errors import (
    DocumentTooLarge,
    InvalidInput,
    InvalidUnicode,
    PreconditionFailed,
    UnsupportedMediaType,
    quoted,
)

from . import strict_json

_ETAG = re.compile(r'^\s*(W/)?"(\d{1,18})"\s*$')
_TOKEN = re.compile(r"^[\x21-\x7e]{1,255}$")
_TEXT = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]{1,1024}$")


_FIELDS = {"content-type": "Content-Type", "content-encoding": "Content-Encoding",
           "if-match": "If-Match", "if-none-match": "If-None-Match",
           "idempotency-key": "Idempotency-Key", "x-reason": "X-Reason", "x-actor": "X-Actor"}


#: Each of those names as the server gives it (``scope["headers"]``: lower case, bytes).
_RAW = {name: name.encode("latin-1") for name in _FIELDS}


def header(request: Request, name: str) -> str | None:
    """The one value of header ``name`` (lower case): given twice, which would count?
    (Searched in the request's raw headers: several of these are asked for on every
    write, and each ``request.headers`` lookup builds a list.)"""
    raw = _RAW[name]
    found: bytes | None = None
    times = 0
    for key, value in request.scope["headers"]:
        if key == raw:
            found = value
            times += 1
    if times > 1:
        raise InvalidInput(f"{_FIELDS[name]} is given {times} times; give it once",
                           code="duplicate_header", field=_FIELDS[name])
    return None if found is None else found.decode("latin-1")


def media_type(request: Request) -> str:
    return _bare(header(request, "content-type") or "")


def _bare(content_type: str) -> str:
    """A Content-Type's media type, without its parameters, in lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def require_media_type(request: Request, *allowed: str) -> str:
    """The body's media type, one of ``allowed``, in UTF-8 (the only charset of JSON)."""
    given = header(request, "content-type") or ""
    mt = _bare(given)
    if mt not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type must be {' or '.join(allowed)}, not {quoted(mt or 'missing')}",
            field="Content-Type",
        )
    for parameter in given.split(";")[1:]:
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(
                f"Content-Type's charset must be utf-8 (JSON is UTF-8), not {quoted(charset)}",
                field="Content-Type")
    return mt


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_bytes``; 415 when it
    comes compressed (no content coding is supported)."""
    coding = (header(request, "content-encoding") or "identity").strip().lower()
    if coding != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {quoted(coding)} is not supported: send the body uncompressed",
            code="unsupported_content_encoding", field="Content-Encoding")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise DocumentTooLarge(
            f"request body is {declared} bytes; the limit is {max_bytes}",
            code="request_too_large", field="body",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise DocumentTooLarge(
                f"request body exceeds the limit of {max_bytes} bytes", field="body"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes, *, field: str = "body", root: str | None = None) -> Any:
    """``body`` as JSON (RFC 8259, UTF-8), refused when the ledger could not store exactly
    what was sent: a duplicate member name (which value would it be?), an integer outside
    64 bits or a number beyond IEEE 754 doubles (orjson would round or refuse it), a lone
    surrogate, a NUL character, another encoding. ``field`` names the body in errors about
    all of it; ``root`` (default ``field``) starts the JSON path of errors inside it."""
    if not body:
        raise InvalidInput(f"{field} is empty; send a JSON document", code="malformed_json",
                           field=field)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise _refusal(body, field, field if root is None else root, str(e)) from None
    if _may_be_ambiguous(body, value):
        ambiguity = strict_json.first_ambiguity(body, field if root is None else root)
        if ambiguity is not None:
            raise ambiguity
    return value


def _may_be_ambiguous(body: bytes, value: Any) -> bool:
    """Whether ``body`` (valid JSON, read as ``value``) may hold what strict_json refuses,
    by byte counts and searches that cost a few percent of the parse (regular expressions
    would cost more than the parse). Mostly false alarms, which the exact parse clears.

    A member name given twice leaves fewer colons in ``value`` written back than in
    ``body`` (colons inside strings are the same on both sides unless escaped as \\u003a).
    A number orjson would not keep exactly has 20 digits in a row, or 19 after a minus (an
    integer beyond 64 bits: 2^64 - 1 has 20 digits, -2^63 - 1 19; a fraction of hundreds
    of zeros), or a three-digit exponent right after a digit, as JSON writes one. Not 19
    digits alone (an id, a time in nanoseconds), nor a bare ``e-100``, which is text
    (``"service-100"``, ``"node-2999"``): each was a false alarm, and the exact parse ~5 %
    of such a PUT."""
    # a NUL, or an escaped colon (which the colon count below would miss); not every
    # \u00XX: clients that write non-ASCII text as escapes ("caf\u00e9", Python's
    # json.dumps by default) sent every such body to the exact parse
    # (``find``, not ``in``: on Python 3.11 ``needle in body`` tries the needle as an
    # integer first and drops the TypeError that makes, ~2K instructions each)
    find = body.find
    if find(b"\\u0000") != -1 or find(b"\\u003a") != -1 or find(b"\\u003A") != -1:
        return True
    if body.count(b":") != orjson.dumps(value).count(b":"):
        return True
    find = body.translate(_NUMBER_SHAPE).find
    return (find(_TWENTY_DIGITS) != -1 or find(_SIGNED_NINETEEN) != -1
            or find(b"0e000") != -1 or find(b"0e+000") != -1)


def _refusal(body: bytes, field: str, root: str, reason: str) -> InvalidInput:
    if "infinity" in reason:
        ambiguity = strict_json.first_ambiguity(body, root)
        if ambiguity is not None:
            return ambiguity
    if "depth limit" in reason:
        return InvalidInput(f"{field} is nested too deeply to parse ({reason})",
                            code="document_too_deep", field=field)
    if "byte order mark" in reason or "UTF-8" in reason:
        return InvalidInput(f"{field} must be UTF-8 without a byte order mark ({reason})",
                            code="invalid_encoding", field=field)
    if "surrogate" in reason:  # a \u escape of one: the exact parse says where
        ambiguity = strict_json.first_ambiguity(body, root)
        if ambiguity is not None and ambiguity.field:
            return ambiguity
        return InvalidUnicode(f"{field} has a \\u escape of a lone UTF-16 surrogate, which is "
                              f"no character ({reason})", field=field)
    return InvalidInput(f"{field} is not valid JSON: {reason}", code="malformed_json",
                        field=field)


#: Digits as 0, e and E as e, signs as +, anything else as a space: numbers' shapes.
_NUMBER_SHAPE = bytes(
    ord("0") if 48 <= b <= 57 else ord("e") if b in b"eE" else ord("+") if b in b"+-"
    else ord(" ") for b in range(256))
#: Shapes of numbers orjson would not keep exactly (``_may_be_ambiguous``).
_TWENTY_DIGITS = b"0" * 20
_SIGNED_NINETEEN = b"+" + b"0" * 19


def expectation(request: Request) -> Expectation:
    """If-Match (one strong ETag ``"N"`` or ``*``) and If-None-Match (``*`` only).

    A weak tag (``W/"N"``) is a well-formed If-Match that never matches: RFC 9110 §13.1.1
    compares If-Match strongly, so the write fails its precondition (412) rather than
    being taken for the strong tag it resembles."""
    if_match = header(request, "if-match")
    if_none_match = header(request, "if-none-match")
    version: int | None = None
    must_exist = False
    weak_tag: str | None = None
    if if_match is not None:
        if if_match.strip() == "*":
            must_exist = True
        else:
            m = _ETAG.match(if_match)
            if m is None:
                raise InvalidInput(
                    f'If-Match must be one entity tag like "3" (the entry version) or *, '
                    f"not {quoted(if_match)}",
                    code="invalid_precondition", field="If-Match",
                )
            version = int(m.group(2))
            if m.group(1) is not None:
                weak_tag = if_match.strip()
    if if_match is not None and if_none_match is not None:
        raise InvalidInput("give If-Match (the entry exists, at that version) or "
                           "If-None-Match: * (it does not), not both",
                           code="invalid_precondition", field="If-None-Match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise InvalidInput(
            f"If-None-Match on a write must be *, not {quoted(if_none_match)}",
            code="invalid_precondition", field="If-None-Match",
        )
    if weak_tag is not None:
        raise PreconditionFailed(
            f"If-Match {weak_tag} is a weak entity tag, and a weak tag never matches "
            f'If-Match (RFC 9110 §13.1.1 compares strongly): send the strong tag "{version}" '
            "as the ETag header gives it", field="If-Match")
    return Expectation(if_match=version, if_none_match=if_none_match is not None,
                       must_exist=must_exist)


def none_match(given: str | None, tag: str) -> bool:
    """Whether a read's If-None-Match (``given``) names ``tag`` (one of its list, or
    ``*``), compared weakly as RFC 9110 §13.1.2 says: ``W/"3"`` and ``"3"`` are the same
    version."""
    if given is None:
        return False
    listed = [t.strip().removeprefix("W/") for t in given.split(",")]
    return "*" in listed or tag in listed


def idempotency_key(request: Request) -> str | None:
    key = header(request, "idempotency-key")
    if key is None:
        return None
    if not _TOKEN.match(key):
        raise InvalidInput(
            "Idempotency-Key must be 1-255 visible ASCII characters",
            code="invalid_idempotency_key", field="Idempotency-Key",
        )
    return key


def request_hash(request: Request, body: bytes) -> bytes:
    """What makes two requests with one Idempotency-Key "the same request"."""
    h = hashlib.sha256()
    for part in (
        request.method,
        request.url.path,
        media_type(request),
        request.headers.get("if-match", ""),
        request.headers.get("if-none-match", ""),
    ):
        h.update(part.encode())
        h.update(b"\x00")
    h.update(body)
    return h.digest()


def reason(request: Request) -> str | None:
    value = header(request, "x-reason")
    if value is None and request.scope.get("query_string"):  # (parsed only when sent)
        value = request.query_params.get("reason")
    if value is None:
        return None
    if not _TEXT.match(value):
        raise InvalidInput("reason must be 1-1024 characters of text without line breaks",
                           code="invalid_reason", field="reason")
    return value


def actor(request: Request, *, default: str, trust_header: bool) -> str:
    given = header(request, "x-actor")
    if given is None:
        return default
    if not trust_header:
        raise InvalidInput(
            "X-Actor is not accepted: this server takes the actor from its own identity "
            "(start it with --trust-actor-header behind a proxy that sets X-Actor)",
            code="untrusted_actor_header", field="X-Actor",
        )
    if not _TEXT.match(given) or len(given) > 255:
        raise InvalidInput("X-Actor must be 1-255 characters of text", code="invalid_actor",
                           field="X-Actor")
    return given


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return timestamp(moment)


def etag(version: int) -> str:
    return f'"{version}"'
