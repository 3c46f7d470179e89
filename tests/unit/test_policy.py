"""The policy model: globs, validation naming the member at fault, the evaluation order
(admins, deny wins, allow, default deny), key filters for listings, rate limits."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from nexus_ssot.access.globs import GlobSet, check_glob, literal_prefix, matches
from nexus_ssot.access.identity import ADMINS, Identity
from nexus_ssot.access.policy import ADMIN_DECISION, Decision, PolicySet, check_policy
from nexus_ssot.access.tokens import check_request, hash_matches, issue, token_id_of
from nexus_ssot.ledger.errors import InvalidInput

ALICE = Identity("alice", frozenset({"platform"}), token_id="00112233445566aa")
BOB = Identity("bob")
ROOT = Identity("root", frozenset({ADMINS}))

EXAMPLE = {"description": "platform team", "rules": [
    {"effect": "allow", "subjects": ["group:platform", "user:alice"],
     "actions": ["read", "history", "write"], "namespaces": ["config", "team-*"],
     "keys": ["services/**"]},
    {"effect": "deny", "subjects": ["*"], "actions": ["write", "delete"],
     "namespaces": ["config"], "keys": ["services/secrets/**"]}]}


def policies(*documents: dict[str, Any]) -> PolicySet:
    return PolicySet({f"p{i}": check_policy(d) for i, d in enumerate(documents)})


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("services/**", "services/a", True), ("services/**", "services/a/b", True),
    ("services/**", "services", False), ("services/*", "services/a/b", False),
    ("*", "a", True), ("*", "a/b", False), ("**", "a/b/c", True),
    ("a/*/c", "a/b/c", True), ("a/*/c", "a/b/x/c", False), ("**/c", "c", True),
    ("**/c", "a/b/c", True), ("team-*", "team-a", True), ("team-*", "teamx", False),
    ("a.b", "axb", False), ("a.*", "a.x", True), ("x*y", "xay", True), ("x*y", "xa/y", False),
])
def test_globs(pattern: str, value: str, expected: bool) -> None:
    assert matches(pattern, value) is expected


def test_glob_syntax_and_prefixes() -> None:
    assert check_glob("a/**/b") is None
    assert check_glob("a**") is not None and check_glob("***") is not None
    assert check_glob("a b") is not None and check_glob("") is not None
    assert literal_prefix("services/*/x") == "services/" and literal_prefix("abc") == "abc"


@pytest.mark.parametrize(("document", "field"), [
    ([], "policy"),
    ({"rules": [], "extra": 1}, "extra"),
    ({"rules": {}}, "rules"),
    ({"rules": [{"effect": "maybe"}]}, "rules[0].effect"),
    ({"rules": [{"effect": "allow", "subjects": ["root"], "actions": ["read"],
                 "namespaces": ["a"]}]}, "rules[0].subjects[0]"),
    ({"rules": [{"effect": "allow", "subjects": ["*"], "actions": ["read", "fly"],
                 "namespaces": ["a"]}]}, "rules[0].actions[1]"),
    ({"rules": [{"effect": "allow", "subjects": ["*"], "actions": ["read"],
                 "namespaces": ["a**"]}]}, "rules[0].namespaces[0]"),
    ({"rules": [{"effect": "allow", "subjects": ["*"], "actions": ["read"]}]},
     "rules[0].namespaces"),
    ({"rules": [{"effect": "allow", "subjects": ["*"], "actions": ["read"],
                 "namespaces": ["a"], "when": "now"}]}, "rules[0].when"),
    ({"rules": [], "rate_limits": [{"subjects": ["*"], "per_second": 0, "burst": 1}]},
     "rate_limits[0].per_second"),
])
def test_an_invalid_policy_is_refused_naming_the_member(document: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        check_policy(document)
    assert e.value.code == "invalid_policy" and e.value.field == field


def test_explicit_deny_wins_and_nothing_is_allowed_by_default() -> None:
    p = policies(EXAMPLE)
    assert p.decide(ALICE, "write", "config", "services/a").allowed
    assert p.decide(ALICE, "write", "team-x", "services/a/b").allowed
    denied = p.decide(ALICE, "write", "config", "services/secrets/db")
    assert not denied.allowed and (denied.by, denied.policy, denied.rule) == ("deny", "p0", 1)
    assert p.decide(ALICE, "read", "config", "services/secrets/db").allowed  # deny is write
    assert not p.decide(ALICE, "delete", "config", "services/a").allowed  # not granted
    assert p.decide(ALICE, "read", "config", "other").by == "default"
    assert not p.decide(BOB, "read", "config", "services/a").allowed
    assert p.decide(ROOT, "delete", "config", "services/secrets/db").by == "admins"


def test_namespace_wide_actions_need_all_keys_and_any_deny_refuses_them() -> None:
    p = policies(EXAMPLE, {"rules": [{"effect": "allow", "subjects": ["user:bob"],
                                      "actions": ["read", "write"], "namespaces": ["ops"]}]})
    assert not p.decide(ALICE, "read", "config").allowed  # only services/**
    assert p.decide(BOB, "read", "ops").allowed
    assert p.key_filter(BOB, "read", "ops").everything
    keys = p.key_filter(ALICE, "write", "config")
    assert not keys.everything and keys.prefixes == ["services/"]
    assert keys.allows("services/a") and not keys.allows("services/secrets/a")
    assert p.key_filter(BOB, "read", "config").nothing
    assert p.actions_in(ALICE, "config")["write"] == "some"
    assert p.actions_in(BOB, "ops") == {"read": "all", "history": "none", "write": "all",
                                        "delete": "none", "restore": "none", "admin": "none",
                                        "operate": "none", "metrics": "none"}


def test_system_namespaces_are_matched_only_by_name() -> None:
    p = policies({"rules": [{"effect": "allow", "subjects": ["*"], "actions": ["*"],
                             "namespaces": ["*"]}]})
    assert p.decide(BOB, "write", "anything", "k").allowed
    assert not p.decide(BOB, "admin", "_access", "policies/x").allowed
    named = policies({"rules": [{"effect": "allow", "subjects": ["user:bob"],
                                 "actions": ["operate"], "namespaces": ["_system"]}]})
    assert named.decide(BOB, "operate", "_system").allowed


def test_token_and_group_subjects() -> None:
    p = policies({"rules": [
        {"effect": "allow", "subjects": ["token:00112233445566aa"], "actions": ["read"],
         "namespaces": ["a"]},
        {"effect": "allow", "subjects": ["group:platform"], "actions": ["history"],
         "namespaces": ["b"]}]})
    assert p.decide(ALICE, "read", "a", "k").allowed
    assert p.decide(ALICE, "history", "b", "k").allowed
    assert not p.decide(Identity("alice"), "read", "a", "k").allowed  # another token


def test_a_thousand_rules_compile_and_decide() -> None:
    rules = [{"effect": "allow", "subjects": [f"user:u{i}", "group:g"], "actions": ["read"],
              "namespaces": [f"team-{i}-*"], "keys": [f"svc/{i}/**"]} for i in range(1000)]
    p = policies({"rules": rules})
    member = Identity("someone", frozenset({"g"}))
    assert p.decide(member, "read", "team-999-x", "svc/999/a").allowed
    assert not p.decide(member, "read", "team-999-x", "svc/998/a").allowed
    assert p.rule_count() == 1000


def test_rate_limits_most_specific_level_wins() -> None:
    p = policies({"rules": [], "rate_limits": [
        {"subjects": ["*"], "per_second": 5, "burst": 5},
        {"subjects": ["group:platform"], "per_second": 50, "burst": 100},
        {"subjects": ["user:alice"], "per_second": 1, "burst": 2}]})
    assert p.rate_limit(ALICE) is not None and p.rate_limit(ALICE).per_second == 1  # type: ignore[union-attr]
    assert p.rate_limit(Identity("x", frozenset({"platform"}))).burst == 100  # type: ignore[union-attr]
    assert p.rate_limit(BOB).per_second == 5  # type: ignore[union-attr]
    assert policies({"rules": []}).rate_limit(BOB) is None


def test_tokens_are_random_hashed_and_checked() -> None:
    record, token = issue("ci", ("deployers",), 3600, "CI", created_by="admin")
    assert token_id_of(token) == record.id and token.startswith("ssot_")
    assert token not in str(record.document()) and "hash" not in record.public()
    assert hash_matches(token, record.hash) and not hash_matches(token + "x", record.hash)
    assert record.identity().principals == ("user:ci", "group:deployers", f"token:{record.id}")
    assert token_id_of("ssot_zz_abc") is None
    with pytest.raises(InvalidInput) as e:
        check_request({"subject": "ci", "expires_in": 0})
    assert e.value.field == "expires_in"
    with pytest.raises(InvalidInput) as e:
        check_request({"subject": "bad name"})
    assert e.value.field == "subject"


# --- the compiled, cached evaluation against a plain reading of the rules --------------------

_PATTERNS = ["**", "*", "a", "a/*", "a/**", "**/c", "a/*/c", "x*y", "team-*", "t.*", "b/**"]
_VALUES = ["", "a", "a/b", "a/b/c", "c", "b/c", "xay", "xa/y", "team-1", "t.x", "tax", "b"]


def test_a_glob_set_matches_what_any_of_its_globs_matches() -> None:
    rng = random.Random(3)
    for _ in range(500):
        patterns = rng.sample(_PATTERNS, rng.randint(1, 4))
        test = GlobSet(patterns)
        for value in _VALUES:
            assert test(value) is any(matches(p, value) for p in patterns), (patterns, value)


def _reference(documents: dict[str, dict[str, Any]], who: Identity, action: str,
               namespace: str, key: str | None) -> Decision:
    """docs/access.md's table, read literally: every rule, in order, every time."""
    if ADMINS in who.groups:
        return ADMIN_DECISION
    principals = {*who.principals, "*"}
    matching = []
    for name in sorted(documents):
        for i, rule in enumerate(documents[name]["rules"]):
            if (principals.isdisjoint(rule["subjects"])
                    or ("*" not in rule["actions"] and action not in rule["actions"])):
                continue
            if (namespace not in rule["namespaces"] if namespace.startswith("_")
                    else not any(matches(p, namespace) for p in rule["namespaces"])):
                continue
            matching.append((name, i, rule))
    for name, i, rule in matching:
        if rule["effect"] == "deny" and (
                key is None or any(matches(p, key) for p in rule["keys"])):
            return Decision(False, "deny", name, i)
    for name, i, rule in matching:
        if rule["effect"] == "allow" and (
                "**" in rule["keys"] if key is None
                else any(matches(p, key) for p in rule["keys"])):
            return Decision(True, "allow", name, i)
    return Decision(False, "default")


def _random_documents(rng: random.Random) -> dict[str, dict[str, Any]]:
    subjects = ["*", *(f"group:g{n}" for n in range(6)), *(f"user:u{n}" for n in range(6)),
                "token:00112233445566aa"]
    namespaces = ["a", "team-*", "*", "_access", "b", "t.*", "**"]
    keys = ["**", "a/*", "a/**", "**/c", "secrets/**", "c", "x*y"]
    documents = {}
    for p in range(3):
        rules = [{"effect": rng.choice(["allow", "allow", "deny"]),
                  "subjects": rng.sample(subjects, rng.randint(1, 3)),
                  "actions": rng.choice([["*"], ["read"], ["read", "write"], ["delete"],
                                         ["write", "admin"]]),
                  "namespaces": rng.sample(namespaces, rng.randint(1, 2)),
                  "keys": rng.sample(keys, rng.randint(1, 2))} for _ in range(60)]
        documents[f"p{p}"] = check_policy({"rules": rules, "rate_limits": [
            {"subjects": rng.sample(subjects, 2), "per_second": rng.randint(1, 9),
             "burst": rng.randint(1, 9)}]})
    return documents


def test_decisions_equal_a_plain_reading_of_the_rules() -> None:
    rng = random.Random(5)
    for _ in range(3):
        documents = _random_documents(rng)
        p = PolicySet(documents)
        callers = [Identity(f"u{rng.randrange(8)}",
                            frozenset(f"g{rng.randrange(8)}" for _ in range(rng.randint(0, 3))),
                            token_id=rng.choice([None, "00112233445566aa"]))
                   for _ in range(40)]
        for _ in range(2000):  # far more questions than callers: the caches are hit
            who = rng.choice(callers)
            action = rng.choice(["read", "write", "delete", "admin", "history"])
            namespace = rng.choice(["a", "b", "team-1", "_access", "t.x", "zzz"])
            key = rng.choice([None, "a/b", "a/b/c", "c", "secrets/x", "xay", "k"])
            assert p.decide(who, action, namespace, key) == _reference(
                documents, who, action, namespace, key), (who, action, namespace, key)
            listing = p.key_filter(who, action, namespace)
            for k in ("a/b", "c", "secrets/x"):
                allowed = _reference(documents, who, action, namespace, k).allowed
                assert listing.allows(k) is allowed, (who, action, namespace, k)


def test_identities_and_token_identities_are_worked_out_once() -> None:
    record, _ = issue("ci", ("deployers",), 3600, None, created_by="admin")
    assert record.identity() is record.identity()
    assert record.identity().principals is record.identity().principals
    acting = dataclasses.replace(record.identity(), on_behalf_of="someone")
    assert acting.principals == record.identity().principals and acting.actor == "someone"
