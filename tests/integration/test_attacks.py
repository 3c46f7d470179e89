"""The security table: attacks on authentication, the policy and what refusals tell, each
sent as raw HTTP to a server with OIDC and a trusted proxy (tests/integration/attack_kit.py
builds it and its tenants). Each case asserts the status, the problem ``code``, that no
event was written, and the access log's record of it (found by the X-Correlation-Id the
case sends) — or, for what the log does not record (a 400, a filtered listing), that it
has none. Then what a table cannot hold: a policy narrowed under an open stream, rate
limits, a flood of bad requests, and that no secret reaches the logs or the store."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.attack_kit import (
    Answer,
    Captured,
    World,
    bearer,
    revoke,
    send_raw,
    wait_until_expired,
    world,
)
from tests.integration.conftest import ADMIN_TOKEN, RunningServer, event_count, make_settings

Check = Callable[[World, Answer], bool]


@dataclass(frozen=True)
class Attack:
    """One attack: what is sent (templates filled from ``World.vars``), what must come
    back, and what the access log must say (``log``: its reason; None: no record)."""

    name: str
    method: str
    path: str
    status: int
    code: str | None
    log: str | None
    auth: str | None = "Bearer {alice}"
    headers: tuple[tuple[str, str], ...] = ()
    body: Any = None
    content_type: str = "application/json"
    #: Whose record (a ``vars`` name); a 401's has none.
    who: str = "alice_sub"
    prepare: Callable[[World], None] | None = None
    check: Check | None = None
    #: Events a control case (not an attack) writes.
    writes: int = 0


def keys_of(answer: Answer) -> list[str]:
    return [i.get("key") or i.get("subject") for i in answer.json()["items"]]


def shows_no_secret(w: World, answer: Answer) -> bool:
    return "secrets/" not in answer.text and "secret" not in json.dumps(keys_of(answer))


def empty(w: World, answer: Answer) -> bool:
    return answer.json()["items"] == []


def names_action(action: str) -> Check:
    return lambda w, a: a.json()["action"] == action and action in a.json()["detail"]


def operation(index: int, action: str | None = None) -> Check:
    return lambda w, a: a.json()["operation"] == index and (
        action is None or a.json()["action"] == action)


def proxied_write(w: World, answer: Answer) -> bool:
    history = w.admin.get(f"/v1/namespaces/{w.vars['ns']}/entries/services/proxied/history")
    return bool(history.json()["items"][0]["actor"] == f"enduser-{w.vars['sfx']}")


def no_admins(w: World, answer: Answer) -> bool:
    me = answer.json()
    return me["groups"] == [] and "group:admins" not in me["principals"]


def own_tokens_only(w: World, answer: Answer) -> bool:
    ids = {t["id"] for t in answer.json()["items"]}
    return w.vars["alice_id"] in ids and w.vars["bob_id"] not in ids


def counts_hidden(w: World, answer: Answer) -> bool:
    return bool(answer.json()["items"] == [{"namespace": w.vars["ns"], "entries": None,
                                            "deleted": None, "last_position": None,
                                            "last_recorded_at": None}])


A = Attack
U, NF, NSNF, FB = "unauthenticated", "entry_not_found", "namespace_not_found", "forbidden"
E = "/v1/namespaces/{ns}/entries/"
SA = E + "services/a"
GRANT_ALL = {"rules": [{"effect": "allow", "subjects": ["*"], "actions": ["*"],
                        "namespaces": ["*"]}]}
GW = (("X-Actor", "enduser-{sfx}"),)

ATTACKS = [
    # --- who is calling: API tokens and the Authorization header ------------------------
    A("no token", "GET", SA, 401, U, "missing", auth=None),
    A("garbage token", "GET", SA, 401, U, "malformed", auth="Bearer garbage!!"),
    A("Basic scheme", "GET", SA, 401, U, "unsupported_scheme",
      auth="Basic YWxpY2U6cGFzc3dvcmQ="),
    A("Digest scheme", "GET", SA, 401, U, "unsupported_scheme",
      auth='Digest username="admin", realm="nexus-ssot", nonce="n", uri="/", response="r"'),
    A("control: lower-case scheme (RFC 9110 11.1: case-insensitive)", "GET", SA, 200, None,
      None, auth="bearer {alice}"),
    A("scheme only, no token", "GET", SA, 401, U, "malformed", auth="Bearer"),
    A("two Authorization headers, both valid", "GET", SA, 401, U, "duplicate", auth=None,
      headers=(("Authorization", "Bearer {alice}"), ("Authorization", "Bearer {alice}"))),
    A("a valid token behind a second header", "GET", SA, 401, U, "duplicate", auth=None,
      headers=(("Authorization", "Bearer x"), ("Authorization", "Bearer {alice}"))),
    A("well-formed token never issued", "GET", SA, 401, U, "unknown_token",
      auth="Bearer {forged}"),
    A("right id, wrong secret", "GET", SA, 401, U, "unknown_token",
      auth="Bearer {wrong_secret}"),
    A("one token's id with another's secret", "GET", SA, 401, U, "unknown_token",
      auth="Bearer {swapped}"),
    A("expired API token", "GET", SA, 401, U, "expired", auth="Bearer {expiring}",
      prepare=wait_until_expired),
    A("revoked token, right after the revocation", "GET", SA, 401, U, "revoked",
      auth="Bearer {revokee}", prepare=revoke),
    A("token with a character appended", "GET", SA, 401, U, "malformed",
      auth="Bearer {alice}x"),
    A("two tokens in one header", "GET", SA, 401, U, "malformed",
      auth="Bearer {alice}, Bearer {bob}"),
    A("scheme given twice", "GET", SA, 401, U, "malformed", auth="Bearer Bearer {alice}"),
    A("token in the query string", "GET", SA + "?access_token={alice}", 401, U, "missing",
      auth=None),
    A("oversized Authorization header", "GET", SA, 401, U, "malformed", auth="Bearer {huge}"),
    A("CR LF in the bearer smuggles X-Actor", "GET", SA, 401, U, "malformed",
      auth="Bearer nothing\r\nX-Actor: admin"),
    A("bare LF in the bearer", "GET", SA, 400, None, None, auth="Bearer {alice}\nX-Actor: x"),
    A("NUL in the bearer", "GET", SA, 400, None, None, auth="Bearer {alice}\x00"),
    A("a byte beyond ASCII in the token", "GET", SA, 401, U, "malformed",
      auth="Bearer {alice}\xe9"),
    # --- X-Actor: only a trusted proxy may name an end user -----------------------------
    A("X-Actor from a caller that is no proxy", "PUT", SA, 403, "untrusted_actor_header",
      "untrusted_proxy", headers=(("X-Actor", "admin"),), body={"v": 1}),
    A("X-Actor from a JWT caller", "GET", SA, 403, "untrusted_actor_header",
      "untrusted_proxy", auth="Bearer {jwt_ok}", headers=(("X-Actor", "admin"),),
      who="jwt_sub"),
    A("X-Actor without a token", "GET", SA, 401, U, "missing", auth=None,
      headers=(("X-Actor", "admin"),)),
    A("CR LF in X-Actor adds a second one", "PUT", SA, 400, "invalid_actor", None,
      auth="Bearer {gateway}", headers=(("X-Actor", "eve\r\nX-Actor: admin"),),
      body={"v": 1}),
    A("bare CR in X-Actor", "PUT", SA, 400, None, None, auth="Bearer {gateway}",
      headers=(("X-Actor", "eve\rX-Reason: forged"),), body={"v": 1}),
    A("control character in X-Actor", "PUT", SA, 400, None, None, auth="Bearer {gateway}",
      headers=(("X-Actor", "eve\x01"),), body={"v": 1}),
    A("X-Actor of 300 characters", "PUT", SA, 400, "invalid_actor", None,
      auth="Bearer {gateway}", headers=(("X-Actor", "e" * 300),), body={"v": 1}),
    A("control: a trusted proxy writes for its end user", "PUT", E + "services/proxied",
      201, None, None, auth="Bearer {gateway}", headers=GW, body={"v": 1},
      check=proxied_write, writes=1),
    A("the proxy acting for admin gains nothing", "PUT", E + "secrets/x", 404, NF, "policy",
      auth="Bearer {gateway}", headers=(("X-Actor", "admin"),), body={"v": 1},
      who="gateway_sub"),
    A("the proxy mints a token for itself while acting", "POST", "/v1/access/tokens", 404,
      NF, "policy", auth="Bearer {gateway}", headers=GW, who="gateway_sub",
      body={"subject": "{gateway_sub}", "expires_in": 60}),
    # --- OIDC JWTs ---------------------------------------------------------------------
    A("control: a valid JWT", "GET", SA, 200, None, None, auth="Bearer {jwt_ok}"),
    A("control: a JWT under a mixed-case scheme", "GET", SA, 200, None, None,
      auth="bEARER {jwt_ok}"),
    A("JWT expired", "GET", SA, 401, U, "expired", auth="Bearer {jwt_expired}"),
    A("JWT not valid yet (nbf)", "GET", SA, 401, U, "not_yet_valid", auth="Bearer {jwt_nbf}"),
    A("JWT issued in the future (iat)", "GET", SA, 401, U, "not_yet_valid",
      auth="Bearer {jwt_iat}"),
    A("JWT of another issuer", "GET", SA, 401, U, "wrong_issuer", auth="Bearer {jwt_iss}"),
    A("JWT for another audience", "GET", SA, 401, U, "wrong_audience",
      auth="Bearer {jwt_aud}"),
    A("JWT alg none", "GET", SA, 401, U, "algorithm_not_allowed", auth="Bearer {jwt_none}"),
    A("JWT HS256 keyed with the RSA public key", "GET", SA, 401, U, "algorithm_not_allowed",
      auth="Bearer {jwt_hs256}"),
    A("JWT with an unknown kid", "GET", SA, 401, U, "unknown_key", auth="Bearer {jwt_kid}"),
    A("JWT payload swapped for admin's", "GET", SA, 401, U, "bad_signature",
      auth="Bearer {jwt_tampered}"),
    A("JWT without exp", "GET", SA, 401, U, "malformed", auth="Bearer {jwt_noexp}"),
    A("JWT whose exp is not a time", "GET", SA, 401, U, "malformed",
      auth="Bearer {jwt_expstr}"),
    A("JWT without a subject", "GET", SA, 401, U, "malformed", auth="Bearer {jwt_nosub}"),
    A("JWT signed by another key under the known kid", "GET", SA, 401, U, "bad_signature",
      auth="Bearer {jwt_otherkey}"),
    A("JWT with a crit header", "GET", SA, 401, U, "malformed", auth="Bearer {jwt_crit}"),
    A("JWT carrying its own key (jwk header)", "GET", SA, 401, U, "unknown_key",
      auth="Bearer {jwt_jwk}"),
    A("JWT ES256 under the RSA key's kid", "GET", SA, 401, U, "unknown_key",
      auth="Bearer {jwt_es_on_rsa}"),
    A("three dot-separated parts of garbage", "GET", SA, 401, U, "malformed",
      auth="Bearer {jwt_dots}"),
    A("JWT group admins reads a hidden key", "GET", E + "secrets/x", 404, NF, "policy",
      auth="Bearer {jwt_admins}", who="jwt_sub"),
    A("JWT group admins is no admin (whoami)", "GET", "/v1/access/whoami", 200, None, None,
      auth="Bearer {jwt_admins}", check=no_admins),
    A("JWT group admins sets a policy", "PUT", "/v1/access/policies/{p}-mine", 404, NF,
      "policy", auth="Bearer {jwt_admins}", who="jwt_sub", body=GRANT_ALL),
    A("JWT group admins mints an admins token", "POST", "/v1/access/tokens", 404, NF,
      "policy", auth="Bearer {jwt_admins}", who="jwt_sub",
      body={"subject": "{jwt_sub}", "groups": ["admins"], "expires_in": 60}),
    A("JWT whose subject is admin", "GET", E + "secrets/x", 404, NF, "policy",
      auth="Bearer {jwt_named_admin}", who="admin_sub"),
    # --- path tricks -------------------------------------------------------------------
    A("%2e%2e in the key", "GET", E + "services/%2e%2e/secrets/x", 400, "invalid_key", None),
    A(".. segments", "GET", E + "services/../secrets/x", 400, "invalid_key", None),
    A("double encoding %252e%252e", "GET", E + "services/%252e%252e/secrets/x", 400,
      "invalid_key", None),
    A("a . segment", "GET", E + "services/./a", 400, "invalid_key", None),
    A("PUT through %2e%2e", "PUT", E + "services/%2e%2e/secrets/x", 400, "invalid_key",
      None, body={"v": 666}),
    A("upper-case namespace", "GET", "/v1/namespaces/{NS}/entries/services/a", 404, NF,
      "policy"),
    A("trailing slash on an allowed key", "GET", SA + "/", 400, "invalid_key", None),
    A("trailing slash on a hidden key", "GET", E + "secrets/x/", 404, NF, "policy"),
    A("encoded / in a hidden key", "GET", E + "secrets%2Fx", 404, NF, "policy"),
    A("control: encoded / in an allowed key is that key", "GET", E + "services%2Fa", 200,
      None, None, check=lambda w, a: a.json()["key"] == "services/a"),
    A("NUL in the key", "GET", SA + "%00", 400, "invalid_key", None),
    A("upper-case key prefix", "GET", E + "SERVICES/a", 404, NF, "policy"),
    A("absolute-form request target", "GET", "http://127.0.0.1" + E + "secrets/x", 404, NF,
      "policy"),
    A("HEAD tells a hidden key from a shown one no better", "HEAD", E + "secrets/x", 405,
      None, None),
    A("method override header", "POST", E + "secrets/x", 405, "method_not_allowed", None,
      headers=(("X-HTTP-Method-Override", "DELETE"),)),
    A("a public path prefix opens nothing", "GET", "/v1/health/../namespaces/{ns}/entries/"
      "secrets/x", 401, U, "missing", auth=None),
    A("the OpenAPI document's path opens nothing", "GET", "/openapi.json/../v1/namespaces",
      401, U, "missing", auth=None),
    A("very long key under an allowed prefix", "GET", E + "services/" + "a" * 600, 400,
      "invalid_key", None),
    A("very long hidden key", "PUT", E + "secrets/" + "a" * 600, 404, NF, "policy",
      body={"v": 1}),
    A("a policy written through the entries route", "PUT",
      "/v1/namespaces/_access/entries/policies/{p}-mine", 404, NF, "policy", body=GRANT_ALL),
    A("a token record read through the entries route", "GET",
      "/v1/namespaces/_access/entries/tokens/{alice_id}", 404, NF, "policy"),
    A("settings written through the entries route", "PUT",
      "/v1/namespaces/_namespaces/entries/{ns}", 404, NF, "policy", body={}),
    A("history of a hidden key", "GET", E + "secrets/x/history", 404, NF, "policy"),
    A("diff of a hidden key", "GET", E + "secrets/x/diff?from_version=1&to_version=2", 404,
      NF, "policy"),
    A("proof of a hidden key", "GET", E + "secrets/x/proof", 404, NF, "policy"),
    A("a past version of a hidden key", "GET", E + "secrets/x?version=1", 404, NF, "policy"),
    # --- the policy on entries ---------------------------------------------------------
    A("read a hidden key", "GET", E + "secrets/x", 404, NF, "policy"),
    A("write a hidden key", "PUT", E + "secrets/x", 404, NF, "policy", body={"v": 666}),
    A("patch a hidden key", "PATCH", E + "secrets/x", 404, NF, "policy", body={"v": 666},
      content_type="application/merge-patch+json"),
    A("delete a hidden key", "DELETE", E + "secrets/x", 404, NF, "policy"),
    A("write what it may only read", "PUT", E + "public/readme", 403, FB, "policy",
      body={"v": 666}, check=names_action("write")),
    A("delete what it may not delete", "DELETE", SA, 403, FB, "policy",
      check=names_action("delete")),
    A("revert what it may not restore", "POST", E + "public/readme/revert", 403, FB, "policy",
      body={"to_version": 1}, check=names_action("restore")),
    A("an explicit deny beats the allow", "PUT", E + "services/locked/x", 403, FB, "policy",
      body={"v": 1}, check=names_action("write")),
    A("a key of another namespace", "GET", "/v1/namespaces/{other}/entries/k", 404, NF,
      "policy"),
    A("a namespace's settings", "PUT", "/v1/namespaces/{ns}", 403, FB, "policy", body={},
      check=names_action("admin")),
    A("an unseen namespace's settings", "PUT", "/v1/namespaces/{other}", 404, NSNF, "policy",
      body={}),
    A("a namespace's stats", "GET", "/v1/namespaces/{ns}/stats", 404, NSNF, "policy"),
    A("an unseen namespace", "GET", "/v1/namespaces/{other}", 404, NSNF, "policy"),
    A("an unseen namespace that never was answers the same", "GET",
      "/v1/namespaces/{other}x", 404, NSNF, "policy"),
    A("the audit trail of an unseen namespace", "GET", "/v1/audit?namespace={other}", 404,
      NSNF, "policy"),
    A("the audit trail of an unseen namespace that never was", "GET",
      "/v1/audit?namespace={other}x", 404, NSNF, "policy"),
    A("an unseen namespace's settings history", "GET",
      "/v1/namespaces/{other}/settings/history", 404, NSNF, "policy"),
    A("batch smuggles a hidden key", "POST", "/v1/batch", 404, NF, "policy", check=operation(1),
      body={"operations": [{"op": "put", "namespace": "{ns}", "key": "services/c",
                            "document": {}},
                           {"op": "put", "namespace": "{ns}", "key": "secrets/x",
                            "document": {"v": 666}}]}),
    A("batch smuggles a key it may only read", "POST", "/v1/batch", 403, FB, "policy",
      check=operation(1, "write"),
      body={"operations": [{"op": "put", "namespace": "{ns}", "key": "services/c",
                            "document": {}},
                           {"op": "put", "namespace": "{ns}", "key": "public/readme",
                            "document": {}}]}),
    A("batch smuggles a delete", "POST", "/v1/batch", 403, FB, "policy",
      check=operation(2, "delete"),
      body={"operations": [{"op": "put", "namespace": "{ns}", "key": "services/c",
                            "document": {}},
                           {"op": "put", "namespace": "{ns}", "key": "services/d",
                            "document": {}},
                           {"op": "delete", "namespace": "{ns}", "key": "services/a"}]}),
    A("batch hides a hidden key behind a duplicate member", "POST", "/v1/batch", 400,
      "duplicate_member", None, body=lambda v: (
          '{"operations": [{"op": "put", "namespace": "' + v["ns"] + '", "key": '
          '"services/c", "key": "secrets/x", "document": {}}]}').encode()),
    A("batch writes the access namespace", "POST", "/v1/batch", 400, "invalid_namespace",
      None, check=operation(1),
      body={"operations": [{"op": "put", "namespace": "{ns}", "key": "services/c",
                            "document": {}},
                           {"op": "put", "namespace": "_access", "key": "policies/x",
                            "document": GRANT_ALL}]}),
    A("restore whose plan touches a hidden key", "POST", "/v1/namespaces/{ns}/restore", 403,
      FB, "policy", check=lambda w, a: "secret" not in a.text,
      body=lambda v: {"position": int(v["position"]), "reason": "undo"}),
    A("its dry run", "POST", "/v1/namespaces/{ns}/restore", 403, FB, "policy",
      check=lambda w, a: "secret" not in a.text,
      body=lambda v: {"position": int(v["position"]), "dry_run": True}),
    A("restore an unseen namespace", "POST", "/v1/namespaces/{other}/restore", 404, NSNF,
      "policy", body={"position": 0, "reason": "undo"}),
    # --- what listings, counts, cursors and feeds tell ----------------------------------
    A("listing a namespace with hidden keys", "GET", "/v1/namespaces/{ns}/entries", 200,
      None, None, check=shows_no_secret),
    A("listing the hidden prefix", "GET", "/v1/namespaces/{ns}/entries?prefix=secrets/", 200,
      None, None, check=empty),
    A("a crafted cursor on a hidden key", "GET",
      "/v1/namespaces/{ns}/entries?cursor={cursor_hidden}", 200, None, None,
      check=lambda w, a: shows_no_secret(w, a) and keys_of(a)[0] == "services/a"),
    A("a crafted cursor inside the hidden prefix", "GET",
      "/v1/namespaces/{ns}/entries?prefix=secrets/&cursor={cursor_prefix}", 200, None, None,
      check=empty),
    A("the namespaces' counts", "GET", "/v1/namespaces?limit=1000", 200, None, None,
      check=counts_hidden),
    A("a namespace's counts", "GET", "/v1/namespaces/{ns}", 200, None, None,
      check=lambda w, a: a.json()["entries"] is None and a.json()["last_position"] is None),
    A("the event feed", "GET", "/v1/events?namespace={ns}&limit=1000", 200, None, None,
      check=shows_no_secret),
    A("the event feed of a hidden key", "GET", "/v1/events?namespace={ns}&key=secrets/x",
      200, None, None, check=empty),
    A("the event feed of an unseen namespace", "GET", "/v1/events?namespace={other}", 200,
      None, None, check=empty),
    A("the audit trail", "GET", "/v1/audit?namespace={ns}&limit=1000", 200, None, None,
      check=shows_no_secret),
    A("the event feed of every namespace", "GET", "/v1/events?after={position}", 200, None,
      None, check=lambda w, a: shows_no_secret(w, a) and "_access" not in a.text),
    A("the audit trail of every namespace, by a crafted cursor", "GET",
      "/v1/audit?cursor={cursor_audit}", 200, None, None,
      check=lambda w, a: shows_no_secret(w, a) and "_access" not in a.text),
    A("the audit trail as CSV", "GET", "/v1/audit?namespace={ns}", 200, None, None,
      headers=(("Accept", "text/csv"),),
      check=lambda w, a: "secret" not in a.text and "services/a" in a.text),
    # --- the access surface: policies, tokens, the log, operations ---------------------
    A("a policy granting itself everything", "PUT", "/v1/access/policies/{p}-mine", 404, NF,
      "policy", body=GRANT_ALL),
    A("rewrite the policy that binds it", "PUT", "/v1/access/policies/{p}", 404, NF,
      "policy", body=GRANT_ALL),
    A("delete the policy that binds it", "DELETE", "/v1/access/policies/{p}", 404, NF,
      "policy"),
    A("the policies in force", "GET", "/v1/access/policies", 200, None, None, check=empty),
    A("read a policy", "GET", "/v1/access/policies/{p}", 404, NF, "policy"),
    A("a policy's history", "GET", "/v1/access/policies/{p}/history", 404, NF, "policy"),
    A("a token for another subject", "POST", "/v1/access/tokens", 404, NF, "policy",
      body={"subject": "{bob_sub}", "expires_in": 60}),
    A("a token with more groups", "POST", "/v1/access/tokens", 404, NF, "policy",
      body={"subject": "{alice_sub}", "groups": ["admins"], "expires_in": 60}),
    A("a token without expiry", "POST", "/v1/access/tokens", 404, NF, "policy",
      body={"subject": "{alice_sub}", "expires_in": None}),
    A("a token for longer than 90 days", "POST", "/v1/access/tokens", 404, NF, "policy",
      body={"subject": "{alice_sub}", "expires_in": 91 * 86400}),
    A("revoke someone else's token", "DELETE", "/v1/access/tokens/{bob_id}", 404,
      "token_not_found", "policy", check=lambda w, a: a.json()["detail"] == (
          f"token {w.vars['bob_id']} does not exist (or was revoked)")),
    A("control: revoke a token that does not exist", "DELETE",
      "/v1/access/tokens/{forged_id}", 404, "token_not_found", None),
    A("list the tokens", "GET", "/v1/access/tokens", 200, None, None, check=own_tokens_only),
    A("read the access log", "GET", "/v1/audit/access", 404, NSNF, "policy"),
    A("explain another subject", "GET", "/v1/access/explain?action=read&namespace={ns}"
      "&key=secrets/x&subject={bob_sub}", 404, NSNF, "policy"),
    A("explain with borrowed groups", "GET", "/v1/access/explain?action=read&namespace={ns}"
      "&key=secrets/x&groups=admins", 404, NSNF, "policy"),
    A("verify the store", "GET", "/v1/integrity/verify", 404, NSNF, "policy"),
    A("check consistency", "GET", "/v1/health/consistency", 404, NSNF, "policy"),
    A("read the digests", "GET", "/v1/integrity/digests", 404, NSNF, "policy"),
]


@pytest.fixture(scope="module")
def captured() -> Iterator[Captured]:
    handler = Captured()
    ours = logging.getLogger("nexus_ssot")
    level = ours.level
    ours.setLevel(logging.DEBUG)
    handler.attach()
    yield handler
    ours.setLevel(level)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).removeHandler(handler)


@pytest.fixture(scope="module")
def w(database_url: str, tmp_path_factory: pytest.TempPathFactory,
      captured: Captured) -> Iterator[World]:
    with world(database_url, tmp_path_factory.mktemp("attacks")) as built:
        captured.attach()
        yield built


def send(w: World, attack: Attack, cid: str) -> Answer:
    headers = [("X-Correlation-Id", cid)]
    if attack.auth is not None:
        headers.append(("Authorization", w.fill(attack.auth)))
    headers += [(name, w.fill(value)) for name, value in attack.headers]
    body = b""
    if attack.body is not None:
        document = attack.body(w.vars) if callable(attack.body) else w.fill(attack.body)
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        headers.append(("Content-Type", attack.content_type))
    return send_raw(w.port, attack.method, w.fill(attack.path), headers, body)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_attack(w: World, db: psycopg.Connection[tuple[object, ...]], attack: Attack) -> None:
    if attack.prepare is not None:
        attack.prepare(w)
    before = event_count(db)
    cid = f"attack-{secrets.token_hex(8)}"
    answer = send(w, attack, cid)
    assert answer.status == attack.status, answer.text
    problem = answer.problem
    assert (problem or {}).get("code") == attack.code, answer.text
    if attack.code is not None:
        assert problem is not None and problem["correlation_id"] == cid
    if attack.status == 401:
        assert (answer.header("www-authenticate") or "").startswith("Bearer")
    assert event_count(db) == before + attack.writes, "the event log changed"
    if attack.check is not None:
        assert attack.check(w, answer), answer.text
    if attack.log is None:
        w.sentinel(cid + "-after")  # recorded after anything this request would have made
        assert cid not in w.log.by_id, w.log.by_id[cid]
        return
    [record] = w.log.wait_for(cid)
    assert (record["decision"], record["status"], record["reason"]) == (
        "deny", attack.status, attack.log), record
    subject = None if attack.status == 401 else w.vars[attack.who]
    assert record["subject"] == subject, record
    assert (record["auth_method"] is None) == (attack.status == 401), record
    assert record["source"] == "127.0.0.1"


def test_a_policy_narrowed_under_an_open_stream_stops_its_events(w: World) -> None:
    v = w.vars
    name, subject = f"{v['p']}-w", f"watcher-{v['sfx']}"
    token_id, token = w.token(subject)
    reader = {"effect": "allow", "subjects": [f"user:{subject}"], "actions": ["read"]}
    mine = {**reader, "namespaces": [v["ns"]], "keys": ["services/**"]}
    w.policy(name, mine, {**reader, "namespaces": [v["other"]]})
    seen: list[tuple[str, str]] = []
    opened, ended = threading.Event(), threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=w.server.url, timeout=30, headers=dict(bearer(token))) as c, \
                c.stream("GET", "/v1/events/stream") as r:
            for line in r.iter_lines():
                opened.set()
                if line.startswith("data:"):
                    data = json.loads(line[5:])["data"]
                    seen.append((data["namespace"], data["key"]))
        ended.set()

    def until_seen(event: tuple[str, str]) -> None:
        deadline = time.monotonic() + 30
        while event not in seen:
            assert time.monotonic() < deadline, f"{event} never came: {seen}"
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert opened.wait(30)
        w.put(v["other"], "before", {"v": 1})
        until_seen((v["other"], "before"))
        w.policy(name, mine)  # narrowed: the other namespace is hidden from now on
        w.put(v["other"], "after", {"v": 1})
        w.put(v["ns"], "services/after", {"v": 1})
        until_seen((v["ns"], "services/after"))
        assert (v["other"], "after") not in seen
    finally:  # revoked, the stream ends
        assert w.admin.delete(f"/v1/access/tokens/{token_id}").status_code == 200
        w.admin.delete(f"/v1/access/policies/{name}")
    assert ended.wait(30), "the stream of a revoked token did not end"


def test_rate_limits_answer_429_with_the_headers_and_write_nothing(
        w: World, database_url: str, db: psycopg.Connection[tuple[object, ...]],
        captured: Captured) -> None:
    v = w.vars
    subject, policy = f"limited-{v['sfx']}", f"{v['p']}-rl"
    _, token = w.token(subject)  # made before the limited server starts: it loads them
    w.policy(policy, {"effect": "allow", "subjects": [f"user:{subject}"],
                      "actions": ["read", "write"], "namespaces": [v["ns"]],
                      "keys": ["services/**"]})
    entry = f"/v1/namespaces/{v['ns']}/entries/services/limited"
    settings = make_settings(database_url, rate_limit_per_second=0.001, rate_limit_burst=2,
                             rate_limit_anonymous_per_second=0.001,
                             rate_limit_anonymous_burst=3)
    user_cid, anon_cid = f"limited-{secrets.token_hex(6)}", f"guess-{secrets.token_hex(6)}"
    with RunningServer(settings) as server:
        captured.attach()
        port = server.settings.http_port
        for remaining in ("1", "0"):
            answer = send_raw(port, "GET", "/v1/access/whoami", bearer(token))
            assert answer.status == 200 and answer.header("ratelimit-remaining") == remaining
        before = event_count(db)
        answer = send_raw(port, "PUT", entry, [*bearer(token, user_cid),
                                              ("Content-Type", "application/json")], b"{}")
        assert answer.status == 429 and answer.problem is not None
        assert answer.problem["code"] == "rate_limited"
        assert int(answer.header("retry-after") or 0) >= 1
        assert [answer.header(f"ratelimit-{f}") for f in ("limit", "remaining", "policy")] == [
            "2", "0", "2;w=2000"]
        assert event_count(db) == before
        for _ in range(3):  # guessing tokens: the address's burst, then 429
            assert send_raw(port, "GET", entry, bearer(v["forged"])).status == 401
        answer = send_raw(port, "GET", entry, bearer(v["forged"], anon_cid))
        assert answer.status == 429 and answer.problem is not None
        assert answer.problem["code"] == "rate_limited"
        assert int(answer.header("retry-after") or 0) >= 1
        # the address's flood does not lock out a caller with a token of its own
        assert send_raw(port, "GET", "/v1/access/whoami", bearer(ADMIN_TOKEN)).status == 200
    for cid, who in ((user_cid, subject), (anon_cid, None)):
        [record] = w.log.wait_for(cid)
        assert (record["status"], record["reason"], record["subject"]) == (
            429, "rate_limited", who)
    assert w.admin.delete(f"/v1/access/policies/{policy}").status_code == 200


def test_a_flood_of_bad_requests_is_each_recorded_or_counted_in_a_summary(
        w: World, database_url: str, db: psycopg.Connection[tuple[object, ...]],
        captured: Captured) -> None:
    n = 30
    w.log.read_new()
    start, before = len(w.log.rows), event_count(db)
    flood = [f"flood-{secrets.token_hex(6)}" for _ in range(n)]
    aside = f"aside-{secrets.token_hex(6)}"
    settings = make_settings(database_url, access_log_max_per_second=1,
                             rate_limit_anonymous_per_second=0)
    with RunningServer(settings) as server:
        captured.attach()
        for cid in flood:
            answer = send_raw(server.settings.http_port, "GET", "/v1/namespaces",
                              bearer(w.vars["forged"], cid))
            assert answer.status == 401
        # another reason has a bound of its own: it is recorded whatever the flood
        assert send_raw(server.settings.http_port, "GET", "/v1/namespaces",
                        [("X-Correlation-Id", aside)]).status == 401
    # the server has stopped: its access log appended all it held, summaries included
    w.log.read_new()
    new = w.log.rows[start:]
    kept = [r for r in new if r.get("correlation_id") in flood]
    summaries = [r for r in new if r.get("summary") and r["reason"] == "unknown_token"]
    assert all(r["reason"] == "unknown_token" and r["status"] == 401 for r in kept)
    assert all(s["decision"] == "deny" and s["source"] == "127.0.0.1" and s["from"] <= s["to"]
               for s in summaries)
    assert len(kept) >= 1
    assert len(kept) + sum(s["suppressed"] for s in summaries) == n
    assert [r["reason"] for r in w.log.by_id[aside]] == ["missing"]
    assert event_count(db) == before


def test_a_proxied_write_records_the_proxy_in_its_auth(w: World) -> None:
    v = w.vars
    answer = send_raw(w.port, "PUT", f"/v1/namespaces/{v['ns']}/entries/services/via-proxy",
                      [*bearer(v["gateway"]), ("X-Actor", "enduser"),
                       ("Content-Type", "application/json")], b"{}")
    assert answer.status == 201, answer.text
    history = w.admin.get(f"/v1/namespaces/{v['ns']}/entries/services/via-proxy/history")
    [item] = history.json()["items"]
    assert item["actor"] == "enduser"
    assert item["auth"] == {"method": "token", "token_id": v["gateway_id"],
                            "proxy": v["gateway_sub"], "on_behalf_of": "enduser"}


def test_no_secret_reaches_the_logs_the_access_log_or_the_store(
        w: World, db: psycopg.Connection[tuple[object, ...]], captured: Captured) -> None:
    v = w.vars
    for token in (v["alice"], v["revokee"], ADMIN_TOKEN):  # refused, one way or another
        send_raw(w.port, "GET", "/v1/namespaces", [("Authorization", f"Bearer {token}\nx")])
        send_raw(w.port, "GET", "/v1/namespaces", bearer(token + "x"))
    w.sentinel(f"secrets-{secrets.token_hex(6)}")
    logged, records = "\n".join(captured.lines), json.dumps(w.log.rows)
    tokens = [ADMIN_TOKEN, *(v[n] for n in ("alice", "bob", "gateway", "expiring", "revokee"))]
    for secret in [t.split("_", 2)[2] for t in tokens] + [v["jwt_ok"], v["jwt_admins"]]:
        assert secret not in logged
        assert secret not in records
        assert db.execute("SELECT count(*) FROM ssot_events WHERE"
                          " position(%s in convert_from(state, 'UTF8')) > 0",
                          (secret,)).fetchone() == (0,)
