"""Secrets out of what is printed and logged: ``redact_url`` replaces every password of a
database or NATS URL, or of a libpq ``key=value`` connection string, with ``***``.

It takes any text, not only a lone URL, so error messages that may quote a connection
string go through it as well::

    postgresql://ssot:s3cret@127.0.0.1:5432/ssot  ->  postgresql://ssot:***@127.0.0.1:5432/ssot
    nats://ssot:s3cret@127.0.0.1:4222             ->  nats://ssot:***@127.0.0.1:4222
    nats://s3cret-token@127.0.0.1:4222            ->  nats://***@127.0.0.1:4222
    host=db user=ssot password=s3cret dbname=ssot ->  host=db user=ssot password=*** dbname=ssot
    postgresql://db/ssot?password=s3cret&x=1      ->  postgresql://db/ssot?password=***&x=1

A NATS URL's user without a password is a token (``nats://<token>@host``) and is hidden
too; a database URL's user name is kept.
"""

from __future__ import annotations

import re

REDACTED = "***"

#: ``scheme://user:password@`` or ``scheme://user@``.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*)(?::(?P<password>[^@/\s]*))?@"
)
#: ``password=…`` in a connection string or a URL's query: quoted ('…', \-escapes) or bare.
_PASSWORD_PARAMETER = re.compile(
    r"(?P<name>\b(?:ssl)?password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s&'\"]+)",
    re.IGNORECASE,
)
#: Schemes whose user alone is a secret (a NATS token).
_TOKEN_SCHEMES = ("nats://", "tls://", "ws://", "wss://")


def _userinfo(match: re.Match[str]) -> str:
    scheme, user = match["scheme"], match["user"]
    if match["password"] is not None:
        return f"{scheme}{user}:{REDACTED}@"
    if scheme.lower() in _TOKEN_SCHEMES and user:
        return f"{scheme}{REDACTED}@"
    return match.group(0)


def redact_url(url: str) -> str:
    """``url`` (or any text holding URLs and connection strings) with every password, and
    every NATS token, replaced by ``***``."""
    text = _USERINFO.sub(_userinfo, url)
    return _PASSWORD_PARAMETER.sub(lambda m: m["name"] + REDACTED, text)
