"""Checks a NEXUS SSOT proof (GET …/entries/{key}/proof?version=N&digest=SEQ) against the
digest SEQ as published on NATS, with the standard library only (the signature, when a key
is given, with the `cryptography` package). Prints OK or the first failure; exits 0 or 1."""
import hashlib
import json
import sys
from typing import Any

USAGE = "usage: python verify_proof.py PROOF.json|- DIGEST.json [PUBLIC_KEY.pem]"
HASHED = ("stream", "version", "type", "namespace", "key", "document", "patch", "actor",
          "reason", "correlation_id", "causation_id", "idempotency_key", "event_id",
          "resolution", "restored_from_version", "prev_hash")
#: Hashed only when present and not null (an event from before them hashes without them).
OPTIONAL = ("auth",)
#: From event class version 5 every member is hashed, in this order (restored_from_version
#: only when the event has one), and those inside its values in theirs (as the proof has them).
WHOLE = ("timestamp", "event_id", "namespace", "key", "document", "patch", "actor", "reason",
         "correlation_id", "causation_id", "idempotency_key", "resolution", "prev_hash",
         "auth", "restored_from_version", "class_version", "stream", "version", "type")


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def event_encoding(event: Any) -> bytes:
    if isinstance(event.get("class_version"), int) and event["class_version"] >= 5:
        members = {k: event.get(k) for k in WHOLE
                   if k != "restored_from_version" or k in event}
        return json.dumps(members, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()
    members = {k: event.get(k) for k in HASHED}
    members.update((k, event[k]) for k in OPTIONAL if event.get(k) is not None)
    return canonical(members)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def root_from_path(fn: int, sn: int, r: bytes, path: list[bytes]) -> bytes | None:
    for p in path:  # RFC 9162 2.1.3.2 with fn = leaf index, sn = tree size - 1
        if sn == 0:
            return None
        if fn % 2 == 1 or fn == sn:
            r = sha256(b"\x01" + p + r)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = sha256(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def failure(proof: Any, digest: Any, key_file: str | None) -> str | None:
    event, leaf = proof["event"], proof["leaf"]
    content = canonical({k: digest[k] for k in ("seq", "position", "size", "root",
                                                "recorded_at", "prev")})
    if sha256(content).hex() != digest["hash"]:
        return "digest: its hash does not match its content"
    if proof["digest"]["hash"] != digest["hash"]:
        return f"digest: the proof is against digest {proof['digest']['seq']}, not this one"
    if sha256(event_encoding(event)).hex() != event["hash"]:
        return "event: its hash does not match its members"
    data = canonical({k: event[k] for k in ("position", "recorded_at", "hash")})
    if sha256(b"\x00" + data).hex() != leaf["hash"]:
        return "leaf: not the hash of the event's position, recorded_at and hash"
    if not 0 <= leaf["index"] < digest["size"] or event["position"] > digest["position"]:
        return "leaf: the digest does not cover this event"
    root = root_from_path(leaf["index"], digest["size"] - 1, bytes.fromhex(leaf["hash"]),
                          [bytes.fromhex(p) for p in proof["audit_path"]])
    if root is None or root.hex() != digest["root"]:
        return "audit path: it does not lead to the digest's root"
    if key_file:
        try:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives.serialization import load_pem_public_key
        except ImportError:
            print("signature not checked: no cryptography package", file=sys.stderr)
            return None
        with open(key_file, "rb") as f:
            key: Any = load_pem_public_key(f.read())
        try:
            key.verify(bytes.fromhex(digest["signature"] or ""), content)
        except InvalidSignature:
            return "signature: not this key's signature of the digest"
    return None


def main(args: list[str]) -> int:
    if len(args) not in (2, 3):
        sys.exit(USAGE)
    try:
        with sys.stdin if args[0] == "-" else open(args[0], encoding="utf-8") as f:
            proof = json.load(f)
        with open(args[1], encoding="utf-8") as f:
            digest = json.load(f)
        problem = failure(proof, digest, args[2] if len(args) == 3 else None)
    except (OSError, LookupError, TypeError, ValueError, AttributeError) as e:
        problem = f"unreadable input: {type(e).__name__}: {e}"
    print("OK" if problem is None else f"FAIL {problem}")
    return 0 if problem is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
