"""The ``ssot`` commands' HTTP client: TLS verified for https, no CA store read for http."""

from __future__ import annotations

import ssl

import click
import pytest

from nexus_ssot.ops.http_client import _tls_of, token_of


def test_https_is_verified_against_the_default_store() -> None:
    assert _tls_of("https://ledger.example") is True
    assert _tls_of("HTTPS://ledger.example:8443/base") is True


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "HTTP://ledger.example"])
def test_a_plain_http_client_reads_no_ca_bundle_and_trusts_nothing(url: str) -> None:
    plain = _tls_of(url)
    assert isinstance(plain, ssl.SSLContext)
    assert plain.verify_mode == ssl.CERT_REQUIRED and plain.check_hostname
    assert plain.cert_store_stats()["x509_ca"] == 0


def test_a_given_token_is_used_as_it_is() -> None:
    ctx = click.Context(click.Command("x"), obj={"token": "ssot_abc"})
    assert token_of(ctx) == "ssot_abc"
