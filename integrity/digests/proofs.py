"""Inclusion proofs of an entry's versions: the event as the log holds it, its Merkle leaf
and the audit path from it to a digest's root (``GET .../proof``; anyone can check one
with ``ops/verify_proof.py``, standard library only)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import psycopg

from nexus_ssot.ledger import chain
from nexus_ssot.ledger.addressing import stream_id
from nexus_ssot.ledger.errors import EditConflict, NotFound, Unprocessable
from nexus_ssot.ledger.events import TYPE_OF_TOPIC

from .record import digest_by_seq, latest_digest
from .tree import leaf_of, stored_audit_path


class NotYetDigested(EditConflict):
    """409: no digest covers the event yet (the next is expected by ``expected_at``)."""

    code = "not_yet_digested"


async def proof(conn: psycopg.AsyncConnection[Any], namespace: str, key: str, version: int,
                seq: int | None, every_seconds: float) -> dict[str, Any]:
    """The event ``version`` of ``namespace/key`` from the log, its leaf and audit path to
    digest ``seq`` (default: the latest), and that digest."""
    cur = await conn.execute(
        "SELECT notification_id, recorded_at, topic, state FROM ssot_events"
        " WHERE originator_id = %s AND originator_version = %s",
        (stream_id(namespace, key), version))
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute("SELECT 1 FROM ssot_events WHERE originator_id = %s LIMIT 1",
                                 (stream_id(namespace, key),))
        if await cur.fetchone() is None:
            raise NotFound(f"entry {namespace}/{key} has no history", code="entry_not_found",
                           field="key")
        raise NotFound(f"entry {namespace}/{key} has no version {version}",
                       code="version_not_found", field="version")
    position, recorded_at, topic, state = int(row[0]), row[1], row[2], orjson.loads(row[3])
    digest = await latest_digest(conn) if seq is None else await digest_by_seq(conn, seq)
    if seq is not None and digest is None:
        raise NotFound(f"there is no digest {seq}", code="digest_not_found", field="digest")
    cur = await conn.execute("SELECT idx FROM merkle_leaves WHERE position = %s", (position,))
    leaf_row = await cur.fetchone()
    if leaf_row is None or digest is None:
        last = digest if seq is None else await latest_digest(conn)
        expected = (last.recorded_at if last else recorded_at) + timedelta(seconds=every_seconds)
        raise NotYetDigested(
            f"version {version} of {namespace}/{key} (position {position}) is in no digest "
            f"yet; the next one is expected by {chain.timestamp(expected)} while a "
            "digester runs", field="version", position=position,
            digested_through=last.position if last else 0,
            next_digest_expected_at=chain.timestamp(expected))
    index = int(leaf_row[0])
    if index >= digest.size:
        raise Unprocessable(
            f"digest {digest.seq} covers the log up to position {digest.position}, before "
            f"version {version} of {namespace}/{key} (position {position}): name a later "
            "digest, or none for the latest", code="not_in_digest", field="digest")
    fields = {**state, "stream": str(stream_id(namespace, key)), "version": version,
              "type": TYPE_OF_TOPIC.get(topic, topic)}
    event: dict[str, Any] = chain.hashed_members(fields)
    event.update(position=position, recorded_at=chain.timestamp(recorded_at),
                 event_type=event["type"], hash=state.get("hash"))
    leaf = leaf_of(position, recorded_at, state.get("hash"))
    path = await stored_audit_path(conn, index, digest.size)
    return {
        "event": event,
        "leaf": {"index": index, "hash": leaf.hex(), "data": chain.canonical(
            {"position": position, "recorded_at": event["recorded_at"],
             "hash": event["hash"]}).decode()},
        "audit_path": [p.hex() for p in path],
        "digest": digest.as_json(),
    }
