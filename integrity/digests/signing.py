"""The key that signs the digests: an Ed25519 private key from a PKCS#8 PEM file
(``SSOT_SIGNING_KEY_FILE``), named by its ``key_id`` (the first 16 hex digits of SHA-256
of the raw 32-byte public key).

``cryptography`` is loaded when a key is (~9 MB of memory a ledger with unsigned digests
does not pay in each of its processes)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )


class SigningKeyError(ValueError):
    """The configured signing key cannot be used (the message names the file)."""


def key_id(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """The Ed25519 key in the PKCS#8 PEM file ``path`` (SSOT_SIGNING_KEY_FILE)."""
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            data = path.read_bytes()
        except OSError as e:
            raise SigningKeyError(
                f"SSOT_SIGNING_KEY_FILE {str(path)!r} cannot be read: {e.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise SigningKeyError(
                f"SSOT_SIGNING_KEY_FILE {str(path)!r} is not an unencrypted PKCS#8 PEM "
                f"private key: {e}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"SSOT_SIGNING_KEY_FILE {str(path)!r} holds a "
                                  f"{type(key).__name__}, not an Ed25519 key")
        return cls(key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def public_json(self) -> dict[str, str]:
        """What ``GET /v1/integrity/public-key`` serves."""
        from cryptography.hazmat.primitives import serialization

        public = self.public_key
        return {
            "algorithm": "Ed25519",
            "key_id": key_id(public),
            "public_key_pem": public.public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
            "public_key_hex": public.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex(),
        }

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)
