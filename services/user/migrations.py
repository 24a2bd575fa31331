"""Versioned SQL migrations of the user service's PostgreSQL schema.

Numbered files in `services/user/migrations/` (`0001_users.sql`, ...) are applied in order and
recorded in `schema_migrations` with a SHA-256 of their text. Applied files are append-only: one
that changed after it ran stops the migration instead of leaving the schema to guess.

All of it lives in one PostgreSQL schema of its own (USER_POSTGRES_SCHEMA, `user_service` by
default), so the tables and the `schema_migrations` of another service in the same database never
collide, and a test can migrate a throwaway schema. Pending migrations run in one transaction
under an advisory lock, so replicas starting together apply each file exactly once and a failing
file leaves nothing half-done.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

import asyncpg

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = "user_service"
# A PostgreSQL identifier that needs no quoting; schema names come from configuration only.
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The stored schema does not match the shipped migrations."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text, recorded when it is applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The migrations shipped in services/user/migrations, in version order."""
    found = []
    for entry in resources.files("services.user").joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return found


def check_schema_name(schema: str) -> str:
    """`schema` if it is a plain lower-case identifier, else ValueError."""
    if not SCHEMA_NAME.match(schema):
        raise ValueError(
            f"schema name {schema!r} must match {SCHEMA_NAME.pattern} (lower-case identifier)"
        )
    return schema


async def apply_migrations(connection: asyncpg.Connection, schema: str) -> list[str]:
    """Create `schema` if needed and apply the pending migrations; returns the names applied."""
    check_schema_name(schema)
    applied_now: list[str] = []
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"counterpick.migrations.{schema}"
        )
        # DDL cannot take parameters; the name was checked against SCHEMA_NAME above.
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        # Local to this transaction: the unqualified names below land in `schema`.
        await connection.execute("SELECT set_config('search_path', $1, true)", schema)
        await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = await connection.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row for row in rows}
        for migration in migrations():
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} changed after it was applied to schema "
                        f"{schema}; add a new migration instead of editing an applied one"
                    )
                continue
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.name)
            log.info("applied user migration %s to schema %s", migration.name, schema)
    return applied_now


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
