"""The followers' gather (``SSOT_FOLLOWERS_GATHER_SECONDS``) reaches the log tail wherever
they run: on ``ssot serve``'s shared following, and on the following of their own that
``ssot broadcast``, ``ssot project`` and ``ssot digest`` make (ledger/following.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nexus_ssot.ledger import following as following_module
from nexus_ssot.ledger.following import Following, followed
from nexus_ssot.ledger.settings import Settings
from nexus_ssot.ops.broadcast import broadcaster_for
from nexus_ssot.ops.digest import digester_for
from nexus_ssot.ops.followers import FollowersThread
from nexus_ssot.ops.project import runners_for

GATHER = 0.007
NICE = 7


def settings() -> Settings:
    return Settings(database_url="postgresql://root@127.0.0.1:1/none",
                    nats_url="nats://127.0.0.1:1", followers_gather_seconds=GATHER,
                    followers_nice=NICE)


def test_a_role_on_a_following_of_its_own_gathers_as_it_was_told(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []

    class Made:
        def __init__(self, database_url: str, **kwargs: Any) -> None:
            made.append(kwargs)

        async def run(self, stop: asyncio.Event) -> None:
            return None

    monkeypatch.setattr(following_module, "Following", Made)
    seen: list[object] = []

    async def role(f: Any) -> None:
        seen.append(f)

    asyncio.run(followed("postgresql://unused", role, None, asyncio.Event(), 1.0,
                         gather=GATHER))
    assert [m["gather"] for m in made] == [GATHER] and isinstance(seen[0], Made)


def test_a_role_on_a_shared_following_takes_it_as_it_is() -> None:
    shared = Following("postgresql://unused", gather=0.003)
    seen: list[Following] = []

    async def role(f: Following) -> None:
        seen.append(f)

    asyncio.run(followed("postgresql://unused", role, shared, asyncio.Event(), 1.0,
                         gather=GATHER))
    assert seen == [shared] and shared.tail.gather == 0.003


def test_every_follower_is_made_with_the_setting() -> None:
    s = settings()
    assert broadcaster_for(s).gather == GATHER
    assert digester_for(s).gather == GATHER
    runners = runners_for(s)
    assert runners and {r.gather for r in runners} == {GATHER}
    thread = FollowersThread(s)  # ssot serve's (made, not started)
    try:
        assert thread.following.tail.gather == GATHER
        assert thread.nice == NICE
    finally:
        thread.loop.close()
    assert Settings.model_fields["followers_gather_seconds"].default == 0.002
    assert Settings.model_fields["followers_nice"].default == 0


@pytest.mark.parametrize(("off", "tails"), [
    ((), True),
    (("broadcast",), True),
    (("broadcast", "projections"), True),
    (("broadcast", "digests"), True),
    (("digests", "projections"), True),
    (("broadcast", "digests", "projections"), False),
])
def test_serve_tails_the_log_only_for_a_follower_that_reads_it(
        off: tuple[str, ...], tails: bool) -> None:
    # the idempotency purge, which always runs, reads no commit: with the broadcaster,
    # the digester and the views all run elsewhere, serve neither LISTENs nor reads
    thread = FollowersThread(settings().model_copy(update=dict.fromkeys(off, False)))
    try:
        assert thread.following.tailing is tails
    finally:
        thread.loop.close()
