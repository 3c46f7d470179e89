"""JetStream publishes pipelined on one NATS connection, each answered on a future of its
own: the broadcaster's events and the KV mirror's writes go out together and their
acknowledgements are awaited together.

nats-py has ``JetStreamContext.publish_async`` for this, but (2.16.0) an error answer
never reaches its future: ``_handle_async_reply`` calls ``APIError.from_error``, which
raises instead of returning, so the exception ends in the subscription's task and the
future stays pending until the caller's timeout (nats-io/nats.py#985, open). A publish
JetStream refuses (a stream that expected another last message id, a conditional KV write
that lost to a newer one, a stream out of storage) then cost the whole acknowledgement
timeout instead of failing at once. Here the answer is read as the library reads it and
an error is set on the future.

A publish's reply subject is this publisher's inbox and a counter: no random token per
message (nats-py draws two bytes from ``os.urandom`` for each).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header, PubAck

#: The members of an acknowledgement that PubAck holds (the others are ignored, as
#: nats-py's own reading of it ignores them).
_PUB_ACK = frozenset(f.name for f in dataclasses.fields(PubAck))
#: The status of a request nothing answered (no stream listens on the subject).
_NO_RESPONDERS = "503"


class Acks:
    """Publishes on ``nc`` whose acknowledgements come back to one subscription of its own,
    made on first use; ``close`` once the publishes are no longer awaited."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._inbox = ""
        self._subscription: Subscription | None = None
        self._pending: dict[str, asyncio.Future[PubAck]] = {}
        self._tokens = itertools.count()

    async def publish(self, subject: str, payload: bytes = b"",
                      headers: dict[str, str] | None = None) -> asyncio.Future[PubAck]:
        """Send a message to the stream that holds ``subject``; the future is its
        acknowledgement, or the error JetStream answered (``APIError`` and its kinds as
        nats-py raises them, ``NoStreamResponseError`` when no stream holds the subject).
        Cancel it to stop waiting."""
        if self._subscription is None:
            self._inbox = f"{self._nc.new_inbox()}."
            self._subscription = await self._nc.subscribe(f"{self._inbox}*", cb=self._answer)
        token = str(next(self._tokens))
        future: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        future.add_done_callback(lambda _: self._pending.pop(token, None))
        try:
            await self._nc.publish(subject, payload, reply=self._inbox + token, headers=headers)
        except BaseException:
            future.cancel()
            raise
        return future

    async def close(self) -> None:
        """Stop listening; what is still pending is cancelled (no one awaits it now)."""
        subscription, self._subscription = self._subscription, None
        for future in list(self._pending.values()):
            future.cancel()
        if subscription is not None and not self._nc.is_closed:
            # a connection that is going has nothing to undo
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _answer(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject[len(self._inbox):], None)
        if future is None or future.done():
            return  # given up meanwhile
        resolve(future, msg)


def resolve(future: asyncio.Future[PubAck], msg: Msg) -> None:
    """Resolve ``future`` with the acknowledgement ``msg`` carries, or fail it with the
    error it carries."""
    if msg.headers and msg.headers.get(Header.STATUS) == _NO_RESPONDERS:
        future.set_exception(nats.js.errors.NoStreamResponseError())
        return
    try:
        answer: dict[str, Any] = orjson.loads(msg.data)
        error = answer.get("error")
        if error is not None:
            future.set_exception(api_error(error))
        else:
            # (PubAck.from_response, without working out the class's fields each time)
            future.set_result(PubAck(**{k: v for k, v in answer.items() if k in _PUB_ACK}))
    except (AttributeError, TypeError, ValueError) as e:  # (orjson's errors are ValueErrors)
        future.set_exception(nats.js.errors.Error(f"unreadable acknowledgement: {e!r}"))


def api_error(error: dict[str, Any]) -> nats.js.errors.APIError:
    """The exception nats-py's ``APIError.from_error`` makes for ``error``: it raises it
    (2.16.0), or returns it once nats-io/nats.py#985 is fixed."""
    try:
        made: nats.js.errors.APIError = nats.js.errors.APIError.from_error(error)
    except nats.js.errors.APIError as e:
        return e
    return made
