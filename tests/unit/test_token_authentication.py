"""API tokens proven once are known again by their hash: the same identity, their expiry
still checked at every request, and a reload of the access state (a revocation, a new
token) forgetting them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from nexus_ssot.access.errors import AuthenticationFailed
from nexus_ssot.access.tokens import TOKEN_KEY_PREFIX, TokenRecord, issue
from nexus_ssot.api.access_state import AccessState
from nexus_ssot.api.authentication import MAX_PROVEN_TOKENS, Authenticator
from nexus_ssot.ledger.settings import Settings


def rows(*records: TokenRecord, revoked: tuple[str, ...] = ()
         ) -> list[tuple[str, str | None, bool]]:
    return [*((TOKEN_KEY_PREFIX + r.id, orjson.dumps(r.document()).decode(), False)
              for r in records),
            *((TOKEN_KEY_PREFIX + token_id, None, True) for token_id in revoked)]


@pytest.fixture()
def state() -> AccessState:
    return AccessState(pool=None, refresh_seconds=0.25)  # type: ignore[arg-type]


def authenticator(state: AccessState) -> Authenticator:
    return Authenticator(Settings(auth="on", bootstrap_token_sha256=None), state)


def reason(auth: Authenticator, token: str, **kw: Any) -> str:
    with pytest.raises(AuthenticationFailed) as refused:
        auth.authenticate(token, **kw)
    return refused.value.reason


def test_a_token_proven_again_is_the_same_identity_until_the_state_is_reloaded(
    state: AccessState,
) -> None:
    record, token = issue("alice", ("ops",), None, None, "admin")
    state.load(rows(record), 1)
    auth = authenticator(state)
    first = auth.authenticate(token)
    assert first.subject == "alice" and first.groups == frozenset({"ops"})
    looked_up: list[str] = []
    lookup = state.token
    state.token = lambda token_id: looked_up.append(token_id) or lookup(token_id)  # type: ignore[method-assign]
    assert auth.authenticate(token) is first
    assert looked_up == []  # known by its hash: not parsed, looked up and compared again
    # a token differing in one character of its secret is not it
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert reason(auth, forged) == "unknown_token"
    assert looked_up == [record.id]
    assert auth.authenticate(token) is first
    # revoked (its entry deleted) and reloaded: refused at once
    state.load(rows(revoked=(record.id,)), 2)
    assert reason(auth, token) == "revoked"


def test_a_proven_token_still_expires(state: AccessState) -> None:
    record, token = issue("bob", (), 3600, None, "admin")
    state.load(rows(record), 1)
    auth = authenticator(state)
    assert auth.authenticate(token).subject == "bob"
    assert record.expires_at is not None
    later = record.expires_at + timedelta(seconds=1)
    assert reason(auth, token, now=later) == "expired"
    before = record.expires_at - timedelta(seconds=1)
    assert auth.authenticate(token, now=before).subject == "bob"
    # the clock's own reading on a token already past its time (proven before it expired)
    past = TokenRecord(**{**record.__dict__,
                          "expires_at": datetime.now(UTC) - timedelta(seconds=1)})
    state.load(rows(past), 2)
    assert reason(auth, token) == "expired"
    assert past.expired_by(datetime.now(UTC).timestamp())
    assert not record.expired_by(datetime.now(UTC).timestamp())


def test_what_is_remembered_is_bounded(state: AccessState, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    monkeypatch.setattr("nexus_ssot.api.authentication.MAX_PROVEN_TOKENS", 2)
    issued = [issue(f"user{i}", (), None, None, "admin") for i in range(3)]
    state.load(rows(*(record for record, _ in issued)), 1)
    auth = authenticator(state)
    for _, token in issued:
        auth.authenticate(token)
    assert len(auth._proven) <= 2
    assert [auth.authenticate(t).subject for _, t in issued] == ["user0", "user1", "user2"]
    assert MAX_PROVEN_TOKENS >= 1_000


def test_malformed_and_unknown_tokens_are_refused_as_before(state: AccessState) -> None:
    record, token = issue("carol", (), None, None, "admin")
    state.load(rows(), 1)
    auth = authenticator(state)
    assert reason(auth, "not-a-token") == "malformed"
    assert reason(auth, token) == "unknown_token"
    state.load(rows(record), 2)
    assert auth.authenticate(token).subject == "carol"


def test_proven_answers_only_for_a_token_proven_since_the_load_and_unexpired(
        state: AccessState, monkeypatch: pytest.MonkeyPatch) -> None:
    """(the middleware's way past a coroutine per request: whatever it does not answer,
    ``authenticate`` decides, refusals and their reasons included)"""
    record, token = issue("dave", (), 3600, None, "admin")
    state.load(rows(record), 1)
    auth = authenticator(state)
    assert auth.proven(token) is None  # not proven yet
    identity = auth.authenticate(token)
    assert auth.proven(token) is identity
    assert auth.proven(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert record.expires_at is not None
    expired_at = record.expires_at.timestamp() + 1
    with monkeypatch.context() as m:
        m.setattr("nexus_ssot.api.authentication.time.time", lambda: expired_at)
        assert auth.proven(token) is None  # past its time: not answered here
    state.load(rows(record), 2)
    assert auth.proven(token) is None  # reloaded: forgotten until proven again
