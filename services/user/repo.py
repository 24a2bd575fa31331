"""PostgreSQL storage of users, preferences and subscriptions (asyncpg).

Every statement is a constant with `$n` parameters; no value is ever spliced into SQL text, so a
persona name such as `'); DROP TABLE users; --` is stored as the text it is. Writes that depend
on what is stored (preferences, Steam refreshes) read the row FOR UPDATE and write it back in the
same transaction, with `version = $n` in the UPDATE's WHERE, so concurrent updates serialise per
user and none is lost. A connection failure becomes DependencyUnavailable("postgres").
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from services.common.errors import DependencyUnavailable, NotFound
from services.common.stores import wait_for
from services.user.profiles import (
    DisplayField,
    Preferences,
    PreferencesUpdate,
    Profile,
    ProfileUpdate,
    SteamIdentity,
    Subscription,
    Tier,
    VersionMismatch,
    check_expected_version,
    stored_bracket,
)

DEPENDENCY = "postgres"
# Failures that mean "the database cannot be reached now", as opposed to a bug in a statement.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)

_PROFILE = """
SELECT u.user_id, u.steamid64, u.persona_name, u.avatar_url, u.created_at, u.last_login_at,
       u.version,
       p.preferred_positions, p.hero_pool_hero_ids, p.favourite_hero_ids, p.disliked_hero_ids,
       p.default_skill_bracket, p.version AS preferences_version, p.updated_at,
       s.tier, s.started_at, s.renews_at, s.expires_at
FROM users AS u
LEFT JOIN preferences AS p ON p.user_id = u.user_id
LEFT JOIN subscriptions AS s ON s.user_id = u.user_id
WHERE u.user_id = $1
"""
_PREFERENCES_COLUMNS = """
preferred_positions, hero_pool_hero_ids, favourite_hero_ids, disliked_hero_ids,
default_skill_bracket, version AS preferences_version, updated_at
"""
_PREFERENCES = f"SELECT {_PREFERENCES_COLUMNS} FROM preferences WHERE user_id = $1"  # noqa: S608 - constant
_PREFERENCES_FOR_UPDATE = _PREFERENCES + " FOR UPDATE"
_UPDATE_PREFERENCES = f"""
UPDATE preferences
SET preferred_positions = $2, hero_pool_hero_ids = $3, favourite_hero_ids = $4,
    disliked_hero_ids = $5, default_skill_bracket = $6, version = version + 1, updated_at = now()
WHERE user_id = $1 AND version = $7
RETURNING {_PREFERENCES_COLUMNS}
"""  # noqa: S608 - constant text, values are parameters
# $2/$4: whether the field changes; $3/$5: the user's value, NULL to go back to Steam's.
_UPDATE_PROFILE = """
UPDATE users
SET persona_name = CASE WHEN NOT $2::boolean THEN persona_name
                        ELSE coalesce($3::text, steam_persona_name) END,
    persona_name_overridden = CASE WHEN NOT $2::boolean THEN persona_name_overridden
                                   ELSE $3::text IS NOT NULL END,
    avatar_url = CASE WHEN NOT $4::boolean THEN avatar_url
                      ELSE coalesce($5::text, steam_avatar_url) END,
    avatar_url_overridden = CASE WHEN NOT $4::boolean THEN avatar_url_overridden
                                 ELSE $5::text IS NOT NULL END,
    version = version + 1
WHERE user_id = $1 AND ($6::bigint IS NULL OR version = $6::bigint)
RETURNING user_id
"""
_INSERT_USER = """
INSERT INTO users (steamid64, persona_name, avatar_url, steam_persona_name, steam_avatar_url)
VALUES ($1, $2, $3, $2, $3)
ON CONFLICT (steamid64) DO NOTHING
RETURNING user_id
"""
_USER_FOR_REFRESH = """
SELECT user_id, version, persona_name, steam_persona_name, persona_name_overridden,
       avatar_url, steam_avatar_url, avatar_url_overridden
FROM users WHERE steamid64 = $1 FOR UPDATE
"""
_REFRESH_USER = """
UPDATE users
SET persona_name = $2, steam_persona_name = $3, avatar_url = $4, steam_avatar_url = $5,
    version = version + $6, last_login_at = now()
WHERE user_id = $1
"""
_UPSERT_SUBSCRIPTION = """
INSERT INTO subscriptions (user_id, tier, started_at, renews_at, expires_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id) DO UPDATE
SET tier = EXCLUDED.tier, started_at = EXCLUDED.started_at, renews_at = EXCLUDED.renews_at,
    expires_at = EXCLUDED.expires_at, updated_at = now()
"""


async def open_pool(
    dsn: str,
    schema: str,
    *,
    wait_seconds: float,
    timeout_seconds: float,
    max_size: int = 10,
) -> asyncpg.Pool:
    """A pool whose connections resolve table names in `schema`, after a successful round trip;
    DependencyUnavailable("postgresql") if the server does not answer within `wait_seconds`."""

    async def attempt() -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=max_size,
            timeout=timeout_seconds,
            command_timeout=timeout_seconds,
            server_settings={"search_path": schema},
        )
        try:
            await pool.fetchval("SELECT 1")
        except BaseException:
            await pool.close()
            raise
        return pool

    return await wait_for("postgresql", attempt, timeout_seconds=wait_seconds)


def _preferences(row: Mapping[str, Any] | None) -> Preferences:
    if row is None or row["preferences_version"] is None:
        return Preferences()
    bracket = row["default_skill_bracket"]
    return Preferences(
        preferred_positions=tuple(row["preferred_positions"]),
        hero_pool_hero_ids=tuple(row["hero_pool_hero_ids"]),
        favourite_hero_ids=tuple(row["favourite_hero_ids"]),
        disliked_hero_ids=tuple(row["disliked_hero_ids"]),
        default_skill_bracket=stored_bracket(bracket) if bracket is not None else None,
        version=int(row["preferences_version"]),
        updated_at=row["updated_at"],
    )


def _subscription(row: Mapping[str, Any]) -> Subscription:
    if row["tier"] is None:
        return Subscription()
    return Subscription(
        tier=Tier(row["tier"]),
        started_at=row["started_at"],
        renews_at=row["renews_at"],
        expires_at=row["expires_at"],
    )


def _profile(row: Mapping[str, Any]) -> Profile:
    return Profile(
        user_id=row["user_id"],
        steamid64=int(row["steamid64"]),
        persona_name=row["persona_name"],
        avatar_url=row["avatar_url"],
        created_at=row["created_at"],
        last_login_at=row["last_login_at"],
        version=int(row["version"]),
        subscription=_subscription(row),
        preferences=_preferences(row),
    )


def _not_found(user_id: uuid.UUID) -> NotFound:
    return NotFound(f"user {user_id} does not exist", metadata={"user_id": str(user_id)})


class UserRepository:
    """Users, preferences and subscriptions in the pool's schema."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout_seconds: float = 5.0) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout_seconds

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
                yield connection
        except _UNAVAILABLE as error:
            raise DependencyUnavailable(
                DEPENDENCY, "the user database is unavailable; retry later"
            ) from error

    @staticmethod
    async def _fetch_profile(connection: asyncpg.Connection, user_id: uuid.UUID) -> Profile:
        row = await connection.fetchrow(_PROFILE, user_id)
        if row is None:
            raise _not_found(user_id)
        return _profile(row)

    async def get_profile(self, user_id: uuid.UUID) -> Profile:
        """The stored profile with preferences and the subscription as billed."""
        async with self._connection() as connection:
            return await self._fetch_profile(connection, user_id)

    async def get_preferences(self, user_id: uuid.UUID) -> Preferences:
        """The user's preferences (defaults, version 0, if never set)."""
        return (await self.get_profile(user_id)).preferences

    async def get_subscription(self, user_id: uuid.UUID) -> Subscription:
        """The user's subscription as billed (see Subscription.effective)."""
        return (await self.get_profile(user_id)).subscription

    async def update_profile(
        self, user_id: uuid.UUID, update: ProfileUpdate, expected_version: int | None
    ) -> Profile:
        """Apply `update` in one UPDATE guarded by the version; returns the new profile."""
        async with self._connection() as connection, connection.transaction():
            if update.is_empty:
                profile = await self._fetch_profile(connection, user_id)
                check_expected_version("profile", expected_version, profile.version)
                return profile
            changed = await connection.fetchval(
                _UPDATE_PROFILE,
                user_id,
                update.persona_name_set,
                update.persona_name,
                update.avatar_url_set,
                update.avatar_url,
                expected_version,
            )
            if changed is None:
                current = await connection.fetchval(
                    "SELECT version FROM users WHERE user_id = $1", user_id
                )
                if current is None:
                    raise _not_found(user_id)
                raise VersionMismatch(
                    "profile", expected=expected_version or 0, current=int(current)
                )
            return await self._fetch_profile(connection, user_id)

    async def update_preferences(
        self, user_id: uuid.UUID, update: PreferencesUpdate, expected_version: int | None
    ) -> Preferences:
        """Merge `update` into the stored preferences, check the rules across lists, and write
        them back with the version bumped; returns the new preferences."""
        async with self._connection() as connection, connection.transaction():
            row = await connection.fetchrow(_PREFERENCES_FOR_UPDATE, user_id)
            if row is None:
                raise _not_found(user_id)
            current = _preferences(row)
            check_expected_version("preferences", expected_version, current.version)
            merged = update.apply(current)
            updated = await connection.fetchrow(
                _UPDATE_PREFERENCES,
                user_id,
                list(merged.preferred_positions),
                list(merged.hero_pool_hero_ids),
                list(merged.favourite_hero_ids),
                list(merged.disliked_hero_ids),
                merged.default_skill_bracket.value if merged.default_skill_bracket else None,
                current.version,
            )
            if updated is None:  # cannot happen while the row is locked; never write blind
                raise VersionMismatch("preferences", expected=current.version, current=-1)
            return _preferences(updated)

    async def upsert_steam_user(self, identity: SteamIdentity) -> tuple[Profile, bool]:
        """Create the user of a Steam account, or refresh its Steam values and last sign-in.

        Returns the profile and whether it was created. The profile version moves only when a
        shown field changes (a user's own persona name or avatar stays in place).
        """
        async with self._connection() as connection, connection.transaction():
            user_id = await connection.fetchval(
                _INSERT_USER, identity.steamid64, identity.persona_name, identity.avatar_url
            )
            created = user_id is not None
            if created:
                await connection.execute("INSERT INTO preferences (user_id) VALUES ($1)", user_id)
            else:
                row = await connection.fetchrow(_USER_FOR_REFRESH, identity.steamid64)
                user_id = row["user_id"]
                persona = DisplayField(
                    row["persona_name"], row["steam_persona_name"], row["persona_name_overridden"]
                )
                avatar = DisplayField(
                    row["avatar_url"], row["steam_avatar_url"], row["avatar_url_overridden"]
                )
                new_persona = persona.refreshed(identity.persona_name)
                new_avatar = avatar.refreshed(identity.avatar_url)
                shown_changed = (new_persona.shown, new_avatar.shown) != (
                    persona.shown,
                    avatar.shown,
                )
                await connection.execute(
                    _REFRESH_USER,
                    user_id,
                    new_persona.shown,
                    new_persona.steam,
                    new_avatar.shown,
                    new_avatar.steam,
                    1 if shown_changed else 0,
                )
            return await self._fetch_profile(connection, user_id), created

    async def set_subscription(self, user_id: uuid.UUID, subscription: Subscription) -> None:
        """Record the user's plan (for billing; no RPC changes it)."""
        async with self._connection() as connection:
            try:
                await connection.execute(
                    _UPSERT_SUBSCRIPTION,
                    user_id,
                    subscription.tier.value,
                    subscription.started_at,
                    subscription.renews_at,
                    subscription.expires_at,
                )
            except asyncpg.ForeignKeyViolationError:
                raise _not_found(user_id) from None
