"""The JetStream stream a publisher writes to, made when missing, and where it ends, for
the publishers that resume after it (the broadcaster, the digest publisher): each
publishes in order with ``Nats-Expected-Last-Sequence``, so the stream's last message, not
a position tracked elsewhere, says what it already holds and where publishing goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats
from nats.js import JetStreamContext
from nats.js.api import PubAck, RawStreamMsg, StreamConfig

from .jetstream_acks import Acks
from .stopping import deadline

#: JetStream's "wrong last sequence": a ``Nats-Expected-Last-Sequence`` not met.
WRONG_LAST_SEQUENCE = 10071


class StreamMoved(Exception):
    """The stream acknowledged a message somewhere else than right after the one before
    it (a duplicate it holds elsewhere): it is not where the publisher's chain expected
    it to be; the publisher resumes after the stream's last message."""


async def chained_acks(answers: Sequence[asyncio.Future[PubAck]], last_seq: int, *,
                       stream: str) -> tuple[int, int]:
    """Await the answers of messages sent in order after the stream's message
    ``last_seq``, each with ``Nats-Expected-Last-Sequence`` the one before it: (how many
    of them, from the first, the stream holds in order; its last sequence after them).

    A message answered as a duplicate at or before ``last_seq`` was held before this run
    (published before and, since, maybe purged): it counts as held, and the stream does
    not move, so each message sent after it expected one sequence too far and is refused
    (nothing is stored out of place; nats-server 2.15 checks the expected last sequence
    before the message id, so even one it also held before is refused, not answered as
    held). The count then stops before the first refused: the caller sends them again,
    after the held ones (``Chain``: one at a time while the stream holds them already). Raises
    ``StreamMoved`` for an answer anywhere else, and JetStream's refusal otherwise."""
    start, held, skewed = last_seq, 0, False
    for answer in answers:
        try:
            ack = await answer
        except nats.js.errors.APIError as e:
            if skewed and e.err_code == WRONG_LAST_SEQUENCE:
                break
            raise
        if ack.duplicate and ack.seq <= start:
            skewed = True
        elif not skewed and ack.seq == last_seq + 1:
            last_seq = ack.seq
        else:  # a duplicate held elsewhere, or a message stored after someone else's
            raise StreamMoved(f"stream {stream} acknowledged a message at sequence "
                              f"{ack.seq}, expected at {last_seq + 1}: resuming after "
                              "its last message")
        held += 1
    return held, last_seq


class Chain:
    """A publisher's place in its stream: the stream's last sequence, after which its
    next message goes. ``publish`` sends messages pipelined, each with
    ``Nats-Expected-Last-Sequence`` the one before it, and moves the place past those the
    stream holds (``chained_acks``). While the stream answers messages as held before
    (published, and purged since) they go one at a time (``limit``): nats-server 2.15
    checks a message's expected last sequence before its id, so one sent behind a message
    it held before is refused, not answered as held."""

    def __init__(self, stream: str, last_seq: int, ack_timeout: float) -> None:
        self.stream = stream
        self.last_seq = last_seq
        self.ack_timeout = ack_timeout
        self.probing = False

    def limit(self, batch: int) -> int:
        """How many messages the next ``publish`` should take."""
        return 1 if self.probing else batch

    async def publish(self, acks: Acks,
                      messages: Sequence[tuple[str, bytes, dict[str, str]]]) -> int:
        """Send ``messages`` (subject, payload, headers; the expected last sequence is
        added to the headers) and await their answers: how many of them, from the first,
        the stream holds in order (the rest are to be sent again), or what JetStream
        answered (``StreamMoved``, a refusal, a ``TimeoutError``)."""
        pending = []
        expected = self.last_seq
        try:
            for subject, payload, headers in messages:
                headers["Nats-Expected-Last-Sequence"] = str(expected)
                pending.append(await acks.publish(subject, payload, headers=headers))
                expected += 1
            timer = deadline(self.ack_timeout, pending)
            try:
                held, last_seq = await chained_acks(pending, self.last_seq,
                                                    stream=self.stream)
            finally:
                timer.cancel()
        finally:
            for future in pending:
                future.cancel()
        self.probing = held < len(messages) or (self.probing and last_seq == self.last_seq)
        self.last_seq = last_seq
        return held


async def stream_tail(js: JetStreamContext, stream: str, *,
                      vanished_is_lost: bool) -> tuple[int, RawStreamMsg | None]:
    """(last sequence, last message) of ``stream``: (0, None) for a stream that never held
    a message; (last sequence, None) for one whose messages are gone (retention expired
    them all, or a purge). A last message that vanishes between the stream's info and
    its reading counts as gone when ``vanished_is_lost``, else its NotFoundError is
    raised."""
    info = await js.stream_info(stream)
    if not info.state.last_seq:
        return 0, None
    if not info.state.messages:
        return info.state.last_seq, None
    try:
        msg = await js.get_msg(stream, seq=info.state.last_seq)
    except nats.js.errors.NotFoundError:
        if not vanished_is_lost:
            raise
        return info.state.last_seq, None
    return info.state.last_seq, msg


def nats_servers(url: str) -> list[str]:
    """The servers of a NATS URL, which may list a cluster's nodes separated by commas
    (``nats://a:4222,nats://b:4222``): nats-py takes a list, not such a string."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def ensure_stream(js: JetStreamContext, stream: str, subjects: list[str], *,
                        duplicate_window: float, replicas: int = 1) -> None:
    """Make ``stream`` over ``subjects`` with ``replicas`` copies unless it exists; an
    existing stream is left as its operator configured it (replicas, retention, limits)."""
    try:
        await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(StreamConfig(name=stream, subjects=subjects,
                                         duplicate_window=duplicate_window,
                                         num_replicas=replicas))
