"""Typed settings shared by every service: read from environment variables, validated at start-up.

Each service declares one `BaseSettings` subclass combining `ServiceSettings` with the store
mixins it needs. A bad value stops the process before it binds a port, with a message naming the
variable (see `load_settings`).
"""

from __future__ import annotations

import functools
import re
import sys
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, FilePath, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_HOST_PORT = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def _check_host_port(value: str) -> str:
    match = _HOST_PORT.match(value)
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise ValueError(f"expected host:port with a port in 1..65535, got {value!r}")
    return value


PeerAddress = Annotated[str, AfterValidator(_check_host_port)]
"""A peer service address, `host:port`, as passed in `<SERVICE>_ADDR`."""

Port = Annotated[int, Field(ge=0, le=65535)]

# Default addresses of the mesh on one machine; `counterpick up` uses the same numbers.
DEFAULT_GRPC_PORTS: dict[str, int] = {
    "ingest": 50051,
    "etl": 50052,
    "model": 50053,
    "auth": 50054,
    "user": 50055,
    "draft": 50056,
}


class CommonSettings(BaseSettings):
    """Settings every process of the mesh understands (services and the edge)."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    # Where the process runs. "prod" turns conveniences that are unsafe there into start-up
    # errors (the auth service will not generate its own signing key).
    environment: Literal["dev", "test", "prod"] = "dev"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Standard OpenTelemetry variables; "none" keeps a laptop quiet when no collector runs.
    otel_service_name: str | None = None
    otel_traces_exporter: Literal["otlp", "console", "none"] | None = None
    otel_exporter_otlp_endpoint: str | None = None
    # PEM file of the certificate authority that signed the TLS certificates of the peers this
    # process calls (`open_channel`); unset, peers are called over plaintext, as inside a
    # private network.
    tls_root_cert_file: FilePath | None = None


DEFAULT_DEPLOYMENT = "counterpick"


class DeploymentSettings(BaseSettings):
    """Which deployment a process belongs to (DEPLOYMENT): the first part of every Redis key it
    reads or writes, so deployments sharing one Redis (two checkouts on a laptop, staging beside
    production) never read or overwrite each other's snapshots, drafts, cursors, sessions, quotas
    or deny list. Every process of one deployment must agree on it; `counterpick up` sets it to
    one per state directory."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    deployment: str = Field(
        default=DEFAULT_DEPLOYMENT, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
    )


@functools.cache
def deployment_from_environment() -> str:
    """DEPLOYMENT of this process (for key defaults outside a settings object)."""
    return load_settings(DeploymentSettings).deployment


class RateLimitSettings(DeploymentSettings):
    """Per-caller call quotas of a service's RPCs (services.common.rate_limit), kept in Redis.

    A draft room makes a handful of calls per pick or ban (suggestions, bans, a win estimate), a
    few picks a minute, and a WatchDraft stream counts once when it opens. 120 calls a minute
    is several times what a free user's busiest draft needs; plus and pro (overlays and bots
    that refresh on their own) get more. Anonymous calls are counted per address, which may be a
    whole LAN behind one NAT, so that quota is not tiny, only below a signed-in user's. Callers
    with the "service" role are not limited (see rate_limit.SERVICE_ROLE).
    """

    # The quotas count calls in a sliding window of this length. It is a minute in every
    # deployment, which is what the *_PER_MINUTE names say; tests shorten it to see it pass.
    rate_limit_window_seconds: float = Field(default=60.0, gt=0, le=3600)
    rate_limit_anonymous_per_minute: int = Field(default=60, ge=1)
    rate_limit_free_per_minute: int = Field(default=120, ge=1)
    rate_limit_plus_per_minute: int = Field(default=300, ge=1)
    rate_limit_pro_per_minute: int = Field(default=600, ge=1)
    # Redis key prefix; the service's name is appended, so each service keeps its own counts.
    # Unset: "<DEPLOYMENT>:rate".
    rate_limit_key_prefix: str | None = Field(default=None, min_length=1)
    # Addresses of proxies (the edge) whose x-counterpick-client-address is believed, so
    # anonymous web users are limited by their own address, not the edge's; comma-separated.
    # Empty: believe nobody. `counterpick up` trusts loopback, where its edge runs.
    rate_limit_trusted_proxies: str = ""


class ServiceSettings(CommonSettings, RateLimitSettings):
    """Where a gRPC service listens and how it stops."""

    host: str = "127.0.0.1"
    port: Port = 0
    # Prometheus exposition over HTTP; 0 disables it (tests), `counterpick up` assigns one.
    metrics_port: Port = 0
    shutdown_grace_seconds: float = Field(default=5.0, ge=0, le=300)
    # How long start-up waits for a store that is still booting before refusing to start.
    store_wait_seconds: float = Field(default=30.0, gt=0, le=600)
    # Calls in progress at once, open streams included; more are refused with RESOURCE_EXHAUSTED
    # instead of queueing without bound. Sized for long-lived streams (WatchDraft, Health/Watch).
    grpc_max_concurrent_rpcs: int = Field(default=1000, ge=1)
    # Largest message a call may send us and we send back, in bytes. Requests are small; the
    # largest responses (ReadWarehouse chunks, 1 MiB) stay well under, and gRPC clients refuse
    # anything over 4 MiB by default anyway.
    grpc_max_receive_message_bytes: int = Field(default=4 << 20, ge=1024)
    grpc_max_send_message_bytes: int = Field(default=4 << 20, ge=1024)
    # TLS on the gRPC port: the PEM certificate chain and its private key. Unset, the port is
    # plaintext (the mesh's private network, tests). With TLS_CLIENT_CA_FILE as well, every
    # client must present a certificate that CA signed (mutual TLS).
    tls_cert_file: FilePath | None = None
    tls_key_file: FilePath | None = None
    tls_client_ca_file: FilePath | None = None
    # With TLS files, a second, public port: TLS_PORT serves TLS to bots and tools outside the
    # mesh while PORT stays plaintext for the mesh's private network. Unset, PORT itself is TLS.
    tls_port: Port | None = None

    @model_validator(mode="after")
    def _tls_files_come_together(self) -> ServiceSettings:
        # Half a TLS configuration would silently serve plaintext; refuse to start instead.
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE")
        if self.tls_port is not None and self.tls_cert_file is None:
            raise ValueError("TLS_PORT needs TLS_CERT_FILE and TLS_KEY_FILE")
        return self


class KafkaSettings(BaseSettings):
    """Kafka-protocol broker (tansu locally, Apache Kafka in production)."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic_match_ids: str = "match_ids_raw"
    kafka_topic_dead_letters: str = "match_ids_dlq"


class PostgresSettings(BaseSettings):
    """PostgreSQL for users and sessions."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    postgres_dsn: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/counterpick",
        pattern=r"^postgres(ql)?://",
    )


class RedisSettings(DeploymentSettings):
    """Redis for model snapshots, replay stores and rate limits."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://")


class TokenSettings(DeploymentSettings):
    """How a service verifies access tokens: who issues them, for whom, where the keys are."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    token_issuer: str = "counterpick-auth"  # noqa: S105 - the iss claim, not a secret
    token_audience: str = "counterpick"  # noqa: S105 - the aud claim, not a secret
    # The auth service, whose GetJwks publishes the verification keys.
    auth_addr: PeerAddress = "127.0.0.1:50054"
    # A JWK Set file of the verification (public) keys, read instead of asking auth's GetJwks:
    # for a service in a network that cannot reach auth, or one started without an auth
    # process. It is read again whenever the keys are refetched (an unknown kid, or every
    # cache period), so a key rollover is a rewrite of the file. Never holds private keys
    # (entries with "d" are ignored).
    auth_jwks_file: FilePath | None = None
    # The Redis holding the deny list of revoked tokens and API keys (tokens.DENY_LIST_KEY),
    # which every verifier consults; the same variable as RedisSettings.redis_url, so a service
    # with a Redis of its own reads its deny list there.
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://")


class WarehouseSettings(BaseSettings):
    """ClickHouse: `chdb:///path` for the embedded engine, `http(s)://host:8123` for a server."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    warehouse_dsn: str = Field(
        default="chdb:///var/lib/counterpick/warehouse", pattern=r"^(chdb|https?|clickhouse)://"
    )


def load_settings[S: BaseSettings](settings_class: type[S]) -> S:
    """Build settings from the environment, or exit with one line per bad variable."""
    try:
        return settings_class()
    except ValidationError as error:
        lines = [f"invalid configuration for {settings_class.__name__}:"]
        for problem in error.errors():
            variable = "_".join(str(part) for part in problem["loc"]).upper()
            if variable:
                lines.append(f"  {variable}: {problem['msg']} (got {problem.get('input')!r})")
            else:  # a rule across several variables
                lines.append(f"  {problem['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


class ServiceCredentialSettings(BaseSettings):
    """The secret a service exchanges at auth (ExchangeApiKey) for short-lived service tokens
    (services/common/service_tokens.py): SERVICE_CREDENTIAL, or a file holding it,
    SERVICE_CREDENTIAL_FILE (preferred: it keeps the secret out of the process environment)."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    service_credential: str = Field(default="", repr=False)
    service_credential_file: str = ""
