"""Settings of the auth service, from environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from services.auth.api_keys import ServiceCredential, parse_service_credentials
from services.common.config import (
    DEFAULT_GRPC_PORTS,
    PeerAddress,
    Port,
    PostgresSettings,
    RedisSettings,
    ServiceSettings,
    TokenSettings,
)


class AuthSettings(ServiceSettings, PostgresSettings, RedisSettings, TokenSettings):
    """Everything the auth service reads from its environment."""

    port: Port = DEFAULT_GRPC_PORTS["auth"]
    user_addr: PeerAddress = f"127.0.0.1:{DEFAULT_GRPC_PORTS['user']}"
    # Ed25519 PEM files; the newest signs, all are published (see services/auth/keys.py).
    auth_keys_dir: Path = Path(".counterpick/auth-keys")
    # Generate a key when the directory is empty: convenient locally, refused in production
    # (ENVIRONMENT=prod), where a missing key must stop the service rather than silently log
    # everyone out.
    auth_generate_key: bool = True
    steam_openid_endpoint: str = "https://steamcommunity.com/openid/login"
    # Origins a return_to may point at, comma-separated.
    auth_allowed_return_origins: str = "http://localhost:8000,http://127.0.0.1:8000"
    # Steam ids (steamid64) that get the admin role, comma-separated.
    auth_admin_steamids: str = ""
    # 15 minutes: services accept an access token offline until it expires, so this bounds how
    # long a revoked or downgraded token keeps working.
    access_token_seconds: int = Field(default=900, ge=60, le=3600)
    # 30 days, renewed by every refresh: an active user stays signed in, an idle one not.
    refresh_token_seconds: int = Field(default=30 * 24 * 3600, ge=3600, le=90 * 24 * 3600)
    # How long a browser may take on Steam's login page.
    login_state_seconds: int = Field(default=600, ge=60, le=3600)
    steam_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Login attempts per client address and minute (Begin and Complete each). A person signs in
    # once in a while; 20 a minute covers retries and a household behind one address while
    # keeping nonce and state stores from being flooded.
    auth_login_calls_per_minute: int = Field(default=20, ge=1)
    # Attempts per presented refresh token and minute: a genuine client presents each token
    # once; repeats are retries or an attacker replaying it.
    auth_refresh_calls_per_minute: int = Field(default=10, ge=1)

    # Lifetime of tokens exchanged for an API key or a service credential: there is no refresh
    # token, the bot or service exchanges its key again.
    api_key_token_seconds: int = Field(default=900, ge=60, le=3600)
    # ExchangeApiKey calls per client address and minute: a bot exchanges every ~15 minutes, so
    # this only bites someone guessing keys.
    auth_exchange_calls_per_minute: int = Field(default=60, ge=1)
    # Service credentials auth accepts, as `name=<sha256 hex of the secret>` entries separated by
    # commas (AUTH_SERVICE_CREDENTIALS) or lines (AUTH_SERVICE_CREDENTIALS_FILE); both are read.
    # Hashes only: auth's configuration never holds a usable credential.
    auth_service_credentials: str = ""
    auth_service_credentials_file: Path | None = None

    # How often expired refresh-token families and expired access-token denials are deleted.
    auth_prune_interval_seconds: float = Field(default=3600.0, gt=0)
    # A revoked family is kept this long after revocation (for audits), then deleted.
    auth_revoked_retention_seconds: int = Field(default=7 * 24 * 3600, ge=0)

    @model_validator(mode="after")
    def _no_generated_keys_in_production(self) -> Self:
        if self.environment == "prod" and self.auth_generate_key:
            raise ValueError(
                "AUTH_GENERATE_KEY=true is not allowed with ENVIRONMENT=prod: provision the "
                "signing keys in AUTH_KEYS_DIR and set AUTH_GENERATE_KEY=false"
            )
        return self

    def service_credentials(self) -> dict[bytes, ServiceCredential]:
        """The accepted service credentials by secret hash."""
        text = self.auth_service_credentials
        if self.auth_service_credentials_file is not None:
            text += "\n" + self.auth_service_credentials_file.read_text()
        return parse_service_credentials(text)

    def allowed_origins(self) -> frozenset[str]:
        """The allowed return_to origins."""
        return frozenset(
            o.strip().rstrip("/") for o in self.auth_allowed_return_origins.split(",") if o.strip()
        )

    def admin_steamids(self) -> frozenset[int]:
        """Steam ids with the admin role."""
        return frozenset(int(s) for s in self.auth_admin_steamids.split(",") if s.strip())
