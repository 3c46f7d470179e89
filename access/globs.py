"""Globs over namespaces and keys: ``*`` matches within one ``/``-separated segment,
``**`` across segments (any number, including none). Everything else is literal.

``a/**`` matches ``a/b`` and ``a/b/c`` but not ``a`` itself; ``**`` alone matches every
key. Namespaces have no segments, so there ``*`` and ``**`` both match any name."""

from __future__ import annotations

import re
from functools import lru_cache

_ALLOWED = re.compile(r"^[A-Za-z0-9._\-/*]{1,512}$")


def check_glob(pattern: str) -> str | None:
    """Why ``pattern`` is not a glob (None when it is)."""
    if not _ALLOWED.match(pattern):
        return ("use 1-512 characters: letters, digits, '.', '_', '-', '/' and the "
                "wildcards * and **")
    if "***" in pattern:
        return "'***' is not a wildcard: use * (one segment) or ** (any segments)"
    for segment in pattern.split("/"):
        if "**" in segment and segment != "**":
            return f"'**' must be a whole segment, not part of {segment!r}"
    return None


@lru_cache(maxsize=65536)
def compile_glob(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    segments = pattern.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            # ``a/**`` — the rest, at least one character; ``**/b`` — any leading segments.
            out.append(".+" if last else "(?:[^/]+/)*")
            continue
        out.append("[^/]*".join(re.escape(part) for part in segment.split("*")))
        if not last:
            out.append("/")
    return re.compile("".join(out))


def matches(pattern: str, value: str) -> bool:
    if pattern in ("**", "*") and "/" not in value:
        return True
    if pattern == "**":
        return True
    return compile_glob(pattern).fullmatch(value) is not None


class GlobSet:
    """Several globs as one test: ``globs(value)`` is ``any(matches(p, value) for p in
    patterns)``, at the cost of a set lookup and at most one regular expression."""

    __slots__ = ("_regex", "everything", "literals")

    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self.everything = "**" in patterns
        self.literals = frozenset(p for p in patterns if "*" not in p)
        wild = sorted({p for p in patterns if "*" in p and p != "**"})
        self._regex = (re.compile("|".join(f"(?:{compile_glob(p).pattern})" for p in wild))
                       if wild else None)

    def __call__(self, value: str) -> bool:
        if self.everything or value in self.literals:
            return True
        return self._regex is not None and self._regex.fullmatch(value) is not None


def literal_prefix(pattern: str) -> str:
    """The part of ``pattern`` before its first wildcard: every match starts with it (an
    index range for listings)."""
    star = pattern.find("*")
    return pattern if star < 0 else pattern[:star]
