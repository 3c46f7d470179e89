"""The JetStream stream a publisher writes to, made when missing, and where it ends, for
the publishers that resume after it (the broadcaster, the digest publisher): each
publishes in order with ``Nats-Expected-Last-Sequence``, so the stream's last message, not
a position tracked elsewhere, says what it already holds and where publishing goes on."""

from __future__ import annotations

import nats
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg, StreamConfig


class StreamMoved(Exception):
    """The stream acknowledged a message somewhere else than right after the one before
    it (a duplicate it holds elsewhere): it is not where the publisher's chain expected
    it to be; the publisher resumes after the stream's last message."""


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
