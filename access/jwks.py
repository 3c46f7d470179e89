"""JSON Web Key Sets (RFC 7517): the public keys an OIDC issuer signs its tokens with,
parsed once with PyJWT's ``PyJWK``, and the rule for which key may verify which algorithm.

Only public signature keys are kept: RSA (2048 bits or more), EC on the curve its
algorithm names, and Ed25519/Ed448. Symmetric keys (``kty: oct``), encryption keys
(``use: enc``), private keys and keys PyJWT cannot read are dropped when the set is
parsed, so no token can ever be checked against them. A key fits an algorithm when its
type (and curve) is that algorithm's and, if the JWK declares an ``alg``, it is the same:
an RSA key never verifies ``ES256``, and no key verifies ``HS256``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK, PyJWTError

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey

#: Shortest RSA modulus accepted (NIST SP 800-131A).
MIN_RSA_BITS = 2048

#: The curve each ECDSA algorithm signs with (cryptography's names).
EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1",
             "ES256K": "secp256k1"}
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
#: Every algorithm a key here can verify: exactly the asymmetric ones.
VERIFIABLE_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_CURVES) | {"EdDSA"}

#: Key types that can hold a public signature key (``oct`` is a shared secret: never).
_KEY_TYPES = ("RSA", "EC", "OKP")


class InvalidKeySet(ValueError):
    """The document is not a JWKS (not JSON, or no ``keys`` list)."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str | None
    #: The ``alg`` the JWK declares, if it declares one.
    declared_algorithm: str | None
    key: PublicKey

    def fits(self, algorithm: str) -> bool:
        """May this key verify a signature made with ``algorithm``?"""
        if self.declared_algorithm is not None and self.declared_algorithm != algorithm:
            return False
        if algorithm in RSA_ALGORITHMS:
            return isinstance(self.key, RSAPublicKey)
        if algorithm in EC_CURVES:
            return (isinstance(self.key, EllipticCurvePublicKey)
                    and self.key.curve.name == EC_CURVES[algorithm])
        if algorithm == "EdDSA":
            return isinstance(self.key, Ed25519PublicKey | Ed448PublicKey)
        return False


@dataclass(frozen=True)
class KeySet:
    keys: tuple[VerificationKey, ...]
    #: Why each dropped JWK was dropped (for the log; no key material).
    dropped: tuple[str, ...] = ()

    def knows(self, kid: str) -> bool:
        return any(k.kid == kid for k in self.keys)

    def find(self, kid: str | None, algorithm: str) -> VerificationKey | None:
        """The key that verifies a token naming ``kid`` and ``algorithm``: the first key
        with that kid that fits; for a token naming no kid, the one key that fits (none
        when several do: which one signed is then a guess)."""
        fitting = [k for k in self.keys if k.fits(algorithm)]
        if kid is None:
            return fitting[0] if len(fitting) == 1 else None
        return next((k for k in fitting if k.kid == kid), None)


def parse_key_set(document: bytes) -> KeySet:
    """The usable keys of a JWKS document; ``InvalidKeySet`` if it is not one at all."""
    try:
        value = json.loads(document)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidKeySet(f"the key set is not JSON: {error}") from None
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise InvalidKeySet("the key set is not a JSON object with a 'keys' list")
    keys: list[VerificationKey] = []
    dropped: list[str] = []
    for index, jwk in enumerate(value["keys"]):
        key, why = parse_key(jwk)
        if key is None:
            dropped.append(f"keys[{index}]: {why}")
        else:
            keys.append(key)
    return KeySet(keys=tuple(keys), dropped=tuple(dropped))


def parse_key(jwk: Any) -> tuple[VerificationKey | None, str]:
    """One JWK as a verification key, or None and why it cannot be one."""
    if not isinstance(jwk, dict):
        return None, "not a JSON object"
    kty, kid, alg = jwk.get("kty"), jwk.get("kid"), jwk.get("alg")
    if kty not in _KEY_TYPES:
        return None, f"key type {str(kty)[:16]!r} is not a public signature key type"
    if kid is not None and not isinstance(kid, str):
        return None, "kid is not a string"
    if jwk.get("use", "sig") != "sig":
        return None, "not a signature key (use is not 'sig')"
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None, "key_ops does not include 'verify'"
    if alg is not None and alg not in VERIFIABLE_ALGORITHMS:
        return None, f"alg {str(alg)[:16]!r} is not an asymmetric signature algorithm"
    try:
        # PyJWK guesses the algorithm from kty/crv; an OKP key may be Ed448 too.
        parsed = PyJWK(jwk, algorithm=alg or ("EdDSA" if kty == "OKP" else None))
    except PyJWTError as error:
        return None, f"unreadable: {error}"
    key = parsed.key
    if not isinstance(key, PublicKey):
        return None, "not a public key (private key material is never used)"
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return None, f"RSA key of {key.key_size} bits (fewer than {MIN_RSA_BITS})"
    return VerificationKey(kid=kid, declared_algorithm=alg, key=key), ""
