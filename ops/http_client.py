"""The ledger's HTTP API as the ``ssot`` commands call it: a client whose failures exit
with the command line's codes (a problem response, RFC 9457, as its one-line error), the
entries' paths and the headers of a conditional, reasoned, idempotent write."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import click
import httpx

from .console import EXIT_UNAVAILABLE, exit_code_of_status, fail
from .credentials import read_admin_token


class Client:
    def __init__(self, url: str, timeout: float = 30.0, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers,
                                 verify=_tls_of(url))

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        response = self._send(method, path, **kw)
        fail_on_problem(response)
        return response

    def answer(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The answer, a problem too (for a command that shows more of one than its
        one-line error); an unreachable server exits 5 as ``call`` does."""
        return self._send(method, path, **kw)

    def get_unless(self, path: str, code: str) -> httpx.Response | None:
        """GET ``path``; None when it is ``404`` with problem ``code`` (what was asked for
        does not exist, and the command has an answer for that)."""
        response = self._send("GET", path)
        if response.status_code == 404 and _problem_code(response) == code:
            return None
        fail_on_problem(response)
        return response

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kw: Any) -> Iterator[httpx.Response]:
        """A streamed answer (not read yet), once it is no problem; a server that cannot
        be reached, or that drops the stream, exits 5 as ``call`` does."""
        try:
            with self.http.stream(method, path, **kw) as response:
                if response.status_code >= 400:
                    response.read()
                    fail_on_problem(response)
                yield response
        except httpx.TransportError as e:
            self.unreachable(e)

    def unreachable(self, error: httpx.HTTPError) -> NoReturn:
        fail(EXIT_UNAVAILABLE, "unreachable", f"{self.http.base_url}: {error}")

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            self.unreachable(e)


def _tls_of(url: str) -> ssl.SSLContext | bool:
    """How a client of ``url`` verifies TLS: for https, httpx's default (the system's CA
    store, or SSL_CERT_FILE / SSL_CERT_DIR); for plain http, a context that trusts no
    certificate at all. Such a client never uses TLS (its requests go to ``url`` and it
    follows no redirect), and reading a CA bundle costs each command ~30 ms of CPU."""
    if urlsplit(url).scheme.lower() == "https":
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, with nothing to trust


def _problem_code(response: httpx.Response) -> str | None:
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None


def token_of(ctx: click.Context) -> str | None:
    """The bearer token of this command: ``--token`` / ``SSOT_TOKEN``, else the admin token
    kept in the data dir."""
    token: str | None = ctx.obj.get("token")
    if token:
        return token
    # only here: reading the settings costs a command ~0.1 s of CPU (pydantic-settings)
    from nexus_ssot.ledger.settings import Settings

    return read_admin_token(Settings().data_dir)


def client_of(ctx: click.Context) -> Client:
    """A client of the API at the ``--url`` given to ``ssot``, with its bearer token."""
    return Client(ctx.obj["url"], token=token_of(ctx))


def fail_on_problem(response: httpx.Response) -> None:
    """Exit with the one-line error of a problem response (RFC 9457)."""
    if response.status_code < 400:
        return
    try:
        problem = response.json()
        code, detail = problem.get("code", "error"), problem.get("detail", response.text)
    except ValueError:
        code, detail = f"http_{response.status_code}", response.text.strip()
    fail(exit_code_of_status(response.status_code), code, detail)


def split_address(address: str) -> tuple[str, str]:
    namespace, sep, key = address.partition("/")
    if not sep or not namespace or not key:
        raise click.BadParameter(f"{address!r} is not NAMESPACE/KEY", param_hint="ADDRESS")
    return namespace, key


def entry_path(namespace: str, key: str) -> str:
    return f"/v1/namespaces/{quote(namespace, safe='')}/entries/{quote(key, safe='/')}"


def namespace_path(namespace: str) -> str:
    return f"/v1/namespaces/{quote(namespace, safe='')}"


def write_headers(if_match: int | None, reason: str | None, idempotency_key: str | None,
                  if_none_match: bool = False) -> dict[str, str]:
    headers: dict[str, str] = {}
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    if if_none_match:
        headers["If-None-Match"] = "*"
    if reason:
        headers["X-Reason"] = reason
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def pages(client: Client, path: str, params: dict[str, Any], limit: int | None) -> list[Any]:
    """The items of a paged listing, following its cursors (up to ``limit`` items)."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page_params = {**params, **({"cursor": cursor} if cursor else {})}
        data = client.call("GET", path, params=page_params).json()
        items.extend(data["items"])
        cursor = data["next_cursor"]
        if cursor is None or (limit is not None and len(items) >= limit):
            return items[:limit] if limit is not None else items


def coordinates(version: int | None = None, as_of: str | None = None,
                position: int | None = None, min_position: int | None = None
                ) -> dict[str, Any]:
    """The query parameters of a read at a past point, or of one that must include a
    position (those given)."""
    given = {"version": version, "as_of": as_of, "position": position,
             "min_position": min_position}
    return {k: v for k, v in given.items() if v is not None}
