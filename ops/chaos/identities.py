"""The identities of an ``ssot chaos`` run: who its clients are and what each may do.

At set-up, once the servers are healthy, the run's administrator (the bootstrap token)
sets the policy ``chaos`` and makes an API token for each identity but itself:

- ``admin`` (the bootstrap token, group ``admins``): everything, ``locked/…`` keys too;
- ``writer-a``: read, history, write, delete and restore on the run's namespaces, except
  on keys under ``locked/`` (a deny rule: every action);
- ``reader``: read and history on the run's namespaces;
- ``narrow``: write on ``chaos-merge`` alone (it may not even read there).

Each client is given an identity, drawn from the seed (every identity at least once when
there are four clients or more; the rest mostly allowed to write). A client mostly does
what its identity may; now and then (``clients.FORBIDDEN_SHARE`` of its operations) it tries what
it may not: a ``reader`` writing, ``writer-a`` touching ``locked/…``, ``narrow`` writing
in the other namespace, deleting, or reading. The checker proves that none of those
landed and that every refusal a client received is in the access log.

``identities.json`` in the run folder records the policy as the server stored it, each
identity's token record (id, subject, groups, expiry: never the token or its hash) and
which client had which identity. The tokens live only in the runner's memory.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import orjson

from .clients import MERGE_NS, NAMESPACES, READS, STRICT_NS, WRITES, Role

ADMIN, WRITER, READER, NARROW = "admin", "writer-a", "reader", "narrow"
POLICY_NAME = "chaos"
LOCKED_PREFIX = "locked/"
#: Relative weights of the identities given to the clients beyond one of each.
WEIGHTS = {ADMIN: 3, WRITER: 5, READER: 1, NARROW: 1}


_ALL = (*WRITES, *READS)
ROLES = {
    ADMIN: Role(ADMIN, _ALL, NAMESPACES, ("put", "patch", "delete"), locked=True),
    WRITER: Role(WRITER, _ALL, NAMESPACES, ("put", "patch", "delete"),
                 forbidden=("locked",)),
    READER: Role(READER, READS, NAMESPACES, (), forbidden=("write",)),
    NARROW: Role(NARROW, ("create", "put", "merge_patch", "json_patch", "batch"),
                 (MERGE_NS,), ("put", "patch"), forbidden=("elsewhere", "delete", "read")),
}
#: What each identity is granted, in words (for identities.json and the report).
GRANTS = {
    ADMIN: "everything (group admins)",
    WRITER: f"read, history, write, delete, restore on {', '.join(NAMESPACES)}; "
            f"nothing on keys {LOCKED_PREFIX}**",
    READER: f"read, history on {', '.join(NAMESPACES)}",
    NARROW: f"write on {MERGE_NS}",
}


def policy() -> dict[str, Any]:
    """The policy ``chaos``: the grants above as rules (``admin`` needs none)."""
    every = ["read", "history", "write", "delete", "restore"]
    namespaces = list(NAMESPACES)
    return {"description": "ssot chaos: the clients' identities", "rules": [
        {"effect": "allow", "subjects": [f"user:{WRITER}"], "actions": every,
         "namespaces": namespaces, "description": GRANTS[WRITER]},
        {"effect": "deny", "subjects": [f"user:{WRITER}"], "actions": ["*"],
         "namespaces": namespaces, "keys": [f"{LOCKED_PREFIX}**"],
         "description": "writer-a: no locked keys"},
        {"effect": "allow", "subjects": [f"user:{READER}"], "actions": ["read", "history"],
         "namespaces": namespaces, "description": GRANTS[READER]},
        {"effect": "allow", "subjects": [f"user:{NARROW}"], "actions": ["write"],
         "namespaces": [MERGE_NS], "description": GRANTS[NARROW]},
    ]}


def assign(seed: int, clients: int) -> list[str]:
    """Each client's identity: one of each (when there are enough clients), the rest
    drawn by ``WEIGHTS``, in a seeded order. Same seed, same assignment."""
    rng = random.Random(f"identities:{seed}")
    names = list(WEIGHTS)[:clients]
    names += rng.choices(list(WEIGHTS), list(WEIGHTS.values()), k=clients - len(names))
    rng.shuffle(names)
    return names


def locked_keys(keys: list[str]) -> list[str]:
    """The ``locked/…`` keys of a run: one for every sixth ordinary key (at least one)."""
    return [f"{LOCKED_PREFIX}{k}" for k in keys[:max(1, len(keys) // 6)]]


def other_namespace(namespaces: tuple[str, ...]) -> str:
    """A namespace of the run outside ``namespaces``."""
    return next((ns for ns in NAMESPACES if ns not in namespaces), STRICT_NS)


async def make_identities(api_url: str, admin_token: str, folder: Path, duration: float,
                          assignment: list[str]) -> dict[str, str]:
    """Set the policy and make a token for each identity (the admin's is the bootstrap
    token); record them in ``identities.json``; wait until every worker knows them.
    Returns the tokens by identity (kept in memory only)."""
    expires_in = int(max(86_400.0, 2 * duration + 3_600.0))
    tokens = {ADMIN: admin_token}
    identities: dict[str, Any] = {ADMIN: {
        "subject": ADMIN, "groups": ["admins"], "token_id": None, "method": "bootstrap",
        "grants": GRANTS[ADMIN]}}
    async with httpx.AsyncClient(base_url=api_url, timeout=30, headers={
            "Authorization": f"Bearer {admin_token}"}) as http:
        response = await http.put(f"/v1/access/policies/{POLICY_NAME}", json=policy(),
                                  headers={"X-Correlation-Id": "chaos-setup-policy"})
        response.raise_for_status()
        stored = response.json()
        for name in (WRITER, READER, NARROW):
            response = await http.post("/v1/access/tokens", json={
                "subject": name, "groups": [], "expires_in": expires_in,
                "description": f"ssot chaos: {GRANTS[name]}"},
                headers={"X-Correlation-Id": f"chaos-setup-token-{name}"})
            response.raise_for_status()
            record = response.json()
            tokens[name] = record.pop("token")
            identities[name] = {**record, "method": "token", "grants": GRANTS[name]}
    folder.joinpath("identities.json").write_bytes(orjson.dumps({
        "policy_name": POLICY_NAME, "policy": stored["policy"],
        "policy_version": stored["version"], "policy_position": stored["position"],
        "identities": identities,
        "clients": {str(i): name for i, name in enumerate(assignment)},
    }, option=orjson.OPT_INDENT_2))
    await _in_force(api_url, tokens)
    return tokens


async def _in_force(api_url: str, tokens: dict[str, str], timeout: float = 30.0) -> None:
    """Until each token is known on whichever worker answers (each asked on fresh
    connections, several times in a row): a worker reloads ``_access`` within
    ``SSOT_ACCESS_REFRESH_SECONDS``, the policy with the tokens made after it."""
    deadline = asyncio.get_running_loop().time() + timeout
    for name, token in tokens.items():
        good = 0
        while good < 6:
            async with httpx.AsyncClient(base_url=api_url, timeout=10, headers={
                    "Authorization": f"Bearer {token}"}) as http:
                response = await http.get("/v1/access/whoami")
            good = good + 1 if response.status_code == 200 else 0
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"the token of {name} was not in force in {timeout:.0f} s"
                                   f" (last answer {response.status_code})")
            await asyncio.sleep(0.05)
