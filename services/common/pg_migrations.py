"""Versioned SQL migrations of a service's PostgreSQL schema, shared by every service that owns one.

Numbered files in `<package>/migrations/` (`0001_users.sql`, ...; the loader in
`services/common/sql_migrations.py`, shared with the ClickHouse runner) are applied in order and
recorded in the schema's `schema_migrations` with a SHA-256 of their text. Applied files are
append-only: one that changed after it ran stops the migration instead of leaving the schema to
guess.

Each service keeps its tables in a PostgreSQL schema of its own, so the tables and the
`schema_migrations` of services sharing a database never collide, and a test can migrate a
throwaway schema. Pending migrations run in one transaction under an advisory lock, so replicas
starting together apply each file exactly once and a failing file leaves nothing half-done.
"""

from __future__ import annotations

import logging
import re

import asyncpg

from services.common.sql_migrations import Migration, MigrationError, load_migrations

log = logging.getLogger(__name__)

# A PostgreSQL identifier that needs no quoting; schema names come from configuration only.
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

__all__ = [
    "Migration",
    "MigrationError",
    "apply_migrations",
    "check_schema_name",
    "load_migrations",
]


def check_schema_name(schema: str) -> str:
    """`schema` if it is a plain lower-case identifier, else ValueError."""
    if not SCHEMA_NAME.match(schema):
        raise ValueError(
            f"schema name {schema!r} must match {SCHEMA_NAME.pattern} (lower-case identifier)"
        )
    return schema


async def apply_migrations(connection: asyncpg.Connection, schema: str, package: str) -> list[str]:
    """Create `schema` if needed and apply `package`'s pending migrations to it; returns the
    names applied."""
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
        for migration in load_migrations(package):
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
            log.info("applied migration %s to schema %s", migration.name, schema)
    return applied_now
