"""The writer as its own process: HTTP workers send commands over a Unix socket.

The group-commit writer does the CPU work of every write (deciding, encoding, the
transaction); in the HTTP process it competed for the interpreter lock with request
parsing. Here one writer process serves every HTTP worker, so it also stays the only
writer of the database: its state cache is exact and batches are as large as the traffic.

Wire format, both ways: 4-byte big-endian length, then an orjson object.
    request  {"id": n, "ops": [["Put", {command}, {context}], ...], "idem": {...}|null,
              "atomic": false}
    response {"id": n, "outcome": {...}}  (or "outcomes": [...] for an atomic request)
             or  {"id": n, "error": {"type", "message", ...}}
A lost connection fails the writes in flight with ``Unavailable`` (their outcome is
unknown to the client: retrying with the same Idempotency-Key tells).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import struct
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import fields
from datetime import datetime
from typing import Any, Protocol, cast
from uuid import UUID

import orjson

from . import commands, errors
from .commands import Command, Context, Expectation, Trace
from .errors import LedgerError, Unavailable
from .event_store import Idempotency, Outcome
from .writer import GroupCommitWriter, Write

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
_MAX_FRAME = 256 * 1024 * 1024
_COMMANDS: dict[str, type[Command]] = {
    cls.__name__: cls
    for cls in (commands.Put, commands.MergePatch, commands.JsonPatch, commands.Delete,
                commands.Restore, commands.ConfigureNamespace, commands.SetSchema)
}
#: The field names of each command, for decoding (``dataclasses.fields`` walks the class
#: each call).
_FIELDS: dict[type[Command], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _COMMANDS.values()}


class Writer(Protocol):
    """What the HTTP edge needs of a writer, in process or remote."""

    async def write(
        self, command: Command, context: Context, idempotency: Idempotency | None
    ) -> Outcome: ...

    async def write_all(
        self, ops: Sequence[tuple[Command, Context]], idempotency: Idempotency | None
    ) -> list[Outcome]:
        """Apply ``ops`` all or none (see ``GroupCommitWriter.submit_all``)."""
        ...

    async def reachable(self) -> bool:
        """Whether writes can reach the writer now (``GET /v1/health``, ``ssot status``)."""
        ...


class LocalWriter:
    """The group-commit writer thread of this process."""

    def __init__(self, writer: GroupCommitWriter) -> None:
        self.writer = writer

    async def write(
        self, command: Command, context: Context, idempotency: Idempotency | None
    ) -> Outcome:
        return await asyncio.wrap_future(self.writer.submit(command, context, idempotency))

    async def write_all(
        self, ops: Sequence[tuple[Command, Context]], idempotency: Idempotency | None
    ) -> list[Outcome]:
        return await asyncio.wrap_future(self.writer.submit_all(ops, idempotency))

    async def reachable(self) -> bool:
        return self.writer.is_alive()


# --- encoding -------------------------------------------------------------------------


def encode_request(request_id: int, write: Write) -> bytes:
    idem = None
    if write.idempotency is not None:
        idem = {"actor": write.idempotency.actor, "key": write.idempotency.key,
                "hash": write.idempotency.request_hash.hex()}
    request = {
        "id": request_id,
        "ops": [(type(command).__name__, command, context) for command, context in write.ops],
        "idem": idem,
        "atomic": write.atomic,
    }
    try:
        return orjson.dumps(request)
    except TypeError:  # a lone surrogate, which json escapes: the writer's decide refuses it
        return json.dumps(request, default=_plain).encode()


def _plain(value: Any) -> Any:
    """What orjson makes of the commands' types, for json."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return {f.name: getattr(value, f.name) for f in fields(value)}


def decode_request(data: dict[str, Any]) -> Write:
    ops = []
    for type_name, raw, ctx in data["ops"]:
        cls = _COMMANDS[type_name]
        values = {name: raw[name] for name in _FIELDS[cls] if name in raw}
        values["expected"] = Expectation(**raw["expected"])
        context = Context(
            event_id=UUID(ctx["event_id"]),
            timestamp=datetime.fromisoformat(ctx["timestamp"]),
            actor=ctx["actor"],
            correlation_id=ctx["correlation_id"],
            reason=ctx["reason"],
            causation_id=ctx["causation_id"],
            idempotency_key=ctx["idempotency_key"],
            auth=ctx.get("auth"),
            trace=_trace(ctx.get("trace")),
        )
        ops.append((cls(**values), context))
    idem = data["idem"]
    idempotency = (
        Idempotency(idem["actor"], idem["key"], bytes.fromhex(idem["hash"])) if idem else None
    )
    return Write(tuple(ops), idempotency, atomic=bool(data["atomic"]))


def _trace(value: Any) -> Trace | None:
    """A context's trace, as sent: ``[traceparent, tracestate]`` or null."""
    if value is None:
        return None
    traceparent, tracestate = value
    if not isinstance(traceparent, str) or not isinstance(tracestate, str | None):
        raise ValueError(f"a trace is [traceparent, tracestate], not {value!r}")
    return traceparent, tracestate


def encode_result(request_id: int, future: Future[Any]) -> bytes:
    error = future.exception()
    if error is None:
        result = future.result()
        member = "outcomes" if isinstance(result, list) else "outcome"
        return orjson.dumps({"id": request_id, member: result})
    if not isinstance(error, LedgerError):
        log.error("writer failed unexpectedly", exc_info=error)
        error = Unavailable(f"the write failed unexpectedly: {error}")
    return orjson.dumps({"id": request_id, "error": errors.error_record(error)})


def decode_outcome(data: dict[str, Any]) -> Outcome:
    return Outcome(**{**data, "recorded_at": datetime.fromisoformat(data["recorded_at"])})


class Frames:
    """The frames of one connection's bytes, decoded as the bytes arrive: what a
    protocol's ``data_received`` hands over, with no coroutine woken and no two reads per
    frame, as a stream reader took."""

    def __init__(self) -> None:
        #: The bytes of a frame not whole yet, and how many it needs before the next try.
        self._pending = bytearray()
        self._needed = 0

    def feed(self, data: bytes, into: list[dict[str, Any]]) -> None:
        """Append to ``into`` the frames ``data`` completes, in order. Raises
        ConnectionError for a frame larger than ``_MAX_FRAME``, ValueError for one that is
        not JSON, once the frames before it are in ``into``."""
        if self._pending:  # a large frame comes in many parts: gathered, then read once
            self._pending += data
            if len(self._pending) < self._needed:
                return
            data, self._pending = bytes(self._pending), bytearray()
        view = memoryview(data)
        end = len(data)
        at = 0
        while end - at >= _HEADER.size:
            (size,) = _HEADER.unpack_from(view, at)
            if size > _MAX_FRAME:
                raise ConnectionError(f"frame of {size} bytes is larger than {_MAX_FRAME}")
            start = at + _HEADER.size
            if end - start < size:
                break
            at = start + size
            into.append(_decoded(view[start:at]))
        if at < end:
            self._pending = bytearray(view[at:])
            self._needed = (_HEADER.size + _HEADER.unpack_from(view, at)[0]
                            if end - at >= _HEADER.size else _HEADER.size)


def _decoded(payload: memoryview) -> dict[str, Any]:
    try:
        decoded: dict[str, Any] = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        if "surrogate" not in str(e):
            raise
        # \u escapes of lone surrogates, which orjson refuses: decoded for decide to refuse
        decoded = json.loads(bytes(payload))
    return decoded


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


# --- the server (in the writer process) ----------------------------------------------


async def serve_writer(
    writer: GroupCommitWriter, socket_path: str, ready: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Serve ``writer`` on ``socket_path`` until SIGTERM/SIGINT.

    One thread does everything: requests read from the sockets are queued, and once the
    loop has read all there is, the whole queue is decided and committed as one batch
    (the loop blocks meanwhile, and what arrives during a commit forms the next batch).
    No thread handoffs per request, so the writer's latency is the database's."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    queued: list[tuple[asyncio.Transport, int, Write]] = []
    flushing = False

    def flush() -> None:
        nonlocal flushing
        flushing = False
        batch = queued[:]
        queued.clear()
        futures = writer.write_batch([w for _, _, w in batch])
        # one write per connection, not per answer (a batch's answers to one HTTP
        # worker leave in one system call)
        answers: dict[asyncio.Transport, list[bytes]] = {}
        for (out, request_id, *_), future in zip(batch, futures, strict=True):
            answers.setdefault(out, []).append(frame(encode_result(request_id, future)))
        for out, frames in answers.items():
            if not out.is_closing():
                out.write(b"".join(frames))

    def accept(out: asyncio.Transport, request: dict[str, Any]) -> None:
        nonlocal flushing
        try:
            write = decode_request(request)
        except (KeyError, TypeError, ValueError) as e:
            bad: Future[Outcome] = Future()
            bad.set_exception(errors.InvalidInput(f"malformed writer request: {e}"))
            out.write(frame(encode_result(request["id"], bad)))
            return
        queued.append((out, request["id"], write))
        if not flushing:  # once every request read meanwhile is queued
            flushing = True
            loop.call_soon(flush)

    server = await loop.create_unix_server(lambda: _Requests(accept), path=socket_path)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        await ready()
    async with server:
        await stop.wait()
        server.close()
        if queued:  # commit and answer what was accepted before the signal
            flush()
        await asyncio.sleep(0.1)  # let the answers go out


class _FrameProtocol(asyncio.Protocol):
    """Either end of a connection of the writer's socket: each frame, as it arrives, to
    ``received``; a frame that cannot be read is logged (``UNREADABLE``, at
    ``UNREADABLE_LEVEL``) and closes the connection."""

    UNREADABLE = "closing an unreadable writer connection: %s"
    UNREADABLE_LEVEL = logging.ERROR

    def __init__(self) -> None:
        self.frames = Frames()
        self.out: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.out = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        found: list[dict[str, Any]] = []
        try:
            self.frames.feed(data, found)
        except (ConnectionError, ValueError) as e:
            log.log(self.UNREADABLE_LEVEL, self.UNREADABLE, e)
            assert self.out is not None
            self.out.close()
        for message in found:
            self.received(message)

    def received(self, message: dict[str, Any]) -> None:
        raise NotImplementedError


class _Requests(_FrameProtocol):
    """One HTTP worker's connection to the writer: each request frame to ``accept`` (its
    writes in flight fail at the worker, which reconnects, when the connection closes)."""

    def __init__(self, accept: Callable[[asyncio.Transport, dict[str, Any]], None]) -> None:
        super().__init__()
        self.accept = accept

    def received(self, message: dict[str, Any]) -> None:
        assert self.out is not None
        self.accept(self.out, message)


# --- the client (in each HTTP worker) ------------------------------------------------


class _Connection(_FrameProtocol):
    """The connection of one HTTP worker to the writer: each answer, as it arrives,
    resolves the write waiting for it; a lost connection fails those still waiting."""

    UNREADABLE = "lost the writer connection: %s"
    UNREADABLE_LEVEL = logging.WARNING

    def __init__(self, owner: RemoteWriter) -> None:
        super().__init__()
        self.owner = owner
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.closed = asyncio.get_running_loop().create_future()

    def received(self, message: dict[str, Any]) -> None:
        answer = self.waiting.pop(message["id"], None)
        if answer is None or answer.done():
            return
        if "outcome" in message:
            answer.set_result(decode_outcome(message["outcome"]))
        elif "outcomes" in message:
            answer.set_result([decode_outcome(o) for o in message["outcomes"]])
        else:
            answer.set_exception(errors.error_from_record(message["error"]))

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.warning("lost the writer connection: %s", exc)
        if self.owner._connection is self:
            self.owner._connection = None
        lost = Unavailable(
            "the connection to the writer process was lost; the write may or may not "
            "have committed: retry with the same Idempotency-Key to learn which"
        )
        for answer in self.waiting.values():
            if not answer.done():
                answer.set_exception(lost)
        self.waiting.clear()
        if not self.closed.done():
            self.closed.set_result(None)


class RemoteWriter:
    """Sends writes to the writer process; one multiplexed connection per HTTP worker."""

    def __init__(self, socket_path: str, *, connect_timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.connect_timeout = connect_timeout
        self._connection: _Connection | None = None
        self._next_id = 0
        self._lock = asyncio.Lock()

    async def write(
        self, command: Command, context: Context, idempotency: Idempotency | None
    ) -> Outcome:
        outcome: Outcome = await self._send(Write(((command, context),), idempotency))
        return outcome

    async def write_all(
        self, ops: Sequence[tuple[Command, Context]], idempotency: Idempotency | None
    ) -> list[Outcome]:
        outcomes: list[Outcome] = await self._send(Write(tuple(ops), idempotency, atomic=True))
        return outcomes

    async def reachable(self) -> bool:
        """Whether the writer process accepts a connection (the one writes use)."""
        try:
            await self._connect()
        except Unavailable:
            return False
        return True

    async def _send(self, write: Write, *, resent: bool = False) -> Any:
        connection = await self._connect()
        self._next_id += 1
        request_id = self._next_id
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        connection.waiting[request_id] = answer
        assert connection.out is not None
        try:
            connection.out.write(frame(encode_request(request_id, write)))
        except (ConnectionError, RuntimeError) as e:
            # The writer died and its end of the socket closed before our reader noticed:
            # uvloop refuses the write ("the handler is closed", a RuntimeError). Nothing
            # was sent, so the write is sent once more on a new connection (or answered
            # 503 when the writer is not back).
            connection.waiting.pop(request_id, None)
            connection.out.close()
            if self._connection is connection:
                self._connection = None
            if resent:
                raise Unavailable(f"the writer process is unreachable ({e}); nothing was "
                                  "sent: retry") from e
            return await self._send(write, resent=True)
        return await answer

    async def _connect(self) -> _Connection:
        current = self._connection
        if current is not None and current.out is not None and not current.out.is_closing():
            return current
        async with self._lock:
            current = self._connection
            if current is None or current.out is None or current.out.is_closing():
                loop = asyncio.get_running_loop()
                try:
                    _, made = await asyncio.wait_for(loop.create_unix_connection(
                        lambda: _Connection(self), self.socket_path), self.connect_timeout)
                except (OSError, TimeoutError) as e:
                    raise Unavailable(f"the writer process is unreachable ({e}); retry") from e
                self._connection = current = made
            return current

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None or connection.out is None:
            return
        connection.out.close()
        await connection.closed  # what was still waiting has failed
