"""OIDC bearer tokens (access/oidc.py): what is accepted, everything refused and why, and
the JWKS cache (rotation, rate limit, fail-closed), all with an injected clock and fetch."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from jwt.api_jws import PyJWS
from pydantic import ValidationError

from nexus_ssot.access.errors import AuthenticationFailed
from nexus_ssot.access.jwks import parse_key_set
from nexus_ssot.access.oidc import OidcAuthenticator
from nexus_ssot.api.authentication import oidc_authenticator
from nexus_ssot.ledger.settings import Settings
from tests.unit.jwt_issuer import (
    AUDIENCE,
    ISSUER,
    JWKS_URL,
    NOW,
    Clock,
    Jwks,
    SigningKey,
    b64,
    claims,
    ec_key,
    ec_private,
    ed_key,
    hmac_signed,
    rsa_key,
    rsa_private,
    unsigned,
)

CACHE = 3600.0
MIN_REFRESH = 10.0


def make(jwks: Jwks, clock: Clock | None = None, **options: Any) -> OidcAuthenticator:
    settings: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": JWKS_URL,
                                "jwks_cache_seconds": CACHE,
                                "jwks_min_refresh_seconds": MIN_REFRESH}
    settings.update(options)
    return OidcAuthenticator(**settings, clock=clock or Clock(), fetch=jwks)


def refused(oidc: OidcAuthenticator, token: str, reason: str) -> AuthenticationFailed:
    """The refusal of ``token``, checked to have ``reason`` and not to quote the token."""
    with pytest.raises(AuthenticationFailed) as caught:
        oidc.authenticate(token)
    error = caught.value
    assert error.reason == reason, error.message
    for text in (error.message, str(error), repr(error)):
        assert token not in text or not token
        for part in token.split("."):
            assert len(part) < 8 or part not in text
    return error


@pytest.fixture
def rsa() -> SigningKey:
    return rsa_key()


@pytest.fixture
def jwks(rsa: SigningKey) -> Jwks:
    return Jwks(keys=[rsa.jwk()])


# Accepted tokens.

def test_a_valid_rs256_token_is_its_subject_and_groups(rsa: SigningKey, jwks: Jwks) -> None:
    identity = make(jwks).authenticate(rsa.sign(claims(groups=["platform", "ops"])))
    assert identity.subject == "alice"
    assert identity.groups == frozenset({"platform", "ops"})
    assert identity.method == "oidc"
    assert identity.issuer == ISSUER
    assert identity.expires_at == datetime.fromtimestamp(NOW + 300, UTC)
    assert identity.expires_at.tzinfo is UTC
    assert identity.token_id is None
    assert identity.principals == ("user:alice", "group:ops", "group:platform")
    assert jwks.fetches == [JWKS_URL]


@pytest.mark.parametrize("key", [ec_key(), ec_key("ec-384", "ES384", "P-384"),
                                 ec_key("ec-521", "ES512", "P-521"), ed_key(),
                                 rsa_key("rsa-1", "PS256"), rsa_key("rsa-1", "RS512")],
                         ids=lambda k: k.algorithm)
def test_every_default_asymmetric_family_verifies(key: SigningKey) -> None:
    identity = make(Jwks(keys=[key.jwk()])).authenticate(key.sign(claims()))
    assert identity.subject == "alice"


def test_an_es256_token_verifies_among_several_keys(rsa: SigningKey) -> None:
    es = ec_key()
    oidc = make(Jwks(keys=[rsa.jwk(), es.jwk(alg="ES256")]))
    assert oidc.authenticate(es.sign(claims(sub="bob"))).subject == "bob"
    assert oidc.authenticate(rsa.sign(claims())).subject == "alice"


@pytest.mark.parametrize(("groups", "expected"), [
    (["a", "b"], {"a", "b"}), ("solo", {"solo"}), (None, set()), ([], set())])
def test_the_groups_claim_is_a_list_a_single_name_or_absent(
        rsa: SigningKey, jwks: Jwks, groups: Any, expected: set[str]) -> None:
    token = rsa.sign({k: v for k, v in claims().items() if k != "groups"}
                     | ({} if groups is None else {"groups": groups}))
    assert make(jwks).authenticate(token).groups == frozenset(expected)


def test_a_null_groups_claim_is_no_groups(rsa: SigningKey, jwks: Jwks) -> None:
    assert make(jwks).authenticate(rsa.sign({**claims(), "groups": None})).groups == set()


def test_custom_subject_and_groups_claims(rsa: SigningKey, jwks: Jwks) -> None:
    oidc = make(jwks, subject_claim="preferred_username", groups_claim="roles")
    token = rsa.sign(claims(preferred_username="alice@example.test", roles=["reader"]))
    identity = oidc.authenticate(token)
    assert identity.subject == "alice@example.test"
    assert identity.groups == frozenset({"reader"})
    refused(oidc, rsa.sign(claims()), "malformed")  # no preferred_username


@pytest.mark.parametrize("aud", [AUDIENCE, [AUDIENCE], ["other-app", AUDIENCE]])
def test_the_audience_is_a_string_or_a_list_containing_ours(
        rsa: SigningKey, jwks: Jwks, aud: Any) -> None:
    assert make(jwks).authenticate(rsa.sign(claims(aud=aud))).subject == "alice"


# Refused tokens.

@pytest.mark.parametrize("aud", ["other-app", ["other-app"], AUDIENCE + "-admin",
                                 AUDIENCE[:-1], [AUDIENCE.upper()], [1]])
def test_a_token_for_another_audience_is_refused(
        rsa: SigningKey, jwks: Jwks, aud: Any) -> None:
    refused(make(jwks), rsa.sign(claims(aud=aud)), "wrong_audience")


@pytest.mark.parametrize("iss", ["https://evil.example.test/realms/nexus", ISSUER + "/",
                                 ISSUER.upper(), ""])
def test_a_token_from_another_issuer_is_refused(rsa: SigningKey, jwks: Jwks, iss: Any) -> None:
    refused(make(jwks), rsa.sign(claims(iss=iss)), "wrong_issuer")


@pytest.mark.parametrize("missing", ["exp", "iss", "aud"])
def test_a_token_missing_a_required_claim_is_malformed(
        rsa: SigningKey, jwks: Jwks, missing: str) -> None:
    error = refused(make(jwks), rsa.sign(claims(**{missing: None})), "malformed")
    assert repr(missing) in error.message


@pytest.mark.parametrize("exp", ["tomorrow", True, 1e300, -5, [1]])
def test_an_exp_that_is_not_a_time_is_malformed(rsa: SigningKey, jwks: Jwks, exp: Any) -> None:
    refused(make(jwks), rsa.sign(claims(exp=exp)), "malformed")


def test_an_expired_token_is_refused_beyond_the_leeway(rsa: SigningKey, jwks: Jwks) -> None:
    clock = Clock()
    oidc = make(jwks, clock, leeway=30)
    token = rsa.sign(claims(exp=int(NOW) - 10))
    assert oidc.authenticate(token).subject == "alice"  # 10 s late: within the leeway
    clock.advance(19)
    assert oidc.authenticate(token).subject == "alice"
    clock.advance(1)  # exp = now - leeway
    refused(oidc, token, "expired")
    refused(make(jwks, Clock(), leeway=0), token, "expired")


def test_a_token_not_valid_yet_is_refused_beyond_the_leeway(
        rsa: SigningKey, jwks: Jwks) -> None:
    oidc = make(jwks, Clock(), leeway=30)
    assert oidc.authenticate(rsa.sign(claims(nbf=int(NOW) + 30))).subject == "alice"
    error = refused(oidc, rsa.sign(claims(nbf=int(NOW) + 31)), "not_yet_valid")
    assert "2027-01-15T08:00:31Z" in error.message
    refused(oidc, rsa.sign(claims(iat=int(NOW) + 120)), "not_yet_valid")
    refused(oidc, rsa.sign(claims(nbf="soon")), "malformed")


@pytest.mark.parametrize("subject", [None, "", 42, ["alice"], "line\nbreak", "x" * 1025])
def test_a_token_without_a_usable_subject_is_malformed(
        rsa: SigningKey, jwks: Jwks, subject: Any) -> None:
    payload = {k: v for k, v in claims().items() if k != "sub"}
    if subject is not None:
        payload["sub"] = subject
    refused(make(jwks), rsa.sign(payload), "malformed")


@pytest.mark.parametrize("groups", [[1], {"a": 1}, ["ok", None], [""], 7])
def test_a_groups_claim_of_anything_else_is_malformed(
        rsa: SigningKey, jwks: Jwks, groups: Any) -> None:
    refused(make(jwks), rsa.sign(claims(groups=groups)), "malformed")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "....", "x" * 70_000, "ssot_0123_abc",
                                   f"{b64(b'[1]')}.{b64(claims())}.c2ln"])
def test_garbage_is_malformed_before_any_key_is_fetched(jwks: Jwks, token: str) -> None:
    refused(make(jwks), token, "malformed")
    assert jwks.fetches == []


def test_a_signed_payload_that_is_not_json_is_malformed(rsa: SigningKey, jwks: Jwks) -> None:
    token = PyJWS().encode(b"not json", rsa.private, algorithm="RS256", headers={"kid": "rsa-1"})
    refused(make(jwks), token, "malformed")


def test_no_token_at_all_is_missing(jwks: Jwks) -> None:
    refused(make(jwks), "", "missing")


def test_a_tampered_token_fails_its_signature(rsa: SigningKey, jwks: Jwks) -> None:
    header, _, signature = rsa.sign(claims()).split(".")
    forged = f"{header}.{b64(claims(sub='root', groups=['admins']))}.{signature}"
    refused(make(jwks), forged, "bad_signature")


def test_a_token_signed_by_another_key_under_a_known_kid_fails(jwks: Jwks) -> None:
    impostor = SigningKey("rsa-1", "RS256", rsa_private("impostor"))
    refused(make(jwks), impostor.sign(claims()), "bad_signature")


# Algorithm policy: none, HMAC and key/algorithm mismatches.

@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_is_refused_before_any_key_is_fetched(jwks: Jwks, alg: str) -> None:
    error = refused(make(jwks), unsigned(claims(), alg), "algorithm_not_allowed")
    assert "RS256" in error.message
    assert jwks.fetches == []


def test_hs256_keyed_with_the_rsa_public_key_is_refused(rsa: SigningKey, jwks: Jwks) -> None:
    """The confusion attack: a verifier that let the header pick HMAC would check the MAC
    with the published RSA key's bytes as the secret, which the attacker knows too."""
    oidc = make(jwks)
    for secret in (rsa.public_pem(), rsa.public_pem().strip()):
        for alg in ("HS256", "HS384"):
            refused(oidc, hmac_signed(claims(), secret, "rsa-1", alg), "algorithm_not_allowed")
    assert jwks.fetches == []


def test_hmac_and_none_cannot_be_configured(jwks: Jwks) -> None:
    for algorithms in (["HS256"], ["RS256", "none"], []):
        with pytest.raises(ValueError, match="asymmetric"):
            make(jwks, algorithms=algorithms)
    with pytest.raises(ValidationError, match="HS512"):
        Settings(oidc_algorithms="RS256,HS512")


def test_a_symmetric_key_in_the_jwks_is_never_used(rsa: SigningKey) -> None:
    secret = b"shared-secret-published-by-mistake-0123456789"
    oct_jwk = {"kty": "oct", "kid": "oct-1", "k": b64(secret), "alg": "HS256", "use": "sig"}
    keys = parse_key_set(Jwks(keys=[oct_jwk, rsa.jwk()])(JWKS_URL))
    assert [k.kid for k in keys.keys] == ["rsa-1"]
    assert "key type 'oct'" in keys.dropped[0]
    jwks = Jwks(keys=[oct_jwk])
    oidc = make(jwks, algorithms=["RS256"])
    refused(oidc, hmac_signed(claims(), secret, "oct-1"), "algorithm_not_allowed")
    # Even under an allowed algorithm's name, the oct key is not there to be found.
    header = b64({"alg": "RS256", "kid": "oct-1"})
    refused(oidc, f"{header}.{b64(claims())}.{b64(b'sig')}", "unknown_key")


def test_a_key_only_verifies_its_own_algorithm_family(rsa: SigningKey) -> None:
    es = ec_key()
    jwks = Jwks(keys=[rsa.jwk(alg="RS256"), es.jwk(), ec_key("ec-384", "ES384", "P-384").jwk()])
    oidc = make(jwks)
    # An RSA key declared RS256 verifies neither PS256 nor RS512 made with it.
    refused(oidc, rsa_key("rsa-1", "PS256").sign(claims()), "unknown_key")
    refused(oidc, rsa_key("rsa-1", "RS512").sign(claims()), "unknown_key")
    # An EC P-256 key verifies no ES384 token, nor the RSA kid an ES256 one.
    p384 = ec_private("ec-384", "P-384")
    refused(oidc, SigningKey("ec-1", "ES384", p384).sign(claims()), "unknown_key")
    refused(oidc, SigningKey("rsa-1", "ES256", es.private).sign(claims()), "unknown_key")
    assert oidc.authenticate(es.sign(claims())).subject == "alice"


def test_unusable_jwks_members_are_dropped_with_a_reason(rsa: SigningKey) -> None:
    small = SigningKey("small", "RS256", generate_private_key(65537, 1024))
    es = ec_key()
    secret = es.private.private_numbers().private_value.to_bytes(32, "big")
    jwks = Jwks(keys=[rsa.jwk(use="enc", kid="enc"), rsa.jwk(key_ops=["encrypt"], kid="ops"),
                      rsa.jwk(alg="RSA-OAEP", kid="oaep"), {"kty": "RSA", "kid": "bad"},
                      "not a key", small.jwk(), rsa.jwk(kid=7), es.jwk(d=b64(secret))])
    keys = parse_key_set(jwks(JWKS_URL))
    assert keys.keys == ()
    whys = ["use is not 'sig'", "key_ops", "'RSA-OAEP'", "unreadable", "not a JSON object",
            "1024 bits", "kid is not a string", "not a public key"]
    assert len(keys.dropped) == len(whys)
    assert all(why in dropped for why, dropped in zip(whys, keys.dropped, strict=True))


def test_a_token_without_kid_uses_the_only_fitting_key(rsa: SigningKey) -> None:
    no_kid = jwt.encode(claims(), rsa.private, algorithm="RS256")
    assert make(Jwks(keys=[rsa.jwk()])).authenticate(no_kid).subject == "alice"
    two = Jwks(keys=[rsa.jwk(), rsa_key("rsa-2").jwk()])
    refused(make(two), no_kid, "unknown_key")


def test_critical_header_extensions_are_refused(rsa: SigningKey, jwks: Jwks) -> None:
    refused(make(jwks), rsa.sign(claims(), crit=["exp"]), "malformed")


# The JWKS cache: unknown kid, rotation, outages.

def test_an_unknown_kid_fetches_once_then_is_rate_limited(
        rsa: SigningKey, jwks: Jwks) -> None:
    clock = Clock()
    oidc = make(jwks, clock)
    stranger = rsa_key("rsa-unknown")
    refused(oidc, stranger.sign(claims()), "unknown_key")  # the first fetch
    assert len(jwks.fetches) == 1
    for _ in range(5):
        refused(oidc, stranger.sign(claims()), "unknown_key")
    clock.advance(MIN_REFRESH - 0.5)
    refused(oidc, stranger.sign(claims()), "unknown_key")
    assert len(jwks.fetches) == 1
    assert oidc.authenticate(rsa.sign(claims())).subject == "alice"  # known kid: no fetch
    clock.advance(0.5)
    refused(oidc, stranger.sign(claims()), "unknown_key")
    assert len(jwks.fetches) == 2
    refused(oidc, stranger.sign(claims()), "unknown_key")
    assert len(jwks.fetches) == 2


def test_a_rotated_key_is_picked_up_without_a_restart(rsa: SigningKey, jwks: Jwks) -> None:
    clock = Clock()
    oidc = make(jwks, clock)
    assert oidc.authenticate(rsa.sign(claims())).subject == "alice"
    new = rsa_key("rsa-2")
    token = new.sign(claims(exp=int(NOW) + 3000))
    clock.advance(1)
    refused(oidc, token, "unknown_key")  # within the rate limit: no fetch
    jwks.keys = [new.jwk()]  # the provider rotates: rsa-1 retired
    refused(oidc, token, "unknown_key")
    assert len(jwks.fetches) == 1
    clock.advance(MIN_REFRESH)
    assert oidc.authenticate(token).subject == "alice"
    assert len(jwks.fetches) == 2
    refused(oidc, rsa.sign(claims(exp=int(NOW) + 3000)), "unknown_key")  # retired


def test_cached_keys_outlive_an_outage_then_fail_closed(rsa: SigningKey, jwks: Jwks) -> None:
    clock = Clock()
    oidc = make(jwks, clock)
    token = rsa.sign(claims(exp=int(NOW + 2 * CACHE)))
    assert oidc.authenticate(token).subject == "alice"
    jwks.down = True
    clock.advance(CACHE / 2 - 1)
    assert oidc.authenticate(token).subject == "alice"
    assert len(jwks.fetches) == 1
    clock.advance(1)  # half the cache time: a refresh is tried (and fails)
    assert oidc.authenticate(token).subject == "alice"
    assert len(jwks.fetches) == 2
    assert oidc.authenticate(token).subject == "alice"  # rate-limited: no retry yet
    assert len(jwks.fetches) == 2
    clock.advance(CACHE / 2 - 1)
    assert oidc.authenticate(token).subject == "alice"
    clock.advance(1)  # CACHE after the last successful fetch
    refused(oidc, token, "jwks_unavailable")
    refused(oidc, token, "jwks_unavailable")
    fetches = len(jwks.fetches)
    jwks.down = False
    clock.advance(MIN_REFRESH)
    assert oidc.authenticate(token).subject == "alice"  # back: fetched again
    assert len(jwks.fetches) == fetches + 1


def test_a_provider_down_from_the_start_fails_closed(rsa: SigningKey, jwks: Jwks) -> None:
    clock = Clock()
    jwks.down = True
    oidc = make(jwks, clock)
    refused(oidc, rsa.sign(claims()), "jwks_unavailable")
    refused(oidc, rsa.sign(claims()), "jwks_unavailable")
    assert len(jwks.fetches) == 1
    jwks.down = False
    clock.advance(MIN_REFRESH)
    assert oidc.authenticate(rsa.sign(claims())).subject == "alice"


def test_a_key_set_that_is_not_one_counts_as_unreachable(rsa: SigningKey) -> None:
    answers = iter([b"<html>maintenance</html>", b'{"keys": "none"}'])
    oidc = OidcAuthenticator(issuer=ISSUER, audience=AUDIENCE, jwks_url=JWKS_URL,
                             clock=Clock(), jwks_min_refresh_seconds=0,
                             fetch=lambda url: next(answers))
    refused(oidc, rsa.sign(claims()), "jwks_unavailable")
    refused(oidc, rsa.sign(claims()), "jwks_unavailable")


def test_try_cached_never_fetches(rsa: SigningKey, jwks: Jwks) -> None:
    clock = Clock()
    oidc = make(jwks, clock)
    token = rsa.sign(claims(exp=int(NOW + CACHE)))
    assert oidc.try_cached(token) is None  # nothing cached yet
    assert jwks.fetches == []
    assert oidc.authenticate(token).subject == "alice"
    identity = oidc.try_cached(token)
    assert identity is not None and identity.subject == "alice"
    with pytest.raises(AuthenticationFailed) as caught:
        oidc.try_cached(unsigned(claims()))
    assert caught.value.reason == "algorithm_not_allowed"
    stranger = rsa_key("rsa-unknown").sign(claims())
    clock.advance(MIN_REFRESH)
    assert oidc.try_cached(stranger) is None  # a refresh is due: the caller's thread does it
    clock.advance(CACHE / 2)
    assert oidc.try_cached(token) is None  # keys due for refresh
    assert len(jwks.fetches) == 1


def test_concurrent_unknown_kids_share_one_fetch(rsa: SigningKey) -> None:
    release = threading.Event()
    jwks = Jwks(keys=[rsa.jwk()])

    def slow_fetch(url: str) -> bytes:
        release.wait(timeout=10)
        return jwks(url)

    oidc = OidcAuthenticator(issuer=ISSUER, audience=AUDIENCE, jwks_url=JWKS_URL,
                             clock=Clock(), fetch=slow_fetch)
    token = rsa.sign(claims())
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(oidc.authenticate(token).subject))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(timeout=10)
    assert results == ["alice"] * 8
    assert len(jwks.fetches) == 1


# A JWKS file, for air-gapped setups.

def write_jwks(path: Path, keys: list[dict[str, Any]] | str, mtime: float) -> None:
    path.write_text(keys if isinstance(keys, str) else Jwks(keys=keys)("file").decode())
    os.utime(path, (mtime, mtime))


def test_a_jwks_file_is_reread_when_it_changes(rsa: SigningKey, tmp_path: Path) -> None:
    path, clock = tmp_path / "jwks.json", Clock()
    write_jwks(path, [rsa.jwk()], NOW)
    oidc = OidcAuthenticator(issuer=ISSUER, audience=AUDIENCE, jwks_file=path, clock=clock,
                             jwks_cache_seconds=CACHE)
    assert oidc.authenticate(rsa.sign(claims())).subject == "alice"
    new = rsa_key("rsa-2")
    write_jwks(path, [new.jwk()], NOW + 60)
    assert oidc.authenticate(new.sign(claims())).subject == "alice"
    refused(oidc, rsa.sign(claims()), "unknown_key")
    write_jwks(path, "{not json", NOW + 120)  # a broken file: the keys read before stay
    assert oidc.authenticate(new.sign(claims())).subject == "alice"
    clock.advance(CACHE - 1)
    token = new.sign(claims(exp=int(NOW + 2 * CACHE)))
    assert oidc.authenticate(token).subject == "alice"
    clock.advance(1)
    refused(oidc, token, "jwks_unavailable")
    write_jwks(path, [new.jwk()], NOW + 180)
    assert oidc.authenticate(token).subject == "alice"
    path.unlink()
    clock.advance(CACHE - 1)
    assert oidc.authenticate(token).subject == "alice"
    clock.advance(1)
    refused(oidc, token, "jwks_unavailable")


def test_an_unchanged_file_keeps_its_keys_current(rsa: SigningKey, tmp_path: Path) -> None:
    path, clock = tmp_path / "jwks.json", Clock()
    write_jwks(path, [rsa.jwk()], NOW)
    oidc = OidcAuthenticator(issuer=ISSUER, audience=AUDIENCE, jwks_file=path, clock=clock,
                             jwks_cache_seconds=CACHE)
    token = rsa.sign(claims(exp=int(NOW + 10 * CACHE)))
    for _ in range(5):
        clock.advance(CACHE - 1)
        assert oidc.authenticate(token).subject == "alice"


# Configuration.

def test_from_settings(rsa: SigningKey, jwks: Jwks) -> None:
    assert OidcAuthenticator.from_settings(Settings()) is None
    with pytest.raises(ValueError, match="SSOT_OIDC_AUDIENCE"):
        OidcAuthenticator.from_settings(Settings(oidc_issuer=ISSUER, oidc_jwks_url=JWKS_URL))
    with pytest.raises(ValueError, match="SSOT_OIDC_ISSUER"):
        OidcAuthenticator.from_settings(Settings(oidc_audience=AUDIENCE))
    with pytest.raises(ValueError, match="exactly one"):
        OidcAuthenticator.from_settings(Settings(oidc_issuer=ISSUER, oidc_audience=AUDIENCE))
    settings = Settings(oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks_url=JWKS_URL,
                        oidc_groups_claim="roles", oidc_algorithms="RS256")
    oidc = OidcAuthenticator.from_settings(settings, clock=Clock(), fetch=jwks)
    assert oidc is not None and oidc.algorithms == {"RS256"}
    assert oidc.authenticate(rsa.sign(claims(roles="x"))).groups == {"x"}
    assert settings.as_environment()["SSOT_OIDC_ALGORITHMS"] == "RS256"


@pytest.mark.parametrize("url", ["http://idp.example.test/certs", "ftp://127.0.0.1/jwks",
                                 "https:///no-host", "file:///etc/jwks.json"])
def test_keys_are_fetched_over_https_or_from_loopback_only(jwks: Jwks, url: str) -> None:
    with pytest.raises(ValueError, match="https"):
        make(jwks, jwks_url=url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/jwks", "http://[::1]/jwks",
                                 "http://localhost/jwks", JWKS_URL])
def test_loopback_http_and_https_urls_are_accepted(jwks: Jwks, url: str) -> None:
    make(jwks, jwks_url=url)


def test_an_authentication_failure_names_a_known_reason() -> None:
    with pytest.raises(ValueError):
        AuthenticationFailed("nope", "x")  # type: ignore[arg-type]
    error = AuthenticationFailed("revoked", "the token was revoked")
    assert (error.reason, error.message, str(error)) == ("revoked", "the token was revoked",
                                                         "the token was revoked")


def test_the_api_builds_its_authenticator_from_the_settings(jwks: Jwks) -> None:
    assert oidc_authenticator(Settings()) is None
    with pytest.raises(ValueError, match="SSOT_OIDC_ISSUER"):
        oidc_authenticator(Settings(oidc_jwks_url=JWKS_URL))
    built = oidc_authenticator(Settings(oidc_issuer=ISSUER, oidc_audience=AUDIENCE,
                                        oidc_jwks_url=JWKS_URL))
    assert isinstance(built, OidcAuthenticator) and built.issuer == ISSUER
