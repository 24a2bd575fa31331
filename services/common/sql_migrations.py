"""Numbered SQL migration files, loaded the same way for every store that has them.

A package ships its migrations as `<package>/migrations/0001_name.sql`, `0002_...`; the runners
(PostgreSQL in `pg_migrations.py`, ClickHouse in `warehouse/schema.py`) apply them in version
order and record what they applied. One loader means one file-name rule and one duplicate check
for both stores.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The shipped migrations, or the stored schema, do not add up."""


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


def load_migrations(package: str) -> list[Migration]:
    """The migrations shipped in `<package>/migrations`, in version order."""
    found = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations of {package} share a version number: {versions}")
    return found
