"""Tamper evidence over HTTP: the digests of the log, the key that signs them, and
inclusion proofs of an entry's versions (integrity/digests/)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import fastapi
import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, BeforeValidator, Field
from starlette.responses import Response

from nexus_ssot.integrity import digests
from nexus_ssot.ledger.errors import NotFound, Unavailable

from .errors import problem_responses
from .existence import unless_namespace_missing
from .params import (
    JSON,
    MAX_INT,
    READ_ERRORS,
    Key,
    Namespace,
    address,
    in_digits,
    service_of,
)

router = APIRouter(prefix="/v1")


class DigestModel(BaseModel):
    seq: int = Field(description="1, 2, 3…")
    position: int = Field(description="Global position of the last event covered")
    size: int = Field(description="Events covered (the Merkle tree's leaves)")
    root: str = Field(description="RFC 6962 Merkle tree root, hex")
    recorded_at: str
    prev: str | None = Field(description="The previous digest's hash (null for seq 1)")
    hash: str = Field(description="SHA-256 of the canonical content, hex")
    signature: str | None = Field(description="Ed25519 over the canonical content, hex")
    key_id: str | None


class DigestPage(BaseModel):
    items: list[DigestModel]
    next_after: int | None = Field(description="`after` for the next page (null: no more)")


class PublicKey(BaseModel):
    algorithm: str
    key_id: str = Field(description="First 16 hex digits of SHA-256 of the raw public key")
    public_key_pem: str
    public_key_hex: str = Field(description="The raw 32-byte Ed25519 public key, hex")


class Proof(BaseModel):
    event: dict[str, Any] = Field(description="The event as the log holds it: every hashed "
                                  "member, its hash, position, recorded_at, event_type")
    leaf: dict[str, Any] = Field(description="index (the event's ordinal in the log), "
                                 "data (what the leaf hashes), hash")
    audit_path: list[str] = Field(description="RFC 6962 audit path to the digest's root")
    digest: DigestModel


@functools.lru_cache(maxsize=4)
def _signer(path: Path) -> digests.Signer:
    return digests.Signer.from_file(path)


@router.get(
    "/integrity/public-key",
    summary="The Ed25519 public key that signs the digests",
    response_model=PublicKey,
    responses=READ_ERRORS,
    tags=["integrity"],
)
async def public_key(request: Request) -> Response:
    path = service_of(request).settings.signing_key_file
    if path is None:
        raise NotFound("no signing key is configured (SSOT_SIGNING_KEY_FILE): digests are "
                       "unsigned", code="no_signing_key")
    try:
        signer = _signer(path)
    except digests.SigningKeyError as e:
        raise Unavailable(str(e), code="signing_key_unreadable") from None
    return Response(orjson.dumps(signer.public_json()), media_type=JSON)


@router.get(
    "/integrity/digests",
    summary="The digests of the log, oldest first",
    response_model=DigestPage,
    responses=READ_ERRORS,
    tags=["integrity"],
)
async def list_digests(
    request: Request,
    after: Annotated[int, Query(ge=0, le=MAX_INT, description="Digests with a greater seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 100,
) -> Response:
    async with service_of(request).pool.connection() as conn:
        found = await digests.digests_after(conn, after, limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return Response(orjson.dumps({"items": [d.as_json() for d in found],
                                  "next_after": found[-1].seq if more else None}),
                    media_type=JSON)


@router.get(
    "/integrity/digests/{seq}",
    summary="One digest",
    response_model=DigestModel,
    responses=READ_ERRORS,
    tags=["integrity"],
)
async def get_digest(request: Request,
                     seq: Annotated[int, BeforeValidator(in_digits),
                                    fastapi.Path(ge=1, le=MAX_INT)]) -> Response:
    async with service_of(request).pool.connection() as conn:
        digest = await digests.digest_by_seq(conn, seq)
    if digest is None:
        raise NotFound(f"there is no digest {seq}", code="digest_not_found", field="seq")
    return Response(orjson.dumps(digest.as_json()), media_type=JSON)


@router.get(
    "/namespaces/{namespace}/entries/{key:path}/proof",
    summary="Proof that a version is in the log: the event, its leaf and the audit path "
    "to a digest",
    response_model=Proof,
    responses={**READ_ERRORS, **problem_responses(409, 422)},
    tags=["integrity"],
)
async def entry_proof(
    request: Request,
    namespace: Namespace,
    key: Key,
    version: Annotated[int, Query(ge=1, le=MAX_INT, description="The version to prove")],
    digest: Annotated[int | None, Query(
        ge=1, le=MAX_INT, description="The digest's seq (default: the latest)")] = None,
) -> Response:
    """404 for a version that does not exist, 409 ``not_yet_digested`` (with
    ``next_digest_expected_at``) before a digest covers it, 422 ``not_in_digest`` when the
    named digest precedes it. Check it with ``ops/verify_proof.py`` (standard library)."""
    ns, k = address(namespace, key)
    service = service_of(request)
    async with service.pool.connection() as conn:
        try:
            body = await digests.proof(conn, ns, k, version, digest,
                                       service.settings.digest_every_seconds)
        except NotFound as e:
            if e.code == "digest_not_found":
                raise
            raise await unless_namespace_missing(conn, ns, e) from None
    return Response(orjson.dumps(body), media_type=JSON)
