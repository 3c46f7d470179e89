"""access/nats_config.py: the nats-server authorization block rendered from the policy."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from nexus_ssot.access.nats_config import readable_namespaces, render
from nexus_ssot.access.policy import PolicySet, check_policy
from nexus_ssot.access.tokens import TokenRecord, issue

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SERVICE = ("ssot", "$2b$04$" + "s" * 53)


def policies(*rules: dict[str, Any]) -> PolicySet:
    return PolicySet({"p": check_policy({"rules": list(rules)})})


def allow(subject: str, namespaces: list[str], keys: list[str] | None = None,
          effect: str = "allow") -> dict[str, Any]:
    rule: dict[str, Any] = {"effect": effect, "subjects": [subject], "actions": ["read"],
                            "namespaces": namespaces}
    if keys is not None:
        rule["keys"] = keys
    return rule


def token(subject: str = "alice", groups: tuple[str, ...] = (),
          expires_in: int | None = None) -> TokenRecord:
    return issue(subject, groups, expires_in, None, "test", now=NOW)[0]


def users(block: str) -> list[dict[str, Any]]:
    """The users of a rendered block (its values are JSON)."""
    match = re.search(r"authorization \{\n  users = (.*)\n\}\n\Z", block, re.DOTALL)
    assert match, block
    parsed: list[dict[str, Any]] = json.loads(match.group(1))
    return parsed


def rendered(policy: PolicySet, tokens: list[TokenRecord], namespaces: list[str] | None = None,
             service: tuple[str, str] | None = SERVICE) -> list[dict[str, Any]]:
    return users(render(policy, tokens, subject_prefix="ssot", stream="SSOT",
                        kv_bucket_prefix="ssot_", service_user=service,
                        namespaces=namespaces or [], now=NOW))


def test_the_service_user_comes_first_and_may_do_everything() -> None:
    [service, user] = rendered(policies(), [a := token()])
    assert service == {"user": "ssot", "password": SERVICE[1]}
    assert user["user"] == a.id and user["password"] == a.nats_hash
    assert rendered(policies(), [a], service=None)[0]["user"] == a.id


def test_a_namespace_read_whole_is_granted_live_consumers_and_its_bucket() -> None:
    a = token()
    [_, user] = rendered(policies(allow("user:alice", ["a"])), [a], ["a", "b"])
    sub, pub = user["permissions"]["subscribe"], user["permissions"]["publish"]
    assert sub == {"allow": ["_INBOX.>", "ssot.a.>"]}
    assert "$JS.API.CONSUMER.CREATE.SSOT.*.ssot.a.>" in pub["allow"]
    assert "$JS.API.CONSUMER.MSG.NEXT.SSOT.*" in pub["allow"]
    assert "$JS.API.DIRECT.GET.KV_ssot_a.>" in pub["allow"]
    assert not [s for s in pub["allow"] if ".b" in s or "ssot_b" in s]
    # nothing that reads the whole events stream, nothing that publishes into the ledger
    assert "$JS.API.STREAM.MSG.GET.SSOT" not in pub["allow"]
    assert "$JS.API.STREAM.INFO.SSOT" not in pub["allow"]
    assert pub["deny"] == ["ssot.>", "$KV.>"]
    assert not [s for s in pub["allow"] if s.startswith(("ssot.", "$KV."))]


def test_a_namespace_glob_is_expanded_against_the_namespaces_given() -> None:
    policy = policies(allow("group:team", ["team-*"]))
    t = token(groups=("team",))
    assert rendered(policy, [t])[1]["permissions"]["subscribe"]["allow"] == ["_INBOX.>"]
    granted = rendered(policy, [t], ["team-a", "team-b", "other", "_access"])
    assert granted[1]["permissions"]["subscribe"]["allow"] == [
        "_INBOX.>", "ssot.team-a.>", "ssot.team-b.>"]


def test_a_namespace_named_literally_is_granted_before_it_exists() -> None:
    granted = rendered(policies(allow("user:alice", ["config"])), [token()])
    assert "ssot.config.>" in granted[1]["permissions"]["subscribe"]["allow"]


def test_denied_and_partly_readable_namespaces_are_not_granted() -> None:
    policy = policies(allow("*", ["*"]), allow("user:alice", ["secret"], effect="deny"))
    [_, alice] = rendered(policy, [token("alice")], ["open", "secret"])
    assert alice["permissions"]["subscribe"] == {"allow": ["_INBOX.>", "ssot.open.>"],
                                                 "deny": ["ssot.secret.>"]}
    bob_only = policies(allow("user:bob", ["shared"], keys=["public/**"]))
    [_, bob] = rendered(bob_only, [token("bob")], ["shared"])
    assert bob["permissions"]["subscribe"] == {"allow": ["_INBOX.>"]}  # keys: not all


def test_system_namespaces_need_naming_and_globs_never_reach_them() -> None:
    t = token()
    [_, user] = rendered(policies(allow("user:alice", ["*"])), [t], ["_access", "x"])
    assert user["permissions"]["subscribe"]["allow"] == ["_INBOX.>", "ssot.x.>"]


def test_admins_may_read_the_whole_stream_but_not_publish_into_it() -> None:
    [_, admin] = rendered(policies(), [token(groups=("admins",))], ["a"])
    assert "ssot.>" in admin["permissions"]["subscribe"]["allow"]
    allowed = admin["permissions"]["publish"]["allow"]
    assert "$JS.API.CONSUMER.CREATE.SSOT.*.ssot.>" in allowed
    assert "$JS.API.STREAM.MSG.GET.SSOT" in allowed
    assert admin["permissions"]["publish"]["deny"] == ["ssot.>", "$KV.>"]


def test_expired_tokens_and_tokens_without_a_nats_hash_get_no_user() -> None:
    live, expiring = token(), token(expires_in=60)
    no_hash = TokenRecord(**{**token().__dict__, "nats_hash": None})
    names = [u["user"] for u in rendered(policies(), [live, expiring, no_hash])]
    assert names == ["ssot", *sorted([live.id, expiring.id])]
    later = render(policies(), [live, expiring], subject_prefix="ssot", stream="SSOT",
                   kv_bucket_prefix="ssot_", service_user=SERVICE,
                   now=NOW + timedelta(seconds=60))
    assert [u["user"] for u in users(later)] == ["ssot", live.id]


def test_the_same_inputs_render_the_same_text() -> None:
    policy, tokens = policies(allow("user:alice", ["a", "team-*"])), [token(), token("bob")]
    first = render(policy, tokens, subject_prefix="ssot", stream="SSOT",
                   kv_bucket_prefix="ssot_", service_user=SERVICE, namespaces=["team-x", "a"],
                   now=NOW)
    again = render(policy, list(reversed(tokens)), subject_prefix="ssot", stream="SSOT",
                   kv_bucket_prefix="ssot_", service_user=SERVICE, namespaces=["a", "team-x"],
                   now=NOW)
    assert first == again
    assert first.startswith("# Rendered from the ledger's access policy")


def test_readable_namespaces_reports_allowed_and_denied() -> None:
    policy = policies(allow("*", ["a", "b"]), allow("user:alice", ["b"], effect="deny"))
    assert readable_namespaces(policy, token().identity(), ["c"]) == (["a"], ["b"])
