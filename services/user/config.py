"""Settings of the user service, from environment variables."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    Port,
    PostgresSettings,
    RedisSettings,
    ServiceSettings,
    TokenSettings,
)
from services.user.migrations import DEFAULT_SCHEMA, check_schema_name

SchemaName = Annotated[str, AfterValidator(check_schema_name)]


class UserSettings(ServiceSettings, PostgresSettings, RedisSettings, TokenSettings):
    """Everything the user service reads from its environment."""

    port: Port = DEFAULT_GRPC_PORTS["user"]
    # The PostgreSQL schema holding the service's tables and its schema_migrations.
    user_postgres_schema: SchemaName = DEFAULT_SCHEMA
    # Bound on connecting to PostgreSQL and on each statement, so an outage answers UNAVAILABLE
    # promptly instead of holding calls.
    postgres_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    postgres_pool_size: int = Field(default=10, ge=1, le=200)
    # Call quotas over a sliding window (see services.common.rate_limit). A person's client
    # makes a handful of calls per page; 60 a minute is ample for that and stops scraping and
    # write storms. Services (auth on every sign-in) get their own, larger quota; anonymous
    # calls, which can only fail here, are counted per address.
    rate_limit_window_seconds: float = Field(default=60.0, gt=0, le=3600)
    rate_limit_user_calls: int = Field(default=60, ge=1)
    rate_limit_service_calls: int = Field(default=1200, ge=1)
    rate_limit_anonymous_calls: int = Field(default=30, ge=1)
    rate_limit_key_prefix: str = Field(default="counterpick:rate:user", min_length=1)
