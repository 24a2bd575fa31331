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
    # Call quotas are the shared RATE_LIMIT_* settings (ServiceSettings), counted in REDIS_URL.
