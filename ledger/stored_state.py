"""An entry event's stored state, byte for byte: the members the writer stores for each
event class version, in the order it stores them, encoded by orjson.

The state is what the event store keeps of an event (``ssot_events.state``): the JSON of
the event's attributes but its stream id and version, as the library's mapper makes it
(the dataclass fields in their order, then ``class_version`` from version 2) and the
ledger's orjson transcoder encodes it. Since the writer only ever stores those bytes, a
state is the writer's exactly when its members are the ones its class version stores, in
that order, and its bytes are orjson's encoding of its own decoded value: then nothing was
added, renamed, removed or reordered, and no byte was re-spelt (spacing, escapes, number
forms, a repeated member), so the bytes follow from the members and the members' values
are what the hash (``chain``) and, before class version 5, the seal vouch for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

_FIRST = ("timestamp", "event_id", "namespace", "key", "document", "patch", "actor",
          "reason", "correlation_id", "causation_id", "idempotency_key")
#: The members each event class version stores, in their stored order: version 2 added
#: ``resolution``, 3 the hash chain, 4 ``auth``, 5 none (its hash covers them all). An
#: ``entry.restored`` event stores ``restored_from_version`` after them, and from version
#: 2 the library stores ``class_version`` last.
MEMBERS: dict[int, tuple[str, ...]] = {
    1: _FIRST,
    2: (*_FIRST, "resolution"),
    3: (*_FIRST, "resolution", "prev_hash", "hash"),
    4: (*_FIRST, "resolution", "prev_hash", "hash", "auth"),
    5: (*_FIRST, "resolution", "prev_hash", "hash", "auth"),
}
_EXPECTED: dict[tuple[int, bool], tuple[str, ...]] = {
    (version, restored): (*names, *(("restored_from_version",) if restored else ()),
                          *(("class_version",) if version > 1 else ()))
    for version, names in MEMBERS.items() for restored in (False, True)
}


def expected_members(class_version: Any, restored: bool) -> tuple[str, ...] | None:
    """The members, in order, of the state of an event stored with ``class_version``
    (an ``entry.restored`` one when ``restored``); None for a class version the ledger
    never stored."""
    if type(class_version) is not int:
        return None
    return _EXPECTED.get((class_version, restored))


def stored_timestamp(moment: datetime) -> str:
    """The text a state holds for the event's ``timestamp``, as the transcoder writes it."""
    text: str = orjson.loads(orjson.dumps(moment))
    return text


def form_problem(state: bytes, restored: bool) -> tuple[str, str] | None:
    """None when ``state`` is exactly the writer's bytes for its members (see the module
    docstring; ``restored``: of an ``entry.restored`` event); else the member (or
    ``state``, for its bytes as a whole) that is not, and a sentence saying how."""
    try:
        decoded = orjson.loads(state)
    except orjson.JSONDecodeError as e:
        return "state", f"its state is not JSON the writer could have written ({e})"
    if not isinstance(decoded, dict):
        return "state", "its state is not a JSON object"
    version = decoded.get("class_version", 1)
    want = expected_members(version, restored)
    if want is None:
        return "class_version", (f"its class_version {version!r} is not one the ledger "
                                 f"ever stored ({min(MEMBERS)} to {max(MEMBERS)})")
    have = tuple(decoded)
    if have != want:
        missing = [name for name in want if name not in decoded]
        extra = [name for name in have if name not in want]
        if missing and extra:
            return missing[0], (f"its state lacks the member {missing[0]!r} and has "
                                f"{extra[0]!r} instead, which no event of class version "
                                f"{version} stores (renamed)")
        if missing:
            return missing[0], (f"its state lacks the member {missing[0]!r}, which every "
                                f"event of class version {version} stores")
        if extra:
            return extra[0], (f"its state has a member {extra[0]!r}, which no event of "
                              f"class version {version} stores")
        moved = next(b for a, b in zip(have, want, strict=True) if a != b)
        return moved, (f"its state's members are not in the order the writer stores them "
                       f"({moved!r} is out of place)")
    if orjson.dumps(decoded) != state:
        return "state", ("its bytes are not the writer's encoding of its members: spacing, "
                         "escapes, number forms or a repeated member were changed")
    return None
