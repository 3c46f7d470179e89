"""The CloudEvents 1.0 (structured JSON) form of an entry event, as broadcast on NATS and
served by the catch-up API. Built from a version-history row; encoded with orjson."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

TYPE_PREFIX = "io.nexus.ssot."
SOURCE_PREFIX = "urn:nexus-ssot:namespace:"

#: The history columns a CloudEvent is made of, in ``COLUMNS`` order.
FIELDS = ("position", "event_id", "namespace", "key", "version", "event_type", "recorded_at",
          "actor", "reason", "correlation_id", "causation_id", "patch", "document",
          "resolution", "auth")
#: The SELECT list of ``FIELDS`` (the JSON columns as JSON text).
COLUMNS = ", ".join(f"{f}::text AS {f}" if f in ("patch", "document", "resolution", "auth")
                    else f for f in FIELDS)


def cloudevent(row: dict[str, Any]) -> bytes:
    """The structured CloudEvent of one history row (see ``COLUMNS``)."""
    recorded_at: datetime = row["recorded_at"]
    data = {
        "namespace": row["namespace"],
        "key": row["key"],
        "version": row["version"],
        "position": row["position"],
        "document": orjson.Fragment(row["document"] or "null"),
        "patch": orjson.Fragment(row["patch"]),
        "actor": row["actor"],
        "reason": row["reason"],
        "correlation_id": row["correlation_id"],
        "causation_id": row["causation_id"],
    }
    if row.get("resolution"):  # how a stale If-Match was resolved (merge, last-writer-wins)
        data["resolution"] = orjson.Fragment(row["resolution"])
    if row.get("auth"):  # how the actor authenticated (absent for events from before it)
        # decoded, not a Fragment: jsonb's text spaces its members, unlike the rest
        data["auth"] = orjson.loads(row["auth"])
    return orjson.dumps({
        "specversion": "1.0",
        "id": str(row["event_id"]),
        "source": SOURCE_PREFIX + row["namespace"],
        "type": TYPE_PREFIX + row["event_type"],
        "subject": row["key"],
        "time": recorded_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "datacontenttype": "application/json",
        "data": data,
    })
