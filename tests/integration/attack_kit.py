"""The attacker's kit for test_attacks.py: raw HTTP (requests no honest client sends:
duplicate headers, CR/LF in values, undecoded paths), a reader of the access log by
correlation id, forged JWTs, and ``World``: a server configured for OIDC (a JWKS file) and
a trusted proxy, with the tenants, tokens, policies and entries the attacks aim at."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from nexus_ssot.api.pagination import encode_cursor
from tests.integration.conftest import AUTH, RunningServer, make_settings
from tests.unit.jwt_issuer import (
    AUDIENCE,
    ISSUER,
    SigningKey,
    b64,
    claims,
    ec_private,
    hmac_signed,
    rsa_key,
    rsa_private,
    unsigned,
)

#: How long an awaited access-log record may take (it is appended every ~0.1 s).
LOG_DEADLINE = 15.0


@dataclass
class Answer:
    """One HTTP answer as the bytes came: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def problem(self) -> dict[str, Any] | None:
        """The problem+json body, when it is one."""
        if self.body and (self.header("content-type") or "").startswith(
                "application/problem+json"):
            found: dict[str, Any] = self.json()
            return found
        return None


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def send_raw(port: int, method: str, target: str, headers: list[tuple[str, str]],
             body: bytes = b"") -> Answer:
    """``method target`` with exactly these header lines (values are sent as given, CR and
    LF included), on a connection of its own that the server closes after answering."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             *(f"{name}: {value}" for name, value in headers)]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found.setdefault(name.strip().lower(), []).append(value.strip())
    if "chunked" in (found.get("transfer-encoding") or [""])[0]:
        rest = _dechunk(rest)
    elif "content-length" in found:
        rest = rest[:int(found["content-length"][0])]
    return Answer(int(status_line.split(" ")[1]), found, rest)


class AccessLogReader:
    """The access log as an administrator reads it (``GET /v1/audit/access``), indexed by
    correlation id; each lookup reads only the rows appended since the last."""

    def __init__(self, admin: httpx.Client) -> None:
        self.admin = admin
        self.since = (datetime.now(UTC) - timedelta(seconds=5)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")
        self.after: int | None = None
        self.rows: list[dict[str, Any]] = []
        self.by_id: dict[str, list[dict[str, Any]]] = {}

    def read_new(self) -> None:
        while True:
            params: dict[str, Any] = {"since": self.since, "limit": 1000}
            if self.after is not None:
                params["cursor"] = encode_cursor({"after": self.after})
            r = self.admin.get("/v1/audit/access", params=params)
            assert r.status_code == 200, r.text
            items = r.json()["items"]
            for item in items:
                self.rows.append(item["record"])
                cid = item["record"].get("correlation_id")
                if cid is not None:
                    self.by_id.setdefault(cid, []).append(item["record"])
                self.after = item["seq"]
            if r.json()["next_cursor"] is None:
                return

    def wait_for(self, cid: str) -> list[dict[str, Any]]:
        """The records of ``cid`` once there are any (polled until ``LOG_DEADLINE``)."""
        deadline = time.monotonic() + LOG_DEADLINE
        while True:
            self.read_new()
            if cid in self.by_id:
                return self.by_id[cid]
            assert time.monotonic() < deadline, f"no access-log record of {cid}"
            time.sleep(0.01)


def jwt_variants(key: SigningKey, subject: str, group: str) -> dict[str, str]:
    """One valid JWT (``jwt_ok``) and the forgeries and mistakes an attacker tries."""
    now = int(time.time())

    def payload(**overrides: Any) -> dict[str, Any]:
        return claims(**{"sub": subject, "groups": [group], "iat": now - 5,
                         "exp": now + 600, **overrides})

    attacker = SigningKey("attacker-kid", "RS256", rsa_private("attacker"))
    ok = key.sign(payload())
    header, _, rest = ok.partition(".")
    signature = rest.partition(".")[2]
    return {
        "jwt_ok": ok,
        "jwt_expired": key.sign(payload(iat=now - 1200, exp=now - 600)),
        "jwt_nbf": key.sign(payload(nbf=now + 600)),
        "jwt_iat": key.sign(payload(iat=now + 600)),
        "jwt_iss": key.sign(payload(iss=ISSUER + "-evil")),
        "jwt_aud": key.sign(payload(aud=["someone-else"])),
        "jwt_none": unsigned(payload()),
        "jwt_hs256": hmac_signed(payload(), key.public_pem(), kid=key.kid),
        "jwt_kid": key.sign(payload(), kid="nobody-has-this-kid"),
        "jwt_tampered": f"{header}.{b64(payload(sub='admin', groups=['admins']))}.{signature}",
        "jwt_noexp": key.sign(payload(exp=None)),
        "jwt_expstr": key.sign(payload(exp="tomorrow")),
        "jwt_nosub": key.sign(payload(sub=None)),
        "jwt_otherkey": SigningKey(key.kid, "RS256", rsa_private("attacker")).sign(payload()),
        "jwt_crit": key.sign(payload(), crit=["exp"]),
        "jwt_jwk": attacker.sign(payload(), jwk=attacker.jwk()),
        "jwt_es_on_rsa": SigningKey(key.kid, "ES256", ec_private("attack-ec")).sign(payload()),
        "jwt_admins": key.sign(payload(groups=["admins"])),
        "jwt_named_admin": key.sign(payload(sub="admin", groups=[])),
        "jwt_dots": "a.b.c",
    }


@dataclass
class World:
    """The server under attack and what it holds; ``vars`` fills the table's templates."""

    server: RunningServer
    admin: httpx.Client
    log: AccessLogReader
    vars: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.server.settings.http_port

    def fill(self, value: Any) -> Any:
        """``value`` with each ``{name}`` in its strings replaced by ``vars[name]``."""
        if isinstance(value, str):
            return value.format_map(self.vars)
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value

    def token(self, subject: str, *groups: str, expires_in: int = 3600) -> tuple[str, str]:
        r = self.admin.post("/v1/access/tokens", json={
            "subject": subject, "groups": list(groups), "expires_in": expires_in})
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["token"]

    def policy(self, name: str, *rules: dict[str, Any]) -> None:
        r = self.admin.put(f"/v1/access/policies/{name}", json={"rules": list(rules)})
        assert r.status_code in (200, 201), r.text

    def put(self, ns: str, key: str, document: dict[str, Any]) -> int:
        r = self.admin.put(f"/v1/namespaces/{ns}/entries/{key}", json=document)
        assert r.status_code in (200, 201), r.text
        return int(r.json()["position"])

    def sentinel(self, cid: str) -> None:
        """A request surely recorded (401 missing), to know the log is appended up to
        here: records are queued in the order they are decided, and appended in it."""
        answer = send_raw(self.port, "GET", "/v1/namespaces", [("X-Correlation-Id", cid)])
        assert answer.status == 401
        self.log.wait_for(cid)


@contextlib.contextmanager
def world(database_url: str, directory: Path) -> Iterator[World]:
    """A server with OIDC (keys in a JWKS file) and ``user:gateway-…`` as its trusted
    proxy, no limit on anonymous requests and no flood bound on the access log (the table
    sends many 401s, and waits for each record), and:

    - namespace ``ns``: services/a, services/b, public/readme, secrets/y, secrets/x (twice:
      ``position`` is between its versions, and before the token revokee is made);
      namespace ``other``: k;
    - alice (a token): read, write, history, restore on ns/services/**, read and history
      on ns/public/**; everyone is denied write on ns/services/locked/**;
    - gateway (the proxy): read and write on ns/services/**; the JWT's group: read on
      ns/services/**; bob, expiring (1 s) and revokee: tokens of no rights."""
    sfx = secrets.token_hex(4)
    key = rsa_key("attack-rsa")
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.jwk()]}))
    settings = make_settings(database_url, oidc_issuer=ISSUER, oidc_audience=AUDIENCE,
                             oidc_jwks_file=jwks, trusted_proxies=f"user:gateway-{sfx}",
                             rate_limit_anonymous_per_second=0,
                             access_log_max_per_second=100_000)
    with RunningServer(settings) as server, \
            httpx.Client(headers=AUTH, base_url=server.url, timeout=30) as admin:
        # appended every 10 ms rather than 100: each case waits for its record
        server.app.state.service.access_log.interval = 0.01
        w = World(server, admin, AccessLogReader(admin))
        ns, other = f"atk{sfx}", f"atko{sfx}"
        v = w.vars
        v.update(ns=ns, other=other, NS=ns.upper(), sfx=sfx, p=f"atk-{sfx}",
                 admin_sub="admin", jwt_sub=f"jwt-{sfx}")
        for name in ("alice", "bob", "gateway", "expiring"):
            v[f"{name}_sub"] = f"{name}-{sfx}"
            v[f"{name}_id"], v[name] = w.token(f"{name}-{sfx}", expires_in=1 if
                                               name == "expiring" else 3600)
        v["forged_id"] = secrets.token_hex(8)
        v["forged"] = f"ssot_{v['forged_id']}_{secrets.token_urlsafe(32)}"
        v["wrong_secret"] = f"ssot_{v['alice_id']}_{secrets.token_urlsafe(32)}"
        v["swapped"] = f"ssot_{v['alice_id']}_{v['bob'].split('_', 2)[2]}"
        v["huge"] = "ssot_" + "A" * 70_000
        v.update(jwt_variants(key, v["jwt_sub"], f"platform-{sfx}"))
        v["cursor_hidden"] = encode_cursor({"k": "secrets/x", "p": ""})
        v["cursor_prefix"] = encode_cursor({"k": "secrets/", "p": "secrets/"})
        grant = {"effect": "allow", "namespaces": [ns]}
        w.policy(v["p"],
                 {**grant, "subjects": [f"user:{v['alice_sub']}"],
                  "actions": ["read", "write", "history", "restore"], "keys": ["services/**"]},
                 {**grant, "subjects": [f"user:{v['alice_sub']}"],
                  "actions": ["read", "history"], "keys": ["public/**"]},
                 {"effect": "deny", "subjects": ["*"], "actions": ["write"],
                  "namespaces": [ns], "keys": ["services/locked/**"]},
                 {**grant, "subjects": [f"user:{v['gateway_sub']}"],
                  "actions": ["read", "write"], "keys": ["services/**"]},
                 {**grant, "subjects": [f"group:platform-{sfx}"], "actions": ["read"],
                  "keys": ["services/**"]})
        for k in ("services/a", "services/b", "public/readme", "secrets/y"):
            w.put(ns, k, {"k": k})
        w.put(other, "k", {"k": "other"})
        w.put(ns, "secrets/x", {"secret": 1})
        v["position"] = str(w.put(ns, "services/b", {"k": "services/b", "v": 2}))
        w.put(ns, "secrets/x", {"secret": 2})
        v["revokee_sub"] = f"revokee-{sfx}"  # an event of _access after the position too
        v["revokee_id"], v["revokee"] = w.token(v["revokee_sub"])
        v["cursor_audit"] = encode_cursor({"after": int(v["position"])})
        try:
            yield w
        finally:
            admin.delete(f"/v1/access/policies/{v['p']}")


def bearer(token: str, cid: str | None = None) -> list[tuple[str, str]]:
    """The header lines of a request with ``token`` (and correlation id ``cid``)."""
    return [("Authorization", f"Bearer {token}"), *([("X-Correlation-Id", cid)] if cid else [])]


def wait_until_expired(w: World) -> None:
    """Until the token made to last 1 s is refused (it usually is by the time it is used:
    no API call makes a token whose expiry is past)."""
    deadline = time.monotonic() + 15
    while send_raw(w.port, "GET", "/v1/access/whoami", [
            ("Authorization", f"Bearer {w.vars['expiring']}")]).status != 401:
        assert time.monotonic() < deadline, "the 1 s token did not expire"
        time.sleep(0.05)


def revoke(w: World) -> None:
    """Revoke ``revokee`` through the server under attack, which must refuse it at once."""
    assert w.admin.delete(f"/v1/access/tokens/{w.vars['revokee_id']}").status_code == 200


class Captured(logging.Handler):
    """Every log record of the process, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def attach(self) -> None:
        """On the root and on uvicorn's loggers (a server's start configures those anew)."""
        for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
            if self not in logging.getLogger(name).handlers:
                logging.getLogger(name).addHandler(self)
