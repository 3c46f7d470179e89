"""The policy model: globs, validation naming the member at fault, the evaluation order
(admins, deny wins, allow, default deny), key filters for listings, rate limits."""

from __future__ import annotations

from typing import Any

import pytest

from nexus_ssot.access.globs import check_glob, literal_prefix, matches
from nexus_ssot.access.identity import ADMINS, Identity
from nexus_ssot.access.policy import PolicySet, check_policy
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
                                        "operate": "none"}


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
