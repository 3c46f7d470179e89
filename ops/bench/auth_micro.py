"""Step (p), in process: what identity and access cost per request, without HTTP.

A policy set of ``POLICY_RULES`` rules (``policy_documents``: allow rules for 200 groups,
for single users and tokens, namespace and key globs, deny rules for groups and for
everyone, allow rules for everyone) and ``IDENTITIES`` API tokens, loaded through the
worker's own loader (``AccessState.load``, as from the rows of ``_access``). Then, each
call timed on its own:

- ``token``: ``Authenticator.authenticate`` of an API token (SHA-256, the bootstrap hash
  compared first, the record found by id and compared in constant time, expiry);
- ``bootstrap``: the same for the bootstrap admin token;
- ``decide``: ``PolicySet.decide`` of an (action, namespace, key) for the identity;
- ``key_filter``: ``PolicySet.key_filter`` of a listing (read, namespace) for it;
- ``request``: ``token`` then ``decide``, what the middleware and the route's guard do.

Each over ``requests`` calls, ``cold`` cycling through all ``IDENTITIES`` identities
(more callers than the policy set's caches hold, so every call works that caller's rules
out again, as on its first request after a policy change) and ``warm`` through
``WARM_IDENTITIES`` of them. Each call is timed on the wall clock and on the thread's CPU
clock. Runs in the load generator's process; Python's garbage collector stays on (a
server's does too).
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson

from nexus_ssot.access.identity import Identity
from nexus_ssot.access.policy import PolicySet, check_policy
from nexus_ssot.access.tokens import POLICY_KEY_PREFIX, TOKEN_KEY_PREFIX, TokenRecord, new_token
from nexus_ssot.api.access_state import AccessState
from nexus_ssot.api.authentication import Authenticator
from nexus_ssot.ledger.settings import Settings

from .measuring import NAMESPACE

POLICY_RULES = 1000
POLICIES = 10  # the rules spread over this many policy documents
GROUPS, USERS = 200, 2000
#: Cold: more distinct callers than both of the policy set's caches hold, cycled through,
#: so every call works the caller's rules out again.
IDENTITIES = PolicySet.CALLERS + PolicySet.PLACES
WARM_IDENTITIES = 16
MICRO_REQUESTS, MICRO_REQUESTS_QUICK = 25_000, 5_000

#: The HTTP step's caller: not an admin, so every request is decided by the rules; two of
#: its groups also have random team rules, and rules of its own (the last ones) allow it
#: to read and write the bench's keys, with a deny it must get past on every write.
BENCH_SUBJECT = "bench-writer"
BENCH_GROUPS = ("bench-writers", "team-017", "team-123")

_ACTION_SETS = (["read"], ["read", "history"], ["read", "write"],
                ["read", "write", "delete"], ["read", "history", "write", "restore"])
_KEY_SETS = (["services/**"], ["config/*"], ["**"], ["apps/*/settings", "shared/*"],
             ["*/public/**"])


def _team(n: int) -> str:
    return f"team-{n:03d}"


def _random_rule(rng: random.Random) -> dict[str, Any]:
    kind = rng.random()
    team = _team(rng.randrange(GROUPS))
    group = f"group:{team}"
    if kind < 0.55:  # a team's rights in its own namespaces
        return {"effect": "allow", "subjects": [group], "actions": rng.choice(_ACTION_SETS),
                "namespaces": rng.choice([[team], [team, "shared-*"], ["svc-*-prod"],
                                          [f"{team}-*"]]),
                "keys": rng.choice(_KEY_SETS)}
    if kind < 0.75:  # a user's sandbox
        user = f"u{rng.randrange(USERS):04d}"
        return {"effect": "allow", "subjects": [f"user:{user}"], "actions": ["read", "write"],
                "namespaces": ["sandbox", "sandbox-*"], "keys": [f"{user}/**"]}
    if kind < 0.85:  # denies: secrets and private keys, some for everyone
        return {"effect": "deny",
                "subjects": ["*"] if rng.random() < 0.25 else [group],
                "actions": rng.choice([["write", "delete"], ["delete"], ["*"]]),
                "namespaces": rng.choice([["prod-*"], ["team-*"], ["shared-*"]]),
                "keys": rng.choice([["secrets/**"], ["*/private/**"]])}
    if kind < 0.95:  # a token's narrow grant (a CI job's)
        return {"effect": "allow", "subjects": [f"token:{rng.getrandbits(64):016x}"],
                "actions": ["read"], "namespaces": [f"ci-{rng.randrange(50)}"],
                "keys": ["builds/**"]}
    return {"effect": "allow", "subjects": ["*"], "actions": ["read"],
            "namespaces": rng.choice([["public-*"], ["docs"]]),
            "keys": rng.choice([["**"], ["docs/**"]])}


def _bench_rules() -> list[dict[str, Any]]:
    return [
        {"effect": "deny", "subjects": ["group:bench-writers"], "actions": ["write", "delete"],
         "namespaces": [NAMESPACE, f"{NAMESPACE}-*"], "keys": ["secrets/**"]},
        {"effect": "deny", "subjects": ["*"], "actions": ["delete"],
         "namespaces": [NAMESPACE], "keys": ["**"]},
        {"effect": "allow", "subjects": ["group:bench-writers", f"user:{BENCH_SUBJECT}"],
         "actions": ["read", "write", "history"], "namespaces": [NAMESPACE, f"{NAMESPACE}-*"],
         "keys": ["*", "services/**"]},
    ]


def policy_documents(rules: int = POLICY_RULES, seed: int = 7) -> dict[str, dict[str, Any]]:
    """``rules`` rules over ``POLICIES`` policies (validated, as stored), the bench caller's
    three last; a few rate limits for others."""
    rng = random.Random(seed)
    every = [_random_rule(rng) for _ in range(rules - 3)] + _bench_rules()
    per = -(-len(every) // POLICIES)
    documents = {}
    for n in range(POLICIES):
        chunk = every[n * per:(n + 1) * per]
        limits = [{"subjects": [f"group:{_team(n)}"], "per_second": 50, "burst": 100}]
        documents[f"bench-{n:02d}"] = check_policy(
            {"description": f"bench policy {n}", "rules": chunk, "rate_limits": limits})
    return documents


def access_rows(documents: dict[str, dict[str, Any]], tokens: Sequence[TokenRecord]
                ) -> list[tuple[str, str | None, bool]]:
    """What ``_access`` would hold: the policies and the tokens' records."""
    rows: list[tuple[str, str | None, bool]] = [
        (POLICY_KEY_PREFIX + name, orjson.dumps(d).decode(), False)
        for name, d in documents.items()]
    rows += [(TOKEN_KEY_PREFIX + t.id, orjson.dumps(t.document()).decode(), False)
             for t in tokens]
    return rows


def make_tokens(rng: random.Random, n: int, now: datetime) -> tuple[list[TokenRecord],
                                                                   list[str]]:
    """``n`` API tokens and their records: every 50th for the HTTP step's caller, the
    others for random users in one to three random teams."""
    records, tokens = [], []
    for i in range(n):
        token_id, token = new_token()
        groups: tuple[str, ...]
        if i % 50 == 0:
            subject, groups = BENCH_SUBJECT, BENCH_GROUPS
        else:
            subject = f"u{rng.randrange(USERS):04d}"
            groups = tuple(sorted({_team(rng.randrange(GROUPS))
                                   for _ in range(rng.randint(1, 3))}))
        records.append(TokenRecord(
            id=token_id, subject=subject, groups=groups, expires_at=now + timedelta(days=30),
            description=None, created_at=now, created_by="bench",
            hash=hashlib.sha256(token.encode()).hexdigest()))
        tokens.append(token)
    return records, tokens


def _questions(rng: random.Random, record: TokenRecord) -> tuple[str, str, str]:
    """A request's (action, namespace, key): mostly in the caller's own namespaces."""
    action = rng.choices(["read", "write", "history", "delete"], [60, 30, 7, 3])[0]
    pick = rng.random()
    if pick < 0.5 and record.groups:
        namespace = rng.choice(record.groups)
    elif pick < 0.6:
        namespace = NAMESPACE
    else:
        namespace = rng.choice(["shared-payments", "sandbox", "prod-billing", "public-docs",
                                "svc-api-prod", "ci-7", f"{_team(rng.randrange(GROUPS))}-x"])
    key = rng.choice(["services/api/config", "secrets/db", f"{record.subject}/notes",
                      "docs/readme", "config/limits", "apps/web/settings", "a/private/b",
                      "item-42"])
    return action, namespace, key


def quantiles_us(wall: list[int], cpu: list[int]) -> dict[str, Any]:
    """p50, p99 and mean in µs of per-call times in ns, on the wall and CPU clocks (the
    lists are sorted in place)."""
    out: dict[str, Any] = {"calls": len(wall)}
    for name, samples in (("", wall), ("cpu_", cpu)):
        samples.sort()
        for q in (0.50, 0.99):
            out[f"{name}p{round(q * 100)}_us"] = round(
                samples[min(len(samples) - 1, int(q * len(samples)))] / 1000, 2)
        out[f"{name}mean_us"] = round(sum(samples) / len(samples) / 1000, 2)
    out["max_us"] = round(wall[-1] / 1000, 1)
    return out


def _timed(calls: int, one: Callable[[int], object]) -> dict[str, Any]:
    """``one(i)`` for i in range(calls), each call timed on the wall clock and on the
    thread's CPU clock (which a busy machine's preemption does not inflate; reading it
    costs ~0.3 µs, counted in)."""
    wall_clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    wall, cpu = [0] * calls, [0] * calls
    for i in range(calls):
        start, start_cpu = wall_clock(), cpu_clock()
        one(i)
        cpu[i] = cpu_clock() - start_cpu
        wall[i] = wall_clock() - start
    return quantiles_us(wall, cpu)


def run_micro(requests: int) -> dict[str, Any]:
    """The in-process measurements (see the module's docstring). Each cold cell starts on
    a fresh load of ``_access`` (new policy set, new token records and identities), as the
    first requests after a policy change do."""
    rng = random.Random(11)
    now = datetime.now(UTC)
    documents = policy_documents()
    records, tokens = make_tokens(rng, IDENTITIES, now)
    rows = access_rows(documents, records)
    questions = [_questions(rng, r) for r in records]
    bootstrap = "bench-bootstrap-" + secrets.token_urlsafe(24)
    settings = Settings(auth="on",
                        bootstrap_token_sha256=hashlib.sha256(bootstrap.encode()).hexdigest())
    state = AccessState(cast(Any, None), settings.access_refresh_seconds)
    authenticator = Authenticator(settings, state)
    started = time.perf_counter()
    state.load(rows, position=1)
    results: dict[str, Any] = {
        "rules": state.policies.rule_count(), "policies": len(documents),
        "tokens": len(records), "identities_cold": IDENTITIES,
        "identities_warm": WARM_IDENTITIES,
        "load_ms": round((time.perf_counter() - started) * 1000, 1)}
    for name in ("token", "decide", "key_filter", "request"):
        for label, span in (("cold", IDENTITIES), ("warm", WARM_IDENTITIES)):
            if label == "cold":
                state.load(rows, position=1)
            policies = state.policies
            identities = [state.tokens[r.id].identity() for r in records[:span]]

            def one(i: int, name: str = name, span: int = span, policies: PolicySet = policies,
                    identities: list[Identity] = identities) -> object:
                n = i % span
                if name == "token":
                    return authenticator.authenticate(tokens[n])
                if name == "key_filter":
                    return policies.key_filter(identities[n], "read", questions[n][1])
                identity = (authenticator.authenticate(tokens[n]) if name == "request"
                            else identities[n])
                action, namespace, key = questions[n]
                return policies.decide(identity, action, namespace, key)

            results[f"{name}_{label}"] = _timed(requests, one)
    results["bootstrap"] = _timed(requests, lambda _i: authenticator.authenticate(bootstrap))
    allowed = sum(state.policies.decide(state.tokens[r.id].identity(), *questions[i]).allowed
                  for i, r in enumerate(records))
    results["allowed_share"] = round(allowed / IDENTITIES, 3)
    return results
