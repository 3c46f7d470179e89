"""`ssot verify` against tampering with the digests by direct SQL: a deleted, changed or
rewritten digest is found, the last one too, and the published digests outvote the table.
The seeded log and the tampering: kit.py."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nexus_ssot.integrity.digests import Digest, Signer
from tests.integration.verify.kit import (
    Conn,
    Seeded,
    first_problem,
    kinds,
    tampering,
    verified,
)

# --- tampering with digests ---------------------------------------------------------------


def _digests(conn: Conn) -> list[tuple[int, int]]:
    return [(int(s), int(p)) for s, p in conn.execute(
        "SELECT seq, position FROM digests ORDER BY seq")]


def test_a_deleted_digest_row_is_found(db: str, seeded: Seeded) -> None:
    with tampering(db) as conn:
        rows = _digests(conn)
        conn.execute("DELETE FROM digests WHERE seq = 2")
    first = first_problem(db, seeded)
    assert (first["kind"], first["seq"], first["position"]) == \
        ("digest_missing", 2, rows[2][1])  # shows where the chain resumes
    exact = first_problem(db, seeded, digests=seeded.published)
    assert (exact["kind"], exact["seq"], exact["position"]) == \
        ("digest_missing", 2, rows[1][1])  # the published copy knows where it was


def test_the_deleted_last_digest_is_found(db: str, seeded: Seeded) -> None:
    with tampering(db) as conn:
        rows = _digests(conn)
        conn.execute("DELETE FROM digests WHERE seq = %s", (rows[-1][0],))
    first = first_problem(db, seeded)
    assert (first["kind"], first["seq"], first["position"]) == \
        ("digest_missing", rows[-1][0], rows[-1][1])


def test_a_changed_digest_is_found(db: str, seeded: Seeded) -> None:
    with tampering(db) as conn:
        rows = _digests(conn)
        conn.execute("UPDATE digests SET root = %s WHERE seq = 2", (b"\x07" * 32,))
    report = verified(db, key=seeded.key)
    assert report["ok"] is False, report
    first = report["first_problem"]
    assert (first["kind"], first["seq"], first["position"], first["field"]) == \
        ("digest_altered", 2, rows[1][1], "content")
    assert {"digest_altered", "digest_signature_invalid"} <= kinds(report)


def test_a_rewritten_digest_table_cannot_hide_from_the_published_digests(
        db: str, seeded: Seeded) -> None:
    """Every digest re-signed with the forger's own key, from digest 2 on with a new time
    (so a new hash and chain): the table is coherent, the published copies are not it."""
    forger = Ed25519PrivateKey.generate()
    forged_key = Signer(forger)
    with tampering(db) as conn:
        rows = [Digest.from_row(r) for r in conn.execute(
            f"SELECT {Digest.COLUMNS} FROM digests ORDER BY seq")]
        prev = None
        for old in rows:
            at = old.recorded_at if old.seq == 1 else old.recorded_at.replace(microsecond=0)
            moved = Digest(old.seq, old.position, old.size, old.root, at, prev, b"")
            canonical = moved.canonical()
            new_hash = hashlib.sha256(canonical).digest()
            conn.execute("UPDATE digests SET recorded_at = %s, prev = %s, hash = %s,"
                         " signature = %s, key_id = %s WHERE seq = %s",
                         (moved.recorded_at, prev, new_hash, forged_key.sign(canonical),
                          forged_key.key_id, old.seq))
            prev = new_hash
    # with the forger's key, the table verifies; the published digests do not agree
    forger_pem = Path(str(seeded.key) + f".forger{secrets.token_hex(2)}")
    forger_pem.write_bytes(forger.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    try:
        assert verified(db, key=forger_pem)["ok"] is True
        report = verified(db, key=forger_pem, digests=seeded.published)
        assert report["ok"] is False, report
        first = report["first_problem"]
        assert (first["seq"], first["position"]) == (1, rows[0].position)
        mismatches = {p["seq"]: p["field"] for p in report["problems"]
                      if p["kind"] == "digest_mismatch_external"}
        assert mismatches[1] == "signature" and mismatches[2] == "recorded_at"
        # (the published copies are signed by a key the forger's is not)
        assert first["kind"] == "digest_signature_invalid"
        # and with the real key, the signatures themselves fail
        real = first_problem(db, seeded)
        assert (real["kind"], real["seq"], real["field"]) == \
            ("digest_signature_invalid", 1, "key_id")
    finally:
        forger_pem.unlink()
