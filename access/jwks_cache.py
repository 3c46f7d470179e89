"""Where the issuer's keys come from and how long they are trusted: a JWKS URL
(``RemoteKeys``) or a JWKS file (``FileKeys``). Both answer ``key_for(kid, alg)`` with a
key or an ``AuthenticationFailed`` (``unknown_key``, ``jwks_unavailable``), and both are
safe to call from many threads at once.

A URL's keys are fetched on first use, then again:

- when a token names a ``kid`` the cached set lacks (key rotation needs no restart), and
- when the cached set is older than half of ``cache_seconds`` (ahead of its expiry);

never more often than once per ``min_refresh_seconds``, whatever tokens arrive. If a fetch
fails, the keys of the last successful one stay usable until ``cache_seconds`` after it;
then every token fails closed with ``jwks_unavailable`` until a fetch succeeds again.

Only a refresh does I/O: a token whose key is cached and fresh costs a dict scan and a
signature check. ``key_for(..., may_fetch=False)`` never fetches: where it would, it raises
``FetchNeeded`` (the async edge then calls again in a worker thread).

A file is re-read when its modification time, size or inode changes (checked with one
``stat`` per call). While it cannot be read or parsed, the keys last read from it stay
usable for ``cache_seconds``, then tokens fail closed as for a URL."""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from .errors import AuthenticationFailed
from .jwks import KeySet, VerificationKey, parse_key_set

log = logging.getLogger(__name__)

#: Longest wait for the JWKS endpoint, and the largest key set read from it.
FETCH_TIMEOUT = 5.0
MAX_JWKS_BYTES = 1024 * 1024


class FetchNeeded(Exception):
    """``key_for(..., may_fetch=False)`` would have to fetch the key set to answer."""


def http_get(url: str) -> bytes:
    """The default fetch: one GET, no redirects, done within ``FETCH_TIMEOUT`` (a server
    dripping bytes included), at most ``MAX_JWKS_BYTES``; an error status raises."""
    import httpx  # here: only a service that fetches keys needs it (with its CLI's imports,
    # ~10 MB of each HTTP worker's memory)

    deadline = time.monotonic() + FETCH_TIMEOUT
    with httpx.stream("GET", url, timeout=FETCH_TIMEOUT, follow_redirects=False,
                      headers={"Accept": "application/jwk-set+json, application/json"}
                      ) as response:
        response.raise_for_status()
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError(f"the key set is larger than {MAX_JWKS_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the key set took longer than {FETCH_TIMEOUT} s")
    return bytes(body)


def check_jwks_url(url: str) -> str:
    """``url`` if keys may be fetched from it: https, or plain http to a loopback address
    (a key set read over the network in clear could be replaced on the way)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return url
    raise ValueError("SSOT_OIDC_JWKS_URL must be an https:// URL (http:// only to a "
                     "loopback address)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unavailable() -> AuthenticationFailed:
    return AuthenticationFailed("jwks_unavailable", "the identity provider's signing keys "
                                "could not be fetched and no cached keys are usable")


def unknown_key(kid: str | None, algorithm: str) -> AuthenticationFailed:
    named = "names no key id" if kid is None else f"names key id {kid[:64]!r}"
    return AuthenticationFailed("unknown_key", f"the token {named}, and the identity "
                                f"provider publishes no usable {algorithm} key for it")


@dataclass(frozen=True)
class _Cached:
    """What a source knows; replaced whole (never changed) so readers need no lock."""

    keys: KeySet | None = None
    #: When the keys were last fetched (or, for a file, last seen unchanged).
    fetched_at: float | None = None
    #: When a fetch was last tried, successful or not (the rate limit).
    attempted_at: float | None = None

    def usable(self, now: float, cache_seconds: float) -> KeySet | None:
        if self.keys is None or self.fetched_at is None:
            return None
        return self.keys if now - self.fetched_at < cache_seconds else None


def _answer(cached: _Cached, now: float, cache_seconds: float, kid: str | None,
            algorithm: str) -> VerificationKey:
    keys = cached.usable(now, cache_seconds)
    if keys is None:
        raise unavailable()
    key = keys.find(kid, algorithm)
    if key is None:
        raise unknown_key(kid, algorithm)
    return key


def _log_dropped(source: str, keys: KeySet) -> None:
    for why in keys.dropped:
        log.warning("JWKS %s: ignoring %s", source, why)


class RemoteKeys:
    """The key set at a URL, cached (see the module's docstring)."""

    def __init__(self, url: str, *, cache_seconds: float, min_refresh_seconds: float,
                 clock: Callable[[], float], fetch: Callable[[str], bytes] = http_get) -> None:
        self.url = check_jwks_url(url)
        self._cache_seconds = cache_seconds
        self._refresh_after = cache_seconds / 2
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._fetch = fetch
        self._cached = _Cached()
        self._lock = threading.Lock()

    def key_for(self, kid: str | None, algorithm: str, *, may_fetch: bool = True
                ) -> VerificationKey:
        seen, now = self._cached, self._clock()
        keys = seen.usable(now, self._cache_seconds)
        key = keys.find(kid, algorithm) if keys is not None else None
        stale = seen.fetched_at is None or now - seen.fetched_at >= self._refresh_after
        if (key is None or stale) and self._may_attempt(seen, now):
            if not may_fetch:
                raise FetchNeeded
            # A token that cannot be checked without a fetch waits for one (another
            # thread's, if it is already fetching); one with a usable key does not.
            self._refresh(seen, wait=key is None)
            seen, now = self._cached, self._clock()
        return _answer(seen, now, self._cache_seconds, kid, algorithm)

    def _may_attempt(self, cached: _Cached, now: float) -> bool:
        last = cached.attempted_at
        # A clock set back must not stop refreshes until it catches up again.
        return last is None or now - last >= self._min_refresh or now < last

    def _refresh(self, seen: _Cached, *, wait: bool) -> None:
        if not self._lock.acquire(blocking=wait):
            return
        try:
            if self._cached is not seen:  # another thread refreshed (or tried) meanwhile
                return
            now = self._clock()
            try:
                keys = parse_key_set(self._fetch(self.url))
            except Exception as error:  # any failure of the fetch is "unreachable"
                self._cached = replace(seen, attempted_at=now)
                log.warning("JWKS %s could not be fetched (%s: %s); cached keys stay "
                            "usable until %.0f s after the last successful fetch",
                            self.url, type(error).__name__, error, self._cache_seconds)
                return
            _log_dropped(self.url, keys)
            self._cached = _Cached(keys=keys, fetched_at=now, attempted_at=now)
        finally:
            self._lock.release()


@dataclass(frozen=True)
class _FileVersion:
    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, stat: os.stat_result) -> _FileVersion:
        return cls(stat.st_mtime_ns, stat.st_size, stat.st_ino)


class FileKeys:
    """The key set in a file, re-read when it changes (see the module's docstring)."""

    def __init__(self, path: Path, *, cache_seconds: float,
                 clock: Callable[[], float]) -> None:
        self.path = path
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cached = _Cached()
        #: The file version the cached keys were read from, and the last version read
        #: at all (a broken file is not re-read until it changes again).
        self._loaded: _FileVersion | None = None
        self._tried: _FileVersion | None = None
        self._unreadable = False  # logged once per outage, not once per request
        self._lock = threading.Lock()

    def key_for(self, kid: str | None, algorithm: str, *, may_fetch: bool = True
                ) -> VerificationKey:
        """``may_fetch`` is accepted for symmetry with ``RemoteKeys``: a local file is
        always read when it changes."""
        self._check()
        return _answer(self._cached, self._clock(), self._cache_seconds, kid, algorithm)

    def _check(self) -> None:
        now = self._clock()
        try:
            version = _FileVersion.of(self.path.stat())
        except OSError as error:
            if not self._unreadable:
                self._unreadable = True
                log.warning("JWKS file %s cannot be read (%s); the keys read before stay "
                            "usable for %.0f s", self.path, error, self._cache_seconds)
            return
        self._unreadable = False
        with self._lock:
            if version == self._loaded:
                self._cached = replace(self._cached, fetched_at=now, attempted_at=now)
                return
            if version == self._tried:
                return
            self._tried = version
            try:
                keys = parse_key_set(self.path.read_bytes())
            except (OSError, ValueError) as error:
                log.warning("JWKS file %s is not a usable key set (%s); the keys read "
                            "before stay usable for %.0f s", self.path, error,
                            self._cache_seconds)
                return
            _log_dropped(str(self.path), keys)
            self._loaded = version
            self._cached = _Cached(keys=keys, fetched_at=now, attempted_at=now)
