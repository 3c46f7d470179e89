"""The CloudEvents 1.0 (structured JSON) form of an entry event, as broadcast on NATS and
served by the catch-up API. Built from a version-history row and the trace context
stored with its event; encoded with orjson.

An event written in a trace carries its W3C context as the CloudEvents distributed
tracing extension's attributes ``traceparent`` and ``tracestate`` (docs/tracing.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from .chain import timestamp

TYPE_PREFIX = "io.nexus.ssot."
SOURCE_PREFIX = "urn:nexus-ssot:namespace:"

#: The columns a CloudEvent is made of, in ``COLUMNS`` order: its version-history row's
#: (``entry_history h``), then the trace context stored with its event (``ssot_events e``).
FIELDS = ("position", "event_id", "namespace", "key", "version", "event_type", "recorded_at",
          "actor", "reason", "correlation_id", "causation_id", "patch", "document",
          "resolution", "auth", "traceparent", "tracestate")
_TRACE = ("traceparent", "tracestate")
_JSON = ("patch", "document", "resolution", "auth")


def column(name: str) -> str:
    """The SELECT expression of the field ``name`` (JSON columns as JSON text)."""
    if name in _TRACE:
        return f"e.{name}"
    return f"h.{name}::text" if name in _JSON else f"h.{name}"


#: The SELECT list of ``FIELDS``, from ``SOURCE``.
COLUMNS = ", ".join(f"{column(f)} AS {f}" for f in FIELDS)
#: What ``COLUMNS`` selects from: the history joined with its events.
SOURCE = "entry_history h JOIN ssot_events e ON e.notification_id = h.position"


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
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(row["event_id"]),
        "source": SOURCE_PREFIX + row["namespace"],
        "type": TYPE_PREFIX + row["event_type"],
        "subject": row["key"],
        "time": timestamp(recorded_at),
        "datacontenttype": "application/json",
    }
    if row.get("traceparent"):  # the distributed tracing extension
        event["traceparent"] = row["traceparent"]
        if row.get("tracestate"):
            event["tracestate"] = row["tracestate"]
    event["data"] = data
    return orjson.dumps(event)
