"""Parsing of the HTTP-level inputs of a write: body, media type, preconditions, identity."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request

from nexus_ssot.ledger.domain import Expectation
from nexus_ssot.ledger.errors import DocumentTooLarge, InvalidInput, UnsupportedMediaType

_ETAG = re.compile(r'^\s*(?:W/)?"(\d{1,18})"\s*$')
_TOKEN = re.compile(r"^[\x21-\x7e]{1,255}$")
_TEXT = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]{1,1024}$")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_media_type(request: Request, *allowed: str) -> str:
    mt = media_type(request)
    if mt not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type must be {' or '.join(allowed)}, not {mt or 'missing'!r}",
            field="Content-Type",
        )
    return mt


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_bytes``."""
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


def parse_json(body: bytes, *, field: str = "body") -> Any:
    if not body:
        raise InvalidInput(f"{field} is empty; send a JSON document", code="malformed_json",
                           field=field)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"{field} is not valid JSON: {e}", code="malformed_json",
                           field=field) from None


def expectation(request: Request) -> Expectation:
    """If-Match (one strong ETag ``"N"`` or ``*``) and If-None-Match (``*`` only)."""
    if_match = request.headers.get("if-match")
    if_none_match = request.headers.get("if-none-match")
    version: int | None = None
    must_exist = False
    if if_match is not None:
        if if_match.strip() == "*":
            must_exist = True
        else:
            m = _ETAG.match(if_match)
            if m is None:
                raise InvalidInput(
                    f'If-Match must be one entity tag like "3" (the entry version) or *, '
                    f"not {if_match!r}",
                    code="invalid_precondition", field="If-Match",
                )
            version = int(m.group(1))
    if if_none_match is not None and if_none_match.strip() != "*":
        raise InvalidInput(
            f"If-None-Match on a write must be *, not {if_none_match!r}",
            code="invalid_precondition", field="If-None-Match",
        )
    return Expectation(if_match=version, if_none_match=if_none_match is not None,
                       must_exist=must_exist)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
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
    value = request.headers.get("x-reason") or request.query_params.get("reason")
    if value is None:
        return None
    if not _TEXT.match(value):
        raise InvalidInput("reason must be 1-1024 characters of text without line breaks",
                           code="invalid_reason", field="reason")
    return value


def actor(request: Request, *, default: str, trust_header: bool) -> str:
    header = request.headers.get("x-actor")
    if header is None:
        return default
    if not trust_header:
        raise InvalidInput(
            "X-Actor is not accepted: this server takes the actor from its own identity "
            "(start it with --trust-actor-header behind a proxy that sets X-Actor)",
            code="untrusted_actor_header", field="X-Actor",
        )
    if not _TEXT.match(header) or len(header) > 255:
        raise InvalidInput("X-Actor must be 1-255 characters of text", code="invalid_actor",
                           field="X-Actor")
    return header


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def etag(version: int) -> str:
    return f'"{version}"'
