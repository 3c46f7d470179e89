"""Configuration, read once from the environment (prefix ``SSOT_``) into a frozen object.

Nothing else in the project reads ``os.environ``. Unset URLs mean "embedded": ``ssot serve``
and the test suite start PostgreSQL and NATS from PyPI wheels in ``data_dir``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .documents import Limits

#: The JWT signature algorithms ``oidc_algorithms`` may name: asymmetric only. HMAC
#: (``HS*``) and ``none`` are refused whatever the configuration (docs/access-oidc.md).
ASYMMETRIC_JWT_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "ES256K", "EdDSA",
})
#: The default allow-list: all of them but ES256K (secp256k1, rare outside blockchains).
DEFAULT_JWT_ALGORITHMS = ASYMMETRIC_JWT_ALGORITHMS - {"ES256K"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SSOT_", frozen=True, extra="ignore")

    #: libpq URL of the PostgreSQL database; unset = embedded PostgreSQL in ``data_dir``.
    database_url: str | None = None
    #: libpq URL of a read replica of that database: reads of entries go there when it
    #: has replayed the position they name (``min_position``), else to the primary
    #: (api/read_replica.py); unset = every read on the primary.
    read_database_url: str | None = None
    #: Longest a read waits for the replica to replay its ``min_position`` before the
    #: primary serves it (seconds).
    read_replica_wait_seconds: float = Field(default=0.5, ge=0, le=10)
    #: NATS URL; unset = embedded nats-server with JetStream in ``data_dir``.
    nats_url: str | None = None
    #: Where the embedded servers keep their data.
    data_dir: Path = Path(".ssot")
    http_host: str = "127.0.0.1"
    #: Addresses of reverse proxies whose ``X-Forwarded-For`` / ``X-Forwarded-Proto``
    #: name the client (comma list, ``*`` for any); empty = trust none, so a client cannot
    #: choose the source address the access log and the per-address rate limit see.
    forwarded_allow_ips: str = ""
    #: Serve HTTPS with this certificate (PEM, its chain after it) and private key.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: With HTTPS, require a client certificate signed by this CA bundle (mutual TLS): a
    #: network gate in front of the bearer token, which every request still needs.
    tls_client_ca: Path | None = None
    http_port: int = Field(default=8080, ge=0, le=65535)
    #: HTTP worker processes (they all send their writes to the one writer process).
    http_workers: int = Field(default=2, ge=1, le=64)
    #: Seconds a client has to send a request's head (request line and headers), from
    #: opening the connection or from the first byte of a kept-alive connection's next
    #: request; then the connection is closed (a slow client holds a socket no longer).
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    #: Seconds a client has to send a request's body once its head has arrived.
    http_body_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)

    #: Largest accepted document (bytes of its compact JSON encoding) and request body.
    max_document_bytes: int = Field(default=1024 * 1024, ge=1)
    #: Deepest accepted nesting of objects/arrays.
    max_depth: int = Field(default=32, ge=1)
    #: Namespaces whose documents may be any JSON value (others: objects only).
    scalar_namespaces: Annotated[frozenset[str], NoDecode] = frozenset()
    #: A write into a namespace that does not exist yet creates it (True), or is refused
    #: until ``PUT /v1/namespaces/{ns}`` has created it (False: set it so in production,
    #: where a misspelt namespace should fail, not appear).
    implicit_namespaces: bool = True

    #: Authentication and authorisation: "on" (every request but health and the
    #: published documents needs a token) or "off" (every caller may do everything; only
    #: accepted when ``http_host`` is a loopback address).
    auth: Literal["on", "off"] = "on"
    #: SHA-256 (hex) of a bootstrap admin token handed in by the deployment; ``ssot serve``
    #: otherwise keeps one in ``<data_dir>/admin-token`` (made on first start).
    bootstrap_token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    #: Identities (``user:…``, ``token:…``, ``group:…``) whose ``X-Actor`` header names the
    #: end user they act for; the event records both.
    trusted_proxies: Annotated[frozenset[str], NoDecode] = frozenset()
    #: How often each HTTP worker re-reads policies and tokens when they changed (seconds):
    #: a revocation or a policy change takes effect everywhere within this delay.
    access_refresh_seconds: float = Field(default=0.25, gt=0, le=1)

    #: Identity recorded as the actor when auth is off and the request carries none.
    default_actor: str = "anonymous"
    #: With auth off, accept the ``X-Actor`` header as the actor.
    trust_actor_header: bool = False

    #: Connections in the read pool (async) and the size of the thread pool for sync calls.
    pool_size: int = Field(default=8, ge=1)
    #: Most write commands the writer puts in one transaction.
    max_batch: int = Field(default=256, ge=1)
    #: Operations one ``POST /v1/batch`` may carry (all applied in one transaction).
    max_batch_operations: int = Field(default=1000, ge=1)
    #: Largest ``POST /v1/batch`` body.
    max_batch_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: Entries one namespace restore may change (all in one transaction); a larger
    #: restore is refused and can be split by key_prefix.
    max_restore_operations: int = Field(default=10_000, ge=1)
    #: Chain every event to its stream's previous one by hash (see ledger/chain.py).
    #: Off only to measure what it costs: unchained events fail ``ssot verify``.
    hash_chain: bool = True
    #: Entry states the writer keeps in memory to decide without a read, and about how
    #: much memory they may take (each weighed by its document's encoding, ``decider``).
    state_cache_size: int = Field(default=100_000, ge=0)
    state_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    #: Seconds a write waits for the store before answering 503.
    write_timeout: float = Field(default=10.0, gt=0)
    #: Seconds an idempotency key answers a retry with the first answer (7 days), after
    #: which ``ssot serve`` purges it and the same key is a new request; the purge runs
    #: every ``idempotency_purge_every_seconds`` (ledger/idempotency_retention.py).
    idempotency_retention_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    idempotency_purge_every_seconds: float = Field(default=60.0, gt=0, le=86_400)

    #: ``ssot serve`` runs the writer as its own process (False: a thread in each worker).
    writer_process: bool = True
    #: Unix socket of a running writer process; set, the API sends its writes there.
    writer_socket: str | None = None

    #: Seconds the followers of the log (broadcaster, views, digester: ``ssot serve``'s,
    #: and ``ssot broadcast``, ``ssot project`` and ``ssot digest``) let the commits after
    #: one they read gather before reading again: under a steady stream they read,
    #: publish and fold several commits per wake-up instead of one.
    #: It adds at most this to a commit's broadcast, and nothing to a commit that comes
    #: after a quiet moment; 0 reads every commit as it comes (docs/performance.md).
    followers_gather_seconds: float = Field(default=0.002, ge=0, le=0.1)
    #: How much lower than the rest of ``ssot serve`` its followers' thread runs (added to
    #: its nice value; 0 to 19): when the cores are short the writes' path gets them
    #: first, and the followers, further behind, read longer ranges, which cost less per
    #: event, for later broadcasts and views. 0, the default, runs them at the server's
    #: own priority (docs/operations.md).
    followers_nice: int = Field(default=0, ge=0, le=19)
    #: ``ssot serve`` runs the broadcaster (NATS JetStream) as one of its processes.
    broadcast: bool = True
    #: ``ssot serve`` keeps the asynchronous views current (False: run ``ssot project``).
    projections: bool = True
    #: Longest a read of an asynchronous view waits for ``min_position`` (seconds).
    view_wait_timeout: float = Field(default=2.0, ge=0, le=60)
    #: JetStream stream the broadcaster publishes to, and the subject prefix (``ssot.>``).
    nats_stream: str = "SSOT"
    nats_subject_prefix: str = Field(default="ssot", pattern=r"^[A-Za-z0-9_-]+$")
    #: Copies of each JetStream stream and KV bucket the ledger makes (its events, its
    #: digests, the KV mirror's buckets): 3 on a three-node NATS cluster, so losing one
    #: node loses nothing. Streams that exist already keep what their operator set.
    nats_replicas: int = Field(default=1, ge=1, le=5)
    #: Broadcasters with one name share one tracked position and one leader.
    broadcaster_name: str = "default"
    #: JetStream's duplicate window (seconds): it must outlast the broadcaster's longest
    #: restart; beyond it a republished event would be stored twice.
    nats_duplicate_window: float = Field(default=600.0, gt=0)
    #: Mirror every entry's current document into JetStream key-value buckets (the
    #: ``nats_kv_mirror`` view; it runs where the views run, when NATS is configured).
    kv_mirror: bool = True
    #: Each namespace's bucket is named this prefix + the namespace (``ssot_config``).
    kv_bucket_prefix: str = Field(default="ssot_", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    #: ``ssot serve`` records digests of the log (integrity/digests/) and, when it
    #: broadcasts, publishes them on NATS (stream ``<nats_stream>_DIGESTS``).
    digests: bool = True
    #: A digest after this many new events, or this many seconds after the previous
    #: one when there is a new event at all.
    digest_every_events: int = Field(default=1000, ge=1, le=1_000_000)
    digest_every_seconds: float = Field(default=60.0, gt=0, le=86_400)
    #: Ed25519 private key (PKCS#8 PEM) signing the digests; unset = unsigned digests.
    signing_key_file: Path | None = None
    #: ``GET /metrics``: count writes per namespace too (a ``namespace`` label), for at
    #: most ``metrics_namespace_limit`` namespaces per process (the rest as ``_other``).
    metrics_namespace_labels: bool = False
    metrics_namespace_limit: int = Field(default=100, ge=1, le=10_000)
    #: The folder where each process of ``ssot serve`` keeps what it counts for ``GET
    #: /metrics`` (prometheus-client's multiprocess mode); set by ``ssot serve`` (a folder
    #: of the data dir it owns, emptied at start), not by hand. Unset: one process.
    metrics_dir: Path | None = None

    #: Requests per second (sustained) and at once (burst) one authenticated user may make,
    #: unless a policy's ``rate_limits`` names it; 0 per second = no default limit. Each
    #: HTTP worker process counts on its own (see api/rate_limit.py).
    rate_limit_per_second: float = Field(default=100, ge=0)
    rate_limit_burst: float = Field(default=200, ge=1)
    #: The same for requests without a (valid) identity, counted per source address.
    rate_limit_anonymous_per_second: float = Field(default=20, ge=0)
    rate_limit_anonymous_burst: float = Field(default=40, ge=1)
    #: Most rate-limit buckets (users and addresses) one worker keeps (least recently used
    #: dropped first).
    rate_limit_max_keys: int = Field(default=100_000, ge=1)

    #: OIDC bearer tokens (access/oidc.py): the issuer (``iss``) a JWT must name exactly;
    #: unset = OIDC off.
    oidc_issuer: str | None = None
    #: The audience a JWT's ``aud`` (a string or a list) must contain exactly: this
    #: service's client id at the identity provider.
    oidc_audience: str | None = None
    #: Where the issuer publishes its signing keys (a JWKS): https, or http to loopback only.
    oidc_jwks_url: str | None = None
    #: Or a JWKS file, re-read when it changes (air-gapped setups); set one of the two.
    oidc_jwks_file: Path | None = None
    #: The claim naming the caller (a non-empty string) and the claim listing its groups.
    oidc_subject_claim: str = Field(default="sub", min_length=1)
    oidc_groups_claim: str = Field(default="groups", min_length=1)
    #: The identity provider's group whose members are this ledger's administrators (the
    #: break-glass group ``admins``); unset = none. A provider's own group named ``admins``
    #: grants nothing: whoever can create groups there must not become a superuser here.
    oidc_admin_group: str | None = None
    #: Signature algorithms a JWT may use (comma list): asymmetric only, never HS* or none.
    oidc_algorithms: Annotated[frozenset[str], NoDecode] = DEFAULT_JWT_ALGORITHMS
    #: Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
    oidc_leeway: float = Field(default=30.0, ge=0, le=300)
    #: How long fetched keys stay usable when the JWKS cannot be reached (seconds after
    #: the last successful fetch); then tokens fail closed (``jwks_unavailable``).
    oidc_jwks_cache_seconds: float = Field(default=3600.0, gt=0)
    #: Fewest seconds between two JWKS fetches (an unknown ``kid`` asks for one).
    oidc_jwks_min_refresh_seconds: float = Field(default=10.0, ge=0)

    #: Access log (access/log.py), per HTTP worker process: at most this many records
    #: stored per second for one (decision, client address, reason); the rest are counted
    #: and stored as one summary record per second.
    access_log_max_per_second: int = Field(default=50, ge=1, le=100_000)
    #: Records a worker keeps queued for the access log (while PostgreSQL is slow or
    #: down); beyond it they are dropped, counted, and a summary record is stored.
    access_log_queue: int = Field(default=10_000, ge=1, le=10_000_000)

    #: OpenTelemetry span exporter: "none", "console" or "otlp" (OTLP/HTTP, configured by
    #: the standard ``OTEL_EXPORTER_OTLP_*`` variables, which the exporter reads itself;
    #: sampling by ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, read by the SDK).
    #: docs/tracing.md.
    otel_exporter: str = "none"
    #: The OTLP protocol asked for (``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else
    #: ``OTEL_EXPORTER_OTLP_PROTOCOL``): only ``http/protobuf`` is served. Not passed on
    #: as an ``SSOT_`` variable: child processes inherit the OTEL ones.
    otel_exporter_otlp_protocol: str = Field(
        default="http/protobuf", exclude=True,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                      "OTEL_EXPORTER_OTLP_PROTOCOL"))
    service_name: str = "nexus-ssot"

    @property
    def max_request_bytes(self) -> int:
        """Largest request body read (pretty-printed JSON is larger than its compact form)."""
        return 4 * self.max_document_bytes + 64 * 1024

    def as_environment(self) -> dict[str, str]:
        """These settings as ``SSOT_*`` variables, for child processes to read back."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if isinstance(value, frozenset):
                value = ",".join(sorted(value))
            env[f"SSOT_{name.upper()}"] = str(value)
        return env

    def limits(self, namespace: str) -> Limits:
        """What a document of ``namespace`` may be."""
        return Limits(
            max_document_bytes=self.max_document_bytes,
            max_depth=self.max_depth,
            allow_non_object=namespace in self.scalar_namespaces,
        )

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> Settings:
        if self.auth == "off" and not is_loopback(self.http_host):
            raise ValueError(
                f"SSOT_AUTH=off is accepted only on a loopback address, not on "
                f"SSOT_HTTP_HOST={self.http_host}: anyone who can reach it could rewrite "
                "every record. Keep auth on (the default) or listen on 127.0.0.1")
        return self

    @field_validator("scalar_namespaces", "trusted_proxies", "oidc_algorithms", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric(cls, value: frozenset[str]) -> frozenset[str]:
        refused = sorted(value - ASYMMETRIC_JWT_ALGORITHMS)
        if refused:
            raise ValueError(f"{refused[0]!r} is not an allowed JWT algorithm; allowed: "
                             f"{', '.join(sorted(ASYMMETRIC_JWT_ALGORITHMS))}")
        if not value:
            raise ValueError("name at least one JWT algorithm")
        return value
