"""A pretend OIDC identity provider for the tests of access/oidc.py: signing keys (RSA,
EC, Ed25519) with their JWKs, tokens signed by PyJWT, tokens no honest library would sign
(``alg: none``, HS256 keyed with a public key) crafted by hand, a JWKS endpoint stand-in
that counts its fetches, and a clock the test moves."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.example.test/realms/nexus"
AUDIENCE = "nexus-ssot"
JWKS_URL = "https://idp.example.test/realms/nexus/protocol/openid-connect/certs"
#: The tests' "now" (2027-01-15T08:00:00Z).
NOW = 1_800_000_000.0

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Jwks:
    """The JWKS endpoint: serves ``keys`` (or fails while ``down``), counting fetches."""

    keys: list[dict[str, Any]]
    down: bool = False
    fetches: list[str] = field(default_factory=list)

    def __call__(self, url: str) -> bytes:
        self.fetches.append(url)
        if self.down:
            raise ConnectionError("the identity provider is down")
        return json.dumps({"keys": self.keys}).encode()


@cache
def rsa_private(name: str) -> rsa.RSAPrivateKey:
    """One RSA key per name for the whole run (generating one takes a while)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_private(name: str, curve: str = "P-256") -> ec.EllipticCurvePrivateKey:
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    return ec.generate_private_key(curves[curve])


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private: PrivateKey

    def jwk(self, **extra: Any) -> dict[str, Any]:
        """The public JWK (``kid``, ``use: sig``; no ``alg`` unless given in ``extra``)."""
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = OKPAlgorithm.to_jwk(public, as_dict=True)
        return {**data, "kid": self.kid, "use": "sig", **extra}

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.algorithm,
                          headers={"kid": self.kid, **headers})

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def rsa_key(kid: str = "rsa-1", algorithm: str = "RS256") -> SigningKey:
    return SigningKey(kid, algorithm, rsa_private(kid))


def ec_key(kid: str = "ec-1", algorithm: str = "ES256", curve: str = "P-256") -> SigningKey:
    return SigningKey(kid, algorithm, ec_private(kid, curve))


def ed_key(kid: str = "ed-1") -> SigningKey:
    return SigningKey(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid token's claims at ``NOW`` (an override of None drops the claim)."""
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice",
                            "groups": ["platform"], "iat": int(NOW) - 5,
                            "exp": int(NOW) + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(value: dict[str, Any] | bytes) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any], alg: str = "none") -> str:
    """``alg: none``: header and payload, and an empty signature."""
    return f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(payload)}."


def hmac_signed(payload: dict[str, Any], secret: bytes, kid: str, alg: str = "HS256") -> str:
    """An HS256 token keyed with ``secret`` (the confusion attack keys it with the RSA
    public key's PEM, which PyJWT refuses to do)."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384}[alg]
    signing_input = f"{b64({'alg': alg, 'typ': 'JWT', 'kid': kid})}.{b64(payload)}"
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"
