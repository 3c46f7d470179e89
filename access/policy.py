"""The policy model: named policy documents of allow and deny rules over subjects, actions,
namespaces and keys, and the one function that decides a request.

A policy document::

    {"description": "platform team",
     "rules": [{"effect": "allow", "subjects": ["group:platform"], "actions": ["read"],
                "namespaces": ["config", "team-*"], "keys": ["services/**"]}],
     "rate_limits": [{"subjects": ["group:ci"], "per_second": 50, "burst": 100}]}

Evaluation (docs/access.md has it as a table):

1. A member of the group ``admins`` may do everything (the break-glass group).
2. Any deny rule matching the caller, the action, the namespace and the key: denied.
3. Any allow rule matching them: allowed.
4. Otherwise: denied (nothing is allowed by default).

A rule matches the caller when one of its subjects is one of the caller's principals
(``user:<subject>``, ``group:<group>``, ``token:<id>``) or ``*``. A namespace-wide request
(no key: settings, counts, a restore's scope) is allowed only by an allow rule whose keys
include ``**``, and denied by any matching deny rule whatever its keys. Namespace globs
never match a system namespace (``_access``, ``_namespaces``, ``_schemas``): name those
literally.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from nexus_ssot.ledger.documents import check_text
from nexus_ssot.ledger.errors import InvalidInput, capped, quoted

from .globs import GlobSet, check_glob, literal_prefix
from .identity import Identity

ACTIONS = ("read", "history", "write", "delete", "restore", "admin", "operate", "metrics")
EFFECTS = ("allow", "deny")
_PRINCIPAL_KINDS = ("user", "group", "token")
_RULE_MEMBERS = ("effect", "subjects", "actions", "namespaces", "keys", "description")
_LIMIT_MEMBERS = ("subjects", "per_second", "burst")
MAX_RULES = 10_000
ALL_KEYS = "**"


def _invalid(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_policy", field=field)


def _strings(value: Any, field: str, *, limit: int = 1000) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _invalid(f"{field} must be a non-empty list of strings", field)
    if len(value) > limit:
        raise _invalid(f"{field} has {len(value)} items; at most {limit}", field)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _invalid(f"{field}[{i}] must be a string", f"{field}[{i}]")
    return value


def check_subject(subject: str, field: str) -> str:
    if subject == "*":
        return subject
    kind, _, name = subject.partition(":")
    if kind not in _PRINCIPAL_KINDS or not name or len(name) > 255 or not name.isprintable():
        raise _invalid(f"{field} is {quoted(subject)}: a subject is user:<name>, group:<name>, "
                       "token:<id> or * (any authenticated caller)", field)
    return subject


def _check_rule(rule: Any, field: str) -> dict[str, Any]:
    if not isinstance(rule, dict):
        raise _invalid(f"{field} must be an object", field)
    unknown = sorted(set(rule) - set(_RULE_MEMBERS))
    if unknown:
        raise _invalid(f"{field} has unknown member {quoted(unknown[0])}; a rule has "
                       f"{', '.join(_RULE_MEMBERS)}", f"{field}.{capped(unknown[0])}")
    effect = rule.get("effect")
    if effect not in EFFECTS:
        raise _invalid(f"{field}.effect must be allow or deny, not {quoted(effect)}",
                       f"{field}.effect")
    subjects = [check_subject(s, f"{field}.subjects[{i}]")
                for i, s in enumerate(_strings(rule.get("subjects"), f"{field}.subjects"))]
    actions = _strings(rule.get("actions"), f"{field}.actions")
    for i, action in enumerate(actions):
        if action != "*" and action not in ACTIONS:
            raise _invalid(f"{field}.actions[{i}] is {quoted(action)}; the actions are "
                           f"{', '.join(ACTIONS)} (or * for all)", f"{field}.actions[{i}]")
    out: dict[str, Any] = {"effect": effect, "subjects": subjects, "actions": actions}
    for member, default in (("namespaces", None), ("keys", [ALL_KEYS])):
        given = rule.get(member, default)
        globs = _strings(given, f"{field}.{member}")
        for i, pattern in enumerate(globs):
            problem = check_glob(pattern)
            if problem is not None:
                raise _invalid(f"{field}.{member}[{i}] {quoted(pattern)} is not a glob: {problem}",
                               f"{field}.{member}[{i}]")
        out[member] = globs
    description = rule.get("description")
    if description is not None:
        if not isinstance(description, str) or len(description) > 1024:
            raise _invalid(f"{field}.description must be text of at most 1024 characters",
                           f"{field}.description")
        out["description"] = description
    return out


def _check_limit(limit: Any, field: str) -> dict[str, Any]:
    if not isinstance(limit, dict):
        raise _invalid(f"{field} must be an object", field)
    unknown = sorted(set(limit) - set(_LIMIT_MEMBERS))
    if unknown:
        raise _invalid(f"{field} has unknown member {quoted(unknown[0])}; a rate limit has "
                       f"{', '.join(_LIMIT_MEMBERS)}", f"{field}.{capped(unknown[0])}")
    subjects = [check_subject(s, f"{field}.subjects[{i}]")
                for i, s in enumerate(_strings(limit.get("subjects"), f"{field}.subjects"))]
    out: dict[str, Any] = {"subjects": subjects}
    for member in ("per_second", "burst"):
        value = limit.get(member)
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                0 < value <= 1_000_000):
            raise _invalid(f"{field}.{member} must be a number above 0 and at most "
                           "1000000", f"{field}.{member}")
        out[member] = value
    return out


def check_policy(document: Any) -> dict[str, Any]:
    """A policy document, validated; complete (defaults filled in). Raises
    ``InvalidInput`` (``invalid_policy``) naming the member at fault."""
    if not isinstance(document, dict):
        raise _invalid("a policy must be a JSON object with rules", "policy")
    check_text(document, "")
    unknown = sorted(set(document) - {"description", "rules", "rate_limits"})
    if unknown:
        raise _invalid(f"unknown member {quoted(unknown[0])}; a policy has description, "
                       "rules and rate_limits", capped(unknown[0]))
    description = document.get("description")
    if description is not None and (not isinstance(description, str)
                                    or len(description) > 1024):
        raise _invalid("description must be text of at most 1024 characters, or null",
                       "description")
    rules = document.get("rules")
    if not isinstance(rules, list):
        raise _invalid("rules must be a list of rules (it may be empty)", "rules")
    if len(rules) > MAX_RULES:
        raise _invalid(f"a policy has at most {MAX_RULES} rules, not {len(rules)}", "rules")
    limits = document.get("rate_limits", [])
    if not isinstance(limits, list):
        raise _invalid("rate_limits must be a list", "rate_limits")
    return {"description": description,
            "rules": [_check_rule(r, f"rules[{i}]") for i, r in enumerate(rules)],
            "rate_limits": [_check_limit(x, f"rate_limits[{i}]") for i, x in enumerate(limits)]}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: "allow" or "deny" rule that decided, "admins" (the group), or "default" (no rule).
    by: str
    policy: str | None = None
    rule: int | None = None

    @property
    def reason(self) -> str:
        if self.by == "admins":
            return "allowed: a member of the group admins may do everything"
        if self.by == "default":
            return "denied: no rule allows it"
        verb = "allowed" if self.allowed else "denied"
        return f"{verb} by policy {self.policy!r} rule {self.rule}"

    def as_json(self) -> dict[str, Any]:
        return {"decision": "allow" if self.allowed else "deny", "by": self.by,
                "policy": self.policy, "rule": self.rule, "reason": self.reason}


@dataclass(frozen=True)
class Rule:
    policy: str
    index: int
    effect: str
    actions: frozenset[str]
    namespaces: tuple[str, ...]
    keys: tuple[str, ...]
    #: Its place among all the rules in force (policies by name, then by index).
    rank: int = 0
    # Compiled once: the globs as one test each, the decision this rule makes.
    _namespace_globs: GlobSet = field(init=False, repr=False, compare=False)
    _named: frozenset[str] = field(init=False, repr=False, compare=False)
    _key_globs: GlobSet = field(init=False, repr=False, compare=False)
    all_keys: bool = field(init=False, repr=False, compare=False)
    decision: Decision = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (
                ("_namespace_globs", GlobSet(self.namespaces)),
                ("_named", frozenset(self.namespaces)),
                ("_key_globs", GlobSet(self.keys)),
                ("all_keys", ALL_KEYS in self.keys),
                ("decision", Decision(self.effect == "allow", self.effect, self.policy,
                                      self.index))):
            object.__setattr__(self, name, value)

    def covers_namespace(self, namespace: str) -> bool:
        if namespace.startswith("_"):
            return namespace in self._named
        return self._namespace_globs(namespace)

    def covers_key(self, key: str) -> bool:
        return self._key_globs(key)


Split = tuple[tuple[Rule, ...], tuple[Rule, ...]]  # (allow rules, deny rules), in order
_NONE: Split = ((), ())


def _rank(rule: Rule) -> int:
    return rule.rank


def _in_namespace(rules: Split, namespace: str) -> Split:
    allows, denies = rules
    return (tuple(r for r in allows if r.covers_namespace(namespace)),
            tuple(r for r in denies if r.covers_namespace(namespace)))


def _merge(first: tuple[Rule, ...], second: tuple[Rule, ...]) -> tuple[Rule, ...]:
    """Two lists of rules in order as one, in order, each rule once (a rule may name
    both ``*`` and one of the caller's principals)."""
    if not first or not second:
        return first or second
    return tuple(sorted({r.rank: r for r in (*first, *second)}.values(), key=_rank))


_ACTIONS = frozenset(ACTIONS)
ADMIN_DECISION = Decision(True, "admins")
DEFAULT_DENY = Decision(False, "default")


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst: float


@dataclass(frozen=True)
class KeyFilter:
    """Which keys of one namespace a caller may see for one action: ``allows(key)``,
    ``everything`` when no check is needed, ``prefixes`` (the literal prefixes of the
    allowing globs) to narrow a scan."""

    allow_rules: tuple[Rule, ...]
    deny_rules: tuple[Rule, ...]
    everything: bool

    @property
    def nothing(self) -> bool:
        return not self.everything and not self.allow_rules

    def allows(self, key: str) -> bool:
        if self.everything:
            return True
        if any(r.covers_key(key) for r in self.deny_rules):
            return False
        return any(r.covers_key(key) for r in self.allow_rules)

    @property
    def prefixes(self) -> list[str]:
        """Literal prefixes; every allowed key starts with one of them ([""] = any)."""
        if self.everything:
            return [""]
        found = sorted({literal_prefix(p) for r in self.allow_rules for p in r.keys})
        return [p for i, p in enumerate(found) if not any(p.startswith(q) for q in found[:i])]


class PolicySet:
    """Every policy in force, compiled: rules by subject and action. What applies to a
    caller doing an action in a namespace is worked out on its first such request and
    kept (least recently used out first), the rules naming ``*`` once per (action,
    namespace) for all callers."""

    #: (action, namespace) pairs and (caller, action, namespace) triples whose rules are
    #: kept; callers whose rate limit is kept.
    NAMESPACES, PLACES, CALLERS = 4096, 16384, 4096

    def __init__(self, policies: Mapping[str, Mapping[str, Any]], version: int = 0) -> None:
        self.policies = dict(policies)
        self.version = version
        by_subject: dict[str, list[Rule]] = {}
        limits: dict[str, list[RateLimit]] = {}
        rank = 0
        for name in sorted(self.policies):
            document = self.policies[name]
            for i, rule in enumerate(document.get("rules", [])):
                actions = frozenset(ACTIONS if "*" in rule["actions"] else rule["actions"])
                compiled = Rule(name, i, rule["effect"], actions, tuple(rule["namespaces"]),
                                tuple(rule.get("keys", [ALL_KEYS])), rank)
                rank += 1
                for subject in dict.fromkeys(rule["subjects"]):
                    by_subject.setdefault(subject, []).append(compiled)
            for limit in document.get("rate_limits", []):
                for subject in limit["subjects"]:
                    limits.setdefault(subject, []).append(
                        RateLimit(limit["per_second"], limit["burst"]))
        #: (subject, action) → its (allow rules, deny rules), in order.
        self._rules_of: dict[tuple[str, str], Split] = {}
        for subject, rules in by_subject.items():
            for action in ACTIONS:
                allows = tuple(r for r in rules if action in r.actions and r.effect == "allow")
                denies = tuple(r for r in rules if action in r.actions and r.effect == "deny")
                if allows or denies:
                    self._rules_of[subject, action] = (allows, denies)
        self._limits = limits
        self._anyones_in = lru_cache(maxsize=self.NAMESPACES)(self._compile_anyones)
        self._rules_in = lru_cache(maxsize=self.PLACES)(self._compile_in)
        self._limit_for = lru_cache(maxsize=self.CALLERS)(self._rate_limit)

    def _compile_anyones(self, action: str, namespace: str) -> Split:
        return _in_namespace(self._rules_of.get(("*", action), _NONE), namespace)

    def _compile_in(self, principals: tuple[str, ...], action: str, namespace: str
                    ) -> Split:
        allows, denies = self._anyones_in(action, namespace)
        for principal in principals:
            own = self._rules_of.get((principal, action))
            if own is not None:
                own_allows, own_denies = _in_namespace(own, namespace)
                allows, denies = _merge(own_allows, allows), _merge(own_denies, denies)
        return allows, denies

    def rules(self, identity: Identity, action: str, namespace: str
              ) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
        """The allow and deny rules for ``identity`` doing ``action`` in ``namespace``."""
        return self._rules_in(identity.principals, action, namespace)

    def decide(self, identity: Identity, action: str, namespace: str,
               key: str | None = None) -> Decision:
        """May ``identity`` do ``action`` on ``key`` of ``namespace`` (None: on the whole
        namespace)?"""
        if action not in _ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        if identity.is_admin:
            return ADMIN_DECISION
        allows, denies = self._rules_in(identity.principals, action, namespace)
        for rule in denies:
            if key is None or rule.covers_key(key):
                return rule.decision
        for rule in allows:
            if rule.all_keys if key is None else rule.covers_key(key):
                return rule.decision
        return DEFAULT_DENY

    def key_filter(self, identity: Identity, action: str, namespace: str) -> KeyFilter:
        """Which keys of ``namespace`` ``identity`` may ``action`` (listings, feeds)."""
        if identity.is_admin:
            return KeyFilter((), (), everything=True)
        allows, denies = self.rules(identity, action, namespace)
        everything = not denies and any(r.all_keys for r in allows)
        return KeyFilter(allows, denies, everything)

    def may_see_namespace(self, identity: Identity, action: str, namespace: str) -> bool:
        """Whether some key of ``namespace`` may be ``action``-ed (a listing shows it)."""
        return not self.key_filter(identity, action, namespace).nothing

    def actions_in(self, identity: Identity, namespace: str) -> dict[str, str]:
        """Each action's scope in ``namespace``: "all" keys, "some" keys or "none"."""
        scopes: dict[str, str] = {}
        for action in ACTIONS:
            f = self.key_filter(identity, action, namespace)
            scopes[action] = "all" if f.everything else "none" if f.nothing else "some"
        return scopes

    def rate_limit(self, identity: Identity) -> RateLimit | None:
        """The rate limit for ``identity``: its user's or token's, else its groups', else
        ``*``'s; the most generous at the most specific level."""
        if not self._limits:  # (no policy sets any: as every request asks, say so at once)
            return None
        return self._limit_for(identity.principals)

    def _rate_limit(self, principals: tuple[str, ...]) -> RateLimit | None:
        levels = ([p for p in principals if p.startswith(("user:", "token:"))],
                  [p for p in principals if p.startswith("group:")], ["*"])
        for level in levels:
            found = [x for p in level for x in self._limits.get(p, ())]
            if found:
                return max(found, key=lambda x: (x.per_second, x.burst))
        return None

    def rule_count(self) -> int:
        return sum(len(p.get("rules", [])) for p in self.policies.values())


def compile_policies(documents: Iterable[tuple[str, Mapping[str, Any]]],
                     version: int = 0) -> PolicySet:
    return PolicySet(dict(documents), version)
