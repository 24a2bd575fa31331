"""The user service's PostgreSQL migrations (files in services/user/migrations, read by the shared
loader in services/common/sql_migrations.py), applied with the shared runner in
services/common/pg_migrations.py to the USER_POSTGRES_SCHEMA schema."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg

from services.common import pg_migrations
from services.common.pg_migrations import check_schema_name
from services.common.sql_migrations import Migration, MigrationError, load_migrations

__all__ = ["DEFAULT_SCHEMA", "Migration", "MigrationError", "check_schema_name"]

DEFAULT_SCHEMA = "user_service"


def migrations() -> list[Migration]:
    """The migrations shipped in services/user/migrations, in version order."""
    return load_migrations("services.user")


async def apply_migrations(connection: asyncpg.Connection, schema: str) -> list[str]:
    """Create `schema` if needed and apply the pending user migrations."""
    return await pg_migrations.apply_migrations(connection, schema, "services.user")


async def migrate_database(dsn: str, schema: str, *, timeout_seconds: float = 10.0) -> list[str]:
    """Connect to `dsn`, apply the pending migrations to `schema`, disconnect."""
    connection = await asyncpg.connect(dsn, timeout=timeout_seconds)
    try:
        return await apply_migrations(connection, schema)
    finally:
        await connection.close()


def redacted_dsn(dsn: str) -> str:
    """`dsn` without its user name and password, for messages."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class MigrationRun:
    """What `migrate_from_environment` did."""

    dsn: str  # redacted
    schema: str
    applied: list[str]


async def migrate_from_environment(environ: Mapping[str, str]) -> MigrationRun | None:
    """Apply the user migrations to POSTGRES_DSN (schema USER_POSTGRES_SCHEMA, `user_service`
    by default); None when POSTGRES_DSN is not set."""
    dsn = environ.get("POSTGRES_DSN")
    if not dsn:
        return None
    schema = check_schema_name(environ.get("USER_POSTGRES_SCHEMA") or DEFAULT_SCHEMA)
    applied = await migrate_database(dsn, schema)
    return MigrationRun(redacted_dsn(dsn), schema, applied)
