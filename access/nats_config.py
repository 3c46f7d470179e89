"""The NATS server's ``authorization`` block, rendered from the access policy and the API
tokens (``ssot access nats-config``; ``ssot serve`` keeps its embedded nats-server's copy
current).

One NATS user per live, unexpired token that has a ``nats_hash``: user name = token id,
password = the token (the block holds only its bcrypt hash). What a token may do on NATS
follows what its identity may ``read`` in the ledger:

- a namespace whose every key it may read (``key_filter(...).everything``: an allow rule
  with keys ``**`` and no deny rule) is granted whole: the live subjects
  ``<prefix>.<ns>.>``, consumers of the events stream filtered to them
  (``$JS.API.CONSUMER.CREATE.<stream>.<consumer>.<prefix>.<ns>.>``: the server checks that
  the filter in the request is the one in the subject), and reading the namespace's KV
  bucket ``<kv_bucket_prefix><ns>`` (its stream ``KV_<bucket>``);
- a namespace it may read only some keys of is not granted at all (NATS permissions
  cannot follow key globs); a namespace a deny rule covers is also denied explicitly
  (``subscribe.deny``);
- a member of ``admins`` may subscribe to all of ``<prefix>.>`` and read the events stream
  whole (its info and messages by sequence); anybody else may not, as those would show
  other namespaces' keys.

Namespaces are NATS subject tokens, and NATS wildcards match whole tokens only: a glob
like ``team-*`` cannot be written as a NATS subject. Globs are therefore expanded against
the namespaces given (those that exist when rendering), together with every namespace a
rule names literally; a namespace made later is granted at the next rendering.

Publishing: a token may publish only request and reply subjects (``_INBOX.>``, the
JetStream API requests above, acks); ``<prefix>.>`` and ``$KV.>`` are denied outright:
only the service user (the broadcaster, the KV mirror) writes what the ledger publishes.
The service user, when given, has no restriction.

The output is deterministic (sorted; no timestamps), so a caller can compare two
renderings to tell whether anything changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from nexus_ssot.ledger.subjects import encode_token, namespace_filter

from .identity import Identity
from .policy import PolicySet
from .tokens import TokenRecord

INBOX = "_INBOX.>"
_READ = "read"


def _literal_namespaces(policies: PolicySet) -> set[str]:
    """Every namespace a rule names without a wildcard."""
    return {pattern for document in policies.policies.values()
            for rule in document.get("rules", ())
            for pattern in rule.get("namespaces", ()) if "*" not in pattern}


def readable_namespaces(policies: PolicySet, identity: Identity,
                        namespaces: Iterable[str]) -> tuple[list[str], list[str]]:
    """(namespaces ``identity`` may read whole, namespaces a deny rule keeps it from
    reading), among ``namespaces`` and those the rules name literally."""
    allowed, denied = [], []
    for namespace in sorted(set(namespaces) | _literal_namespaces(policies)):
        if policies.key_filter(identity, _READ, namespace).everything:
            allowed.append(namespace)
        elif policies.rules(identity, _READ, namespace)[1]:
            denied.append(namespace)
    return allowed, denied


def _bucket_stream_reads(bucket: str) -> list[str]:
    """The JetStream API requests that read a KV bucket (get, keys, watch), and no more."""
    stream = f"KV_{bucket}"
    return [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.*", f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
            f"$JS.API.CONSUMER.DELETE.{stream}.*", f"$JS.ACK.{stream}.>",
            f"$JS.FC.{stream}.>"]


def token_permissions(policies: PolicySet, token: TokenRecord, namespaces: Iterable[str], *,
                      subject_prefix: str, stream: str, kv_bucket_prefix: str
                      ) -> dict[str, Any]:
    """The ``permissions`` of ``token``'s NATS user."""
    identity = token.identity()
    allowed, denied = readable_namespaces(policies, identity, namespaces)
    consumers = [f"$JS.API.CONSUMER.INFO.{stream}.*", f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
                 f"$JS.API.CONSUMER.DELETE.{stream}.*", f"$JS.ACK.{stream}.>"]
    subscribe = [INBOX]
    if identity.is_admin:
        everything = f"{subject_prefix}.>"
        subscribe.append(everything)
        consumers += [f"$JS.API.CONSUMER.CREATE.{stream}.*.{everything}",
                      f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.MSG.GET.{stream}",
                      f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>"]
    for namespace in allowed:
        live = namespace_filter(subject_prefix, namespace)
        subscribe.append(live)
        consumers.append(f"$JS.API.CONSUMER.CREATE.{stream}.*.{live}")
        consumers += _bucket_stream_reads(kv_bucket_prefix + encode_token(namespace))
    permissions: dict[str, Any] = {
        "publish": {"allow": [INBOX, *sorted(set(consumers))],
                    "deny": [f"{subject_prefix}.>", "$KV.>"]},
        "subscribe": {"allow": sorted(set(subscribe))},
    }
    if denied:
        permissions["subscribe"]["deny"] = [namespace_filter(subject_prefix, ns)
                                            for ns in denied]
    return permissions


def service_user_entry(name: str, password_hash: str) -> dict[str, Any]:
    """The service user: every subject, both ways."""
    return {"user": name, "password": password_hash}


def authorization(users: list[dict[str, Any]]) -> str:
    """A nats-server ``authorization`` block of ``users`` (JSON values, which the
    nats-server configuration syntax accepts; quoted, so ``$`` is never a variable)."""
    listed = json.dumps(users, indent=2).replace("\n", "\n  ")
    return ("# Rendered from the ledger's access policy and API tokens "
            "(ssot access nats-config).\n"
            f"authorization {{\n  users = {listed}\n}}\n")


def render(policies: PolicySet, tokens: Iterable[TokenRecord], *, subject_prefix: str,
           stream: str, kv_bucket_prefix: str, service_user: tuple[str, str] | None,
           namespaces: Iterable[str] = (), now: datetime | None = None) -> str:
    """The ``authorization { users = [...] }`` block for ``tokens`` under ``policies``
    (``namespaces``: the existing ones, to expand namespace globs against), with the
    service user ``(name, bcrypt hash)`` first when given."""
    now = now or datetime.now(UTC)
    names = sorted(set(namespaces))
    users = [] if service_user is None else [service_user_entry(*service_user)]
    for token in sorted(tokens, key=lambda t: t.id):
        if token.nats_hash is None or token.expired(now):
            continue
        users.append({"user": token.id, "password": token.nats_hash,
                      "permissions": token_permissions(
                          policies, token, names, subject_prefix=subject_prefix,
                          stream=stream, kv_bucket_prefix=kv_bucket_prefix)})
    return authorization(users)
