"""NATS subjects of entries: ``<prefix>.<namespace>.<key tokens>``, reversibly encoded.

A key's ``/``-separated segments become subject tokens, so a subscriber can filter a
namespace (``ssot.config.>``), a folder (``ssot.config.services.>``) or one key. NATS
forbids ``.``, ``*``, ``>`` and whitespace inside a token; every character of a segment
outside ``[A-Za-z0-9_-]`` is written ``%XX`` (its UTF-8 bytes in upper-case hex), so
``services/payments/db.url`` in namespace ``config`` is ``ssot.config.services.payments.db%2Eurl``.
"""

from __future__ import annotations

import re

_SAFE = re.compile(r"[A-Za-z0-9_-]")
_ALL_SAFE = re.compile(r"[A-Za-z0-9_-]*")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def encode_token(segment: str) -> str:
    if _ALL_SAFE.fullmatch(segment):  # most are: one match, not one per character
        return segment
    return "".join(
        ch if _SAFE.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode())
        for ch in segment
    )


def decode_token(token: str) -> str:
    return bytes.fromhex("".join(
        part if i % 2 else part.encode().hex()
        for i, part in enumerate(_ESCAPE.split(token))
    )).decode()


def entry_subject(prefix: str, namespace: str, key: str) -> str:
    """The subject of an entry's events."""
    return ".".join([prefix, encode_token(namespace), *map(encode_token, key.split("/"))])


def parse_subject(prefix: str, subject: str) -> tuple[str, str]:
    """(namespace, key) of an entry subject; ValueError if it is not one."""
    tokens = subject.split(".")
    if len(tokens) < 3 or tokens[0] != prefix:
        raise ValueError(f"{subject!r} is not an entry subject under {prefix!r}")
    return decode_token(tokens[1]), "/".join(decode_token(t) for t in tokens[2:])


def namespace_filter(prefix: str, namespace: str, key_prefix: str = "") -> str:
    """A subscription filter for a namespace, or a folder of keys in it (``a/b/``)."""
    folder = [encode_token(s) for s in key_prefix.strip("/").split("/") if s]
    return ".".join([prefix, encode_token(namespace), *folder, ">"])
