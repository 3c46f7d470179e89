"""Where an entry lives: its namespace and key, checked, and the event stream they name.

An entry is one event stream, addressed by (namespace, key); its stream id is the uuid5
of the pair.
"""

from __future__ import annotations

import re
from functools import lru_cache
from uuid import NAMESPACE_URL, UUID, uuid5

from .errors import InvalidInput, quoted

#: A namespace: lowercase letters, digits, ``_`` and ``-``; starts with a letter or digit;
#: at most 63 characters (it becomes one NATS subject token and one SQL value).
NAMESPACE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

#: A key: one or more ``/``-separated segments of letters, digits, ``.``, ``_`` and ``-``;
#: no empty, ``.`` or ``..`` segments; at most 512 characters.
KEY_SEGMENT_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_KEY_LENGTH = 512

#: The system namespace of the access policies and API tokens (``policies/<name>``,
#: ``tokens/<id>``). Its leading ``_`` keeps it out of the namespaces a client addresses
#: through the entries routes; only the access routes write it.
ACCESS_NAMESPACE = "_access"

#: The system namespace of the schemas: ``namespaces/<namespace>`` is a namespace's,
#: ``definitions/<name>`` a shared definition. Only the schema routes write it.
SCHEMAS_NAMESPACE = "_schemas"

#: Last key segments that would collide with sub-resources of an entry's URL.
RESERVED_LAST_SEGMENTS = frozenset({"history", "diff", "proof", "revert", "restore"})

_STREAM_NAMESPACE = uuid5(NAMESPACE_URL, "urn:nexus-ssot:entry")


@lru_cache(maxsize=4096)  # the writer asks for each event's twice (decide, commit)
def stream_id(namespace: str, key: str) -> UUID:
    """The event stream id of the entry (namespace, key)."""
    return uuid5(_STREAM_NAMESPACE, f"{namespace}\x00{key}")


def check_namespace(namespace: str) -> str:
    if not NAMESPACE_PATTERN.fullmatch(namespace):
        raise InvalidInput(
            f"namespace {quoted(namespace)} is invalid: use 1-63 lowercase letters, digits, '_' or "
            "'-', starting with a letter or digit",
            code="invalid_namespace",
            field="namespace",
        )
    return namespace


def check_entry_namespace(namespace: str) -> str:
    """``check_namespace``, or the access or schemas system namespace (written by their
    own routes)."""
    if namespace in (ACCESS_NAMESPACE, SCHEMAS_NAMESPACE):
        return namespace
    return check_namespace(namespace)


def is_system_namespace(namespace: str) -> bool:
    return namespace.startswith("_")


def check_key(key: str) -> str:
    segments = key.split("/")
    bad = (
        not key
        or len(key) > MAX_KEY_LENGTH
        or any(s in ("", ".", "..") or not KEY_SEGMENT_PATTERN.fullmatch(s) for s in segments)
    )
    if bad:
        raise InvalidInput(
            f"key {quoted(key)} is invalid: use at most {MAX_KEY_LENGTH} characters in "
            "'/'-separated segments of letters, digits, '.', '_' or '-' (no empty, '.' or "
            "'..' segments)",
            code="invalid_key",
            field="key",
        )
    if segments[-1] in RESERVED_LAST_SEGMENTS:
        raise InvalidInput(
            f"key {quoted(key)} is invalid: its last segment {segments[-1]!r} is reserved "
            f"({', '.join(sorted(RESERVED_LAST_SEGMENTS))})",
            code="invalid_key",
            field="key",
        )
    return key
