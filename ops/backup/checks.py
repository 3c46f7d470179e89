"""The checks of an export's lines as an import reads them: the header, each event (its
position, its stream's version and hash chain, its stored state the writer's bytes for its
members, its hash recomputed, its Merkle leaf), the leaves of events an earlier export
held, the idempotency keys, the digests' chain and the trailer's counts; each check that
passes gives the line's COPY row."""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg

from nexus_ssot.integrity import merkle
from nexus_ssot.integrity.verify.log import event_leaf, fast_hash
from nexus_ssot.ledger import chain
from nexus_ssot.ledger.events import TYPE_OF_TOPIC
from nexus_ssot.ledger.stored_state import form_problem

from .access_lines import AccessState
from .access_lines import check_trailer as check_access_trailer
from .copier import binary_event_row, copy_text
from .format import (
    FORMAT,
    HEX64,
    MOMENT,
    MOMENT_SQL,
    TAIL,
    UUID,
    VERSIONS,
    ZERO,
    BadFile,
    check_running_hash,
    parse_line,
    require,
)

_BIGINT = 1 << 63


@dataclass
class ImportState:
    """The verifying state of one file's import."""

    path: str
    rh: bytes
    position: int
    version: int = 1
    access: AccessState = field(default_factory=AccessState)
    streams: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    frontier: merkle.Frontier = field(default_factory=merkle.Frontier)
    incremental: bool = False
    leaves_stopped: bool = False
    events: int = 0
    unchained: int = 0
    #: Positions of the events whose hash leaves members out (class version before 5),
    #: to be sealed (``state_seals``) with the bytes the file vouched for.
    to_seal: list[int] = field(default_factory=list)
    last_hash: str | None = None
    digests: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    digest_prev: bytes | None = None
    digest_seq: int = 0
    idempotency: int = 0
    leaf_lines: int = 0
    first_position: int | None = None
    start_leaves: int = 0
    #: COPY rows of the batch's verified Merkle leaves and of the nodes they complete.
    leaf_rows: bytearray = field(default_factory=bytearray)
    node_rows: bytearray = field(default_factory=bytearray)

    def add_leaf(self, position: int, leaf: bytes) -> None:
        """Append a verified leaf hash: its row and the rows of the nodes it completes."""
        done = self.frontier.add(leaf)
        self.leaf_rows += b"%d\t%d\t\\\\x%s\n" % (done[0][1], position, leaf.hex().encode())
        for level, idx, node in done[1:]:
            self.node_rows += b"%d\t%d\t\\\\x%s\n" % (level, idx, node.hex().encode())


def check_header(raw: bytes, number: int) -> dict[str, Any]:
    header = parse_line(raw, number)
    if header.get("t") != "header" or header.get("format") != FORMAT:
        raise BadFile(number, f"not a {FORMAT} header")
    if header.get("version") not in VERSIONS or isinstance(header.get("version"), bool):
        raise BadFile(number, f"format version {header.get('version')!r} is not "
                              f"supported (this ledger reads versions "
                              f"{', '.join(map(str, VERSIONS))})")
    for name in ("since_position", "upto_position"):
        require(header, number, name, int)
    if header["version"] >= 2 and require(header, number, "access_since", int) < 0:
        raise BadFile(number, "header member 'access_since' is negative")
    require(header, number, "source", str)
    previous = header.get("previous")
    if header["since_position"] and not isinstance(previous, dict):
        raise BadFile(number, "an incremental export (since_position > 0) must name its "
                              "previous export")
    rh = previous.get("final_hash") if isinstance(previous, dict) else None
    start = bytes.fromhex(rh) if isinstance(rh, str) and HEX64.match(rh) else ZERO
    check_running_hash(raw, number, start)
    return header


def _hash_matches(fields: dict[str, Any], own: str) -> bool:
    """Whether ``own`` is the hash of the event of ``fields``. orjson's encoding
    (``chain.encoding_candidate``) is trusted when it reproduces ``own`` exactly (equal
    SHA-256: these are the bytes that were hashed), as ``ssot verify`` trusts it; otherwise
    ``chain.event_hash`` decides (which proves the encoding first)."""
    hashed = chain.hashed_members(fields)
    with contextlib.suppress(orjson.JSONEncodeError):
        if hashlib.sha256(chain.encoding_candidate(hashed)).hexdigest() == own:
            return True
    return bool(chain.event_hash(fields) == own)


def _check_hash(number: int, stored: bytes, stream: str, version: int, type_name: str,
                own: str) -> None:
    """Raise what is wrong with an event's stored state or hash (its state decoded anew:
    the fast path may have changed the line's)."""
    form = form_problem(stored, type_name == "entry.restored")
    if form is not None:
        raise BadFile(number, f"stream {stream} version {version}: {form[1]} (member "
                              f"{form[0]!r})")
    if not _hash_matches({**orjson.loads(stored), "stream": stream, "version": version,
                          "type": type_name}, own):
        raise BadFile(number, f"stream {stream} version {version}: the event's hash "
                              "does not match its content (recomputed with "
                              "chain.event_hash)")


def event_row(st: ImportState, number: int, raw: bytes, obj: dict[str, Any]) -> bytes:
    position = require(obj, number, "position", int)
    stream = require(obj, number, "stream", str)
    version = require(obj, number, "version", int)
    topic = require(obj, number, "topic", str)
    recorded_at = require(obj, number, "recorded_at", str)
    state = require(obj, number, "state", dict)
    if position <= st.position:
        raise BadFile(number, f"position {position} does not follow position {st.position}")
    if position >= _BIGINT:
        raise BadFile(number, f"position {position} is beyond PostgreSQL's bigint")
    if not UUID.match(stream):
        raise BadFile(number, f"stream {stream!r} is not a lowercase UUID")
    try:
        if not MOMENT.match(recorded_at):
            raise ValueError
        moment = datetime.fromisoformat(recorded_at)
    except ValueError:
        raise BadFile(number, f"recorded_at {recorded_at!r} is not RFC 3339 UTC with "
                              "microseconds") from None
    type_name = TYPE_OF_TOPIC.get(topic)
    if type_name is None:
        raise BadFile(number, f"unknown event topic {topic!r}")
    last_version, last_hash = st.streams.get(stream, (0, None))
    if version != last_version + 1:
        raise BadFile(number, f"stream {stream} version {version} does not follow version "
                              f"{last_version}")
    prev_hash, own = state.get("prev_hash"), state.get("hash")
    if prev_hash != last_hash:
        raise BadFile(number, f"stream {stream} version {version}: prev_hash {prev_hash!r} "
                              f"is not the previous event's hash {last_hash!r}")
    start = raw.find(b',"state":') + 9
    stored = raw[start:-TAIL]
    if not chain.covers_whole_state(state):
        st.to_seal.append(position)
    if own is None:
        st.unchained += 1
    else:
        # ssot verify's fast path first (it takes over the line's decoded state); the
        # checks that name what is wrong when it does not vouch for the event.
        quick = fast_hash(stored, stream, version, type_name, None, decoded=state)
        if quick is None or quick[0] != own:
            _check_hash(number, stored, stream, version, type_name, own)
    leaf = obj.get("leaf")
    if leaf is not None:
        if st.leaves_stopped:
            raise BadFile(number, "a leaf after an event without one")
        if not (isinstance(leaf, list) and len(leaf) == 2 and leaf[0] == st.frontier.size
                and isinstance(leaf[1], str)):
            raise BadFile(number, f"leaf {leaf!r} is not [{st.frontier.size}, hash]")
        computed = event_leaf(position, recorded_at, own)
        if computed.hex() != leaf[1]:
            raise BadFile(number, "the Merkle leaf does not match the event")
        st.add_leaf(position, computed)
    else:
        st.leaves_stopped = True
    st.streams[stream] = (version, own)
    st.position = position
    st.last_hash = own
    st.events += 1
    if st.first_position is None:
        st.first_position = position
    return binary_event_row(position, stream, version, topic, raw[start:-TAIL], moment)


async def leaf_line(conn: psycopg.AsyncConnection[Any], st: ImportState, number: int,
                    obj: dict[str, Any]) -> None:
    """A leaf for an event an earlier export held: recomputed from that event here."""
    idx = require(obj, number, "idx", int)
    position = require(obj, number, "position", int)
    given = require(obj, number, "hash", str)
    if idx != st.frontier.size or st.events:
        raise BadFile(number, f"leaf {idx} is out of order (expected leaf "
                              f"{st.frontier.size}, before the events)")
    cur = await conn.execute(f"SELECT {MOMENT_SQL.format('recorded_at')}, state"
                             " FROM ssot_events WHERE notification_id = %s", (position,))
    row = await cur.fetchone()
    if row is None:
        raise BadFile(number, f"leaf {idx} names position {position}, which the database "
                              "does not hold")
    own = orjson.loads(bytes(row[1])).get("hash")
    computed = merkle.leaf_hash(chain.canonical(
        {"position": position, "recorded_at": row[0], "hash": own}))
    if computed.hex() != given:
        raise BadFile(number, f"leaf {idx} does not match the event at position {position}")
    st.add_leaf(position, computed)
    st.leaf_lines += 1


def idempotency_row(st: ImportState, number: int, obj: dict[str, Any]) -> bytes:
    values = [require(obj, number, "actor", str), require(obj, number, "key", str)]
    request_hash = require(obj, number, "request_hash", str)
    if not re.fullmatch(r"(?:[0-9a-f]{2})*", request_hash):
        raise BadFile(number, "idempotency member 'request_hash' is not hex")
    position = require(obj, number, "position", int)
    if position > st.position or (st.first_position is None or position < st.first_position):
        raise BadFile(number, f"idempotency key names position {position}, not an event of "
                              "this file")
    at = require(obj, number, "recorded_at", str)
    if not MOMENT.match(at):
        raise BadFile(number, f"recorded_at {at!r} is not RFC 3339 UTC")
    ids = require(obj, number, "event_ids", list, optional=True)
    if ids is not None and not all(isinstance(i, str) and UUID.match(i) for i in ids):
        raise BadFile(number, "idempotency member 'event_ids' is not a list of UUIDs")
    st.idempotency += 1
    cells = [*values, "\\x" + request_hash, require(obj, number, "namespace", str),
             require(obj, number, "entry_key", str), require(obj, number, "version", int),
             position, at, None if ids is None else "{" + ",".join(ids) + "}"]
    return b"\t".join(copy_text(c) for c in cells) + b"\n"


def digest_line(st: ImportState, number: int, obj: dict[str, Any]) -> None:
    seq = require(obj, number, "seq", int)
    for name in ("position", "size"):
        require(obj, number, name, int)
    for name in ("root", "hash"):
        if not HEX64.match(require(obj, number, name, str)):
            raise BadFile(number, f"digest member {name!r} is not 64 hex digits")
    if not MOMENT.match(require(obj, number, "recorded_at", str)):
        raise BadFile(number, "digest member 'recorded_at' is not RFC 3339 UTC")
    prev = require(obj, number, "prev", str, optional=True)
    signature = require(obj, number, "signature", str, optional=True)
    key_id = require(obj, number, "key_id", str, optional=True)
    if seq != st.digest_seq + 1:
        raise BadFile(number, f"digest {seq} does not follow digest {st.digest_seq}")
    expected = st.digest_prev.hex() if st.digest_prev is not None else None
    if prev != expected:
        raise BadFile(number, f"digest {seq}: prev {prev!r} is not the previous digest's "
                              f"hash {expected!r}")
    if signature is not None and not re.fullmatch(r"(?:[0-9a-f]{2})+", signature):
        raise BadFile(number, "digest member 'signature' is not hex")
    if (signature is None) != (key_id is None):
        raise BadFile(number, "digest members 'signature' and 'key_id' go together")
    if obj["size"] < 1 or obj["size"] > st.frontier.size:
        raise BadFile(number, f"digest {seq} covers {obj['size']} leaves; "
                              f"{st.frontier.size} are known")
    content = {"seq": seq, "position": obj["position"], "size": obj["size"],
               "root": obj["root"], "recorded_at": obj["recorded_at"], "prev": prev}
    if hashlib.sha256(chain.canonical(content)).hexdigest() != obj["hash"]:
        raise BadFile(number, f"digest {seq}: its hash does not match its content")
    st.digest_seq, st.digest_prev = seq, bytes.fromhex(obj["hash"])
    st.digests.append((number, obj))


def check_trailer(raw: bytes, number: int, st: ImportState) -> dict[str, Any]:
    previous = st.rh
    st.rh = check_running_hash(raw, number, st.rh)
    trailer = parse_line(raw, number)
    checks = {"count": st.events, "leaves": st.leaf_lines, "idempotency": st.idempotency,
              "digests": len(st.digests), "lines": number,
              "running_hash": previous.hex(), "first_position": st.first_position}
    for name, value in checks.items():
        if trailer.get(name) != value:
            raise BadFile(number, f"trailer member {name!r} is {trailer.get(name)!r}; the "
                                  f"file holds {value!r}")
    last = require(trailer, number, "last_position", int)
    if last < st.position or (st.events and last != st.position):
        raise BadFile(number, f"trailer member 'last_position' is {last}; the last event is "
                              f"at position {st.position}")
    if st.events and trailer.get("last_hash") != st.last_hash:
        raise BadFile(number, "trailer member 'last_hash' is not the last event's hash")
    if trailer.get("total_leaves") != st.frontier.size:
        raise BadFile(number, f"trailer member 'total_leaves' is "
                              f"{trailer.get('total_leaves')!r}; the file makes "
                              f"{st.frontier.size}")
    check_access_trailer(trailer, number, st.access, st.version)
    st.position = last
    return {**trailer, "rh": st.rh.hex()}
