"""Pipelined JetStream publishes (``ledger/jetstream_acks.py``): each future is the
message's acknowledgement or, at once, the error JetStream answered — where nats-py's own
``publish_async`` leaves an error answer's future pending (nats-io/nats.py#985)."""

from __future__ import annotations

import asyncio
import secrets

import nats
import nats.js.errors
import pytest
from nats.js.api import StreamConfig

from nexus_ssot.ledger.jetstream_acks import Acks

#: Longer than any answer of a local NATS takes, far shorter than a publish timeout: an
#: error answer that never reached its future fails the test here.
ANSWERED_WITHIN = 2.0


def test_acknowledgements_and_errors_reach_their_futures(nats_url: str) -> None:
    name = f"ACKS_{secrets.token_hex(4).upper()}"

    async def scenario() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
        acks = Acks(nc)
        try:
            async with asyncio.timeout(ANSWERED_WITHIN):
                sent = [await acks.publish(f"{name.lower()}.a", b"%d" % i,
                                           headers={"Nats-Msg-Id": f"m{i}"})
                        for i in range(3)]
                answers = [await f for f in sent]
                assert [(a.stream, a.seq) for a in answers] == [(name, 1), (name, 2), (name, 3)]

                # refused: the stream's last sequence is 3, not 2 (the publishers' guard)
                refused = await acks.publish(
                    f"{name.lower()}.a", b"x",
                    headers={"Nats-Msg-Id": "m9", "Nats-Expected-Last-Sequence": "2"})
                with pytest.raises(nats.js.errors.APIError) as refusal:
                    await refused
                assert refusal.value.err_code == 10071  # wrong last sequence

                # a subject no stream holds
                nowhere = await acks.publish(f"nowhere{name.lower()}.a", b"x")
                with pytest.raises(nats.js.errors.NoStreamResponseError):
                    await nowhere

                # a duplicate message id: acknowledged as such, not stored again
                again = await (await acks.publish(f"{name.lower()}.a", b"0",
                                                  headers={"Nats-Msg-Id": "m0"}))
                assert again.duplicate and again.seq == 1
                assert (await js.stream_info(name)).state.messages == 3

            # what is pending when the publisher closes is cancelled
            await nc.flush()
            unanswered = await acks.publish(f"{name.lower()}.a", b"late")
            await acks.close()
            assert unanswered.cancelled()
        finally:
            await acks.close()
            await js.delete_stream(name)
            await nc.close()

    asyncio.run(scenario())
