"""HTTPS and mutual TLS: ``ssot serve`` with a certificate answers over TLS only; with a
client CA it refuses a connection without a client certificate that CA signed, and a
request still needs its bearer token."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.integration.conftest import AUTH, free_port


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def serve_tls(env: dict[str, str], port: int, verify: ssl.SSLContext,
              timeout: float = 90) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ssot"), "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/v1/health", verify=verify, timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError((proc.stdout.read() if proc.stdout else b"").decode())
        time.sleep(0.1)


@pytest.fixture(params=["1", "2"], ids=["one worker", "two workers"])
def tls_server(request: pytest.FixtureRequest, database_url: str, ca: trustme.CA,
               tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext, trustme.LeafCert]]:
    """One worker accepts as uvicorn does; two, as ops/accepting.py does."""
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.pem"))
    port = free_port()
    env = {**os.environ, "SSOT_DATABASE_URL": database_url, "SSOT_HTTP_PORT": str(port),
           "SSOT_HTTP_WORKERS": request.param, "SSOT_BROADCAST": "false",
           "SSOT_PROJECTIONS": "false", "SSOT_DIGESTS": "false",
           "SSOT_DATA_DIR": str(tmp_path / "data"),
           "SSOT_TLS_CERT": str(tmp_path / "server.pem"),
           "SSOT_TLS_KEY": str(tmp_path / "server.key"),
           "SSOT_TLS_CLIENT_CA": str(tmp_path / "clients-ca.pem")}
    client = ca.issue_cert("deployer@example.com")
    verify = ssl.create_default_context()
    ca.configure_trust(verify)
    client.configure_cert(verify)
    proc, url = serve_tls(env, port, verify)
    try:
        yield url, verify, client
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_https_with_client_certificates(tls_server: tuple[str, ssl.SSLContext, object],
                                        ca: trustme.CA) -> None:
    url, verify, _ = tls_server
    put = httpx.put(url + "/v1/namespaces/tls/entries/k", json={"ok": True}, headers=AUTH,
                    verify=verify)
    assert put.status_code in (200, 201), put.text
    no_token = httpx.get(url + "/v1/namespaces/tls/entries/k", verify=verify)
    assert no_token.status_code == 401  # the certificate opens the door, not the ledger
    without_cert = ssl.create_default_context()
    ca.configure_trust(without_cert)
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/v1/health", verify=without_cert, timeout=5).raise_for_status()
    stranger = trustme.CA().issue_cert("mallory")
    foreign = ssl.create_default_context()
    ca.configure_trust(foreign)
    stranger.configure_cert(foreign)
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/v1/health", verify=foreign, timeout=5).raise_for_status()
    with pytest.raises(httpx.HTTPError):  # no plain HTTP on that port
        httpx.get(url.replace("https", "http") + "/v1/health", timeout=5).raise_for_status()
    # handshakes refused, connections dropped: still served, on connections kept open
    # together (with two workers, spread over both)
    clients = [httpx.Client(verify=verify, headers=AUTH) for _ in range(4)]
    try:
        for c in clients:
            assert c.get(url + "/v1/namespaces/tls/entries/k").status_code == 200
    finally:
        for c in clients:
            c.close()
