"""Storage adapters of the auth service: refresh-token families and API keys in PostgreSQL
(refresh tokens pruned by the runtime once unusable), login states, seen nonces and the deny list
of revoked tokens in Redis (expiring by TTL or score, a login state also deleted when used)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import redis.asyncio as aioredis

from services.auth.api_keys import ApiKey
from services.auth.tokens import ParsedRefreshToken, RefreshSecret, new_refresh_token
from services.common.config import DEFAULT_DEPLOYMENT
from services.common.errors import Unauthenticated
from services.common.pg_migrations import apply_migrations
from services.common.tokens import TokenExpired, TokenInvalid, deny_list_key

# The auth tables live in a PostgreSQL schema of their own, as every service's do.
SCHEMA = "auth_service"
TOKENS = f"{SCHEMA}.auth_refresh_tokens"
DENIED = f"{SCHEMA}.auth_revoked_access_tokens"


class TokenReused(Unauthenticated):
    """An already-rotated refresh token came back: its family is revoked now."""

    reason = "ERROR_REASON_TOKEN_REUSED"

    def __init__(self, message: str, *, user_id: str) -> None:
        super().__init__(message)
        self.user_id = user_id


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply services/auth/migrations to the auth schema (shared runner, own schema)."""
    async with pool.acquire() as connection:
        return await apply_migrations(connection, SCHEMA, "services.auth")


@dataclass(frozen=True)
class Session:
    """Who a refresh token belongs to."""

    user_id: str
    steamid64: int
    roles: tuple[str, ...]
    tier: str
    family_id: str


@dataclass(frozen=True)
class Grants:
    """What a user may do now: the roles and tier a new access token carries."""

    roles: tuple[str, ...]
    tier: str


class RefreshTokenStore:
    """Refresh-token families: issue, rotate (single use, reuse = theft), revoke."""

    def __init__(self, pool: asyncpg.Pool, lifetime: timedelta) -> None:
        self._pool = pool
        self._lifetime = lifetime

    async def start_family(self, session: Session, now: datetime) -> tuple[RefreshSecret, datetime]:
        """The first refresh token of a new login."""
        async with self._pool.acquire() as connection:
            return await self._insert(connection, session, now)

    async def _insert(
        self, connection: asyncpg.Connection, session: Session, now: datetime
    ) -> tuple[RefreshSecret, datetime]:
        secret = new_refresh_token()
        expires = now + self._lifetime
        await connection.execute(
            f"INSERT INTO {TOKENS} (token_id, family_id, user_id, steamid64, roles, "
            "tier, secret_hash, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            uuid.UUID(hex=secret.token_id),
            uuid.UUID(session.family_id),
            session.user_id,
            session.steamid64,
            list(session.roles),
            session.tier,
            secret.secret_hash,
            now,
            expires,
        )
        return secret, expires

    async def rotate(
        self, presented: ParsedRefreshToken, now: datetime, grants: Grants | None
    ) -> tuple[Session, RefreshSecret, datetime]:
        """Use up the presented token and issue its successor in the same family, with the
        user's current `grants` (the caller looked them up for the token's user; None when the
        token was not usable then, which it cannot have become since)."""
        reused = ""  # the user whose stolen token came back
        async with self._pool.acquire() as connection:
            async with connection.transaction():
                row = await connection.fetchrow(
                    f"SELECT * FROM {TOKENS} WHERE token_id = $1 FOR UPDATE",
                    uuid.UUID(hex=presented.token_id),
                )
                if row is None or not presented.matches(bytes(row["secret_hash"])):
                    raise TokenInvalid("the refresh token is not valid")
                if row["revoked_at"] is not None:
                    raise TokenInvalid("the refresh token has been revoked")
                if row["used_at"] is not None:
                    # Theft detection. The revocation commits with this transaction; the
                    # error is raised only after it, so rolling back cannot undo it.
                    await connection.execute(
                        f"UPDATE {TOKENS} SET revoked_at = $2 "
                        "WHERE family_id = $1 AND revoked_at IS NULL",
                        row["family_id"],
                        now,
                    )
                    reused = str(row["user_id"])
                else:
                    result = await self._use(connection, row, now, grants)
            if reused:
                raise TokenReused(
                    "this refresh token was already used; every session of this login is "
                    "revoked, sign in again",
                    user_id=reused,
                )
        return result

    async def _use(
        self,
        connection: asyncpg.Connection,
        row: asyncpg.Record,
        now: datetime,
        grants: Grants | None,
    ) -> tuple[Session, RefreshSecret, datetime]:
        """Mark a valid, unused token used and issue its successor (inside the transaction).

        The successor carries the current grants, not the old token's: a demotion or a tier
        change takes effect at the next refresh instead of lasting as long as the family.
        """
        if row["expires_at"] <= now:
            raise TokenExpired("the refresh token has expired; sign in again")
        if grants is None:
            raise TokenInvalid("the refresh token is not valid")
        await connection.execute(
            f"UPDATE {TOKENS} SET used_at = $2 WHERE token_id = $1",
            row["token_id"],
            now,
        )
        session = Session(
            user_id=row["user_id"],
            steamid64=row["steamid64"],
            roles=grants.roles,
            tier=grants.tier,
            family_id=str(row["family_id"]),
        )
        secret, expires = await self._insert(connection, session, now)
        return session, secret, expires

    async def revoke_family_of(self, presented: ParsedRefreshToken, now: datetime) -> int:
        """Revoke the presented token's family; 0 when unknown or already revoked (RFC 7009)."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(
                f"SELECT family_id, secret_hash FROM {TOKENS} WHERE token_id = $1",
                uuid.UUID(hex=presented.token_id),
            )
            if row is None or not presented.matches(bytes(row["secret_hash"])):
                return 0
            result = await connection.execute(
                f"UPDATE {TOKENS} SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
                row["family_id"],
                now,
            )
        return 1 if _affected(result) else 0

    async def revoke_user(self, user_id: str, now: datetime) -> int:
        """Revoke every family of a user; returns the number of families revoked."""
        async with self._pool.acquire() as connection:
            families = await connection.fetch(
                f"UPDATE {TOKENS} SET revoked_at = $2 "
                "WHERE user_id = $1 AND revoked_at IS NULL RETURNING family_id",
                user_id,
                now,
            )
        return len({row["family_id"] for row in families})

    async def deny_access_token(self, jti: str, user_id: str, expires_at: datetime) -> int:
        """Deny an access token until it expires; 0 if it already was."""
        async with self._pool.acquire() as connection:
            result = await connection.execute(
                f"INSERT INTO {DENIED} (jti, user_id, expires_at) "
                "VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING",
                jti,
                user_id,
                expires_at,
            )
        return 1 if _affected(result) else 0

    async def is_access_token_denied(self, jti: str) -> bool:
        """True if the access token was revoked."""
        async with self._pool.acquire() as connection:
            return bool(await connection.fetchval(f"SELECT 1 FROM {DENIED} WHERE jti = $1", jti))

    async def refresh_token_state(
        self, presented: ParsedRefreshToken, now: datetime
    ) -> tuple[Session, datetime, datetime] | None:
        """(session, issued_at, expires_at) of a usable refresh token, else None."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(
                f"SELECT * FROM {TOKENS} WHERE token_id = $1",
                uuid.UUID(hex=presented.token_id),
            )
        if (
            row is None
            or not presented.matches(bytes(row["secret_hash"]))
            or row["revoked_at"] is not None
            or row["used_at"] is not None
            or row["expires_at"] <= now
        ):
            return None
        session = Session(
            row["user_id"],
            row["steamid64"],
            tuple(row["roles"]),
            row["tier"],
            str(row["family_id"]),
        )
        return session, row["issued_at"], row["expires_at"]

    async def prune(self, now: datetime, revoked_before: datetime) -> tuple[int, int]:
        """Delete what can never be used again; returns (refresh tokens, denied access tokens).

        A family goes whole, once every token of it has expired or it was revoked before
        `revoked_before`: a used token must stay while its family lives, or presenting it again
        would no longer be recognised as reuse. Denied access tokens go once expired, when
        their signature check refuses them anyway.
        """
        async with self._pool.acquire() as connection:
            tokens = await connection.execute(
                f"DELETE FROM {TOKENS} WHERE family_id IN (SELECT family_id FROM {TOKENS} "
                "GROUP BY family_id HAVING max(expires_at) <= $1 "
                "OR bool_and(revoked_at IS NOT NULL AND revoked_at < $2))",
                now,
                revoked_before,
            )
            denied = await connection.execute(f"DELETE FROM {DENIED} WHERE expires_at <= $1", now)
        return _affected(tokens), _affected(denied)


def _affected(status: str) -> int:
    """Rows affected, from an asyncpg command status such as 'UPDATE 3'."""
    return int(status.rsplit(" ", 1)[-1]) if status else 0


@dataclass(frozen=True)
class LoginState:
    """What BeginSteamLogin remembered about a login attempt."""

    return_to: str  # exactly as sent to Steam, with our state parameter
    expires_at: datetime


class LoginStateStore:
    """Single-use login states and the set of seen nonces, in Redis with TTLs."""

    def __init__(
        self,
        redis: aioredis.Redis,
        state_ttl: timedelta,
        nonce_ttl: timedelta,
        deployment: str = DEFAULT_DEPLOYMENT,
    ) -> None:
        self._redis = redis
        self._prefix = f"{deployment}:auth"
        self._state_ttl = state_ttl
        self._nonce_ttl = nonce_ttl

    async def remember(self, state: str, return_to: str, now: datetime) -> LoginState:
        """Store a new login attempt."""
        login = LoginState(return_to, now + self._state_ttl)
        await self._redis.set(
            f"{self._prefix}:state:{state}",
            json.dumps({"return_to": return_to}),
            ex=int(self._state_ttl.total_seconds()),
        )
        return login

    async def take(self, state: str) -> str | None:
        """The return_to of a login attempt, once: a second take finds nothing."""
        raw = await self._redis.getdel(f"{self._prefix}:state:{state}")
        if raw is None:
            return None
        value: str = json.loads(raw)["return_to"]
        return value

    async def first_use_of_nonce(self, endpoint: str, nonce: str) -> bool:
        """True the first time a provider's nonce is seen (within its lifetime), else False."""
        digest = hashlib.sha256(f"{endpoint}|{nonce}".encode()).hexdigest()
        stored = await self._redis.set(
            f"{self._prefix}:nonce:{digest}",
            "1",
            nx=True,
            ex=int(self._nonce_ttl.total_seconds()),
        )
        return bool(stored)


def utc_now() -> datetime:
    """Now, timezone-aware."""
    return datetime.now(UTC)


KEYS = f"{SCHEMA}.auth_api_keys"


def _api_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        key_id=str(row["key_id"]),
        owner_user_id=row["owner_user_id"],
        owner_steamid64=row["owner_steamid64"],
        name=row["name"],
        scopes=tuple(row["scopes"]),
        prefix=row["prefix"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


class ApiKeyStore:
    """API keys in PostgreSQL: stored by the hash of their secret, never the secret."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        key: ApiKey,
        secret_hash: bytes,
        check_quota: Callable[[int], None],
    ) -> ApiKey:
        """Insert `key` unless `check_quota` refuses the owner's count of unrevoked keys.

        The count and the insert run under a per-owner advisory lock, so two concurrent creates
        cannot both pass at 19 keys.
        """
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"api-keys:{key.owner_user_id}"
            )
            unrevoked = await connection.fetchval(
                f"SELECT count(*) FROM {KEYS} WHERE owner_user_id = $1 AND revoked_at IS NULL",
                key.owner_user_id,
            )
            check_quota(int(unrevoked))
            row = await connection.fetchrow(
                f"INSERT INTO {KEYS} (key_id, owner_user_id, owner_steamid64, name, scopes, "
                "prefix, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "RETURNING *",
                uuid.UUID(key.key_id),
                key.owner_user_id,
                key.owner_steamid64,
                key.name,
                list(key.scopes),
                key.prefix,
                secret_hash,
                key.created_at,
            )
        return _api_key(row)

    async def listing(self, owner_user_id: str) -> list[ApiKey]:
        """The owner's keys, newest first, revoked ones included."""
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(
                f"SELECT * FROM {KEYS} WHERE owner_user_id = $1 ORDER BY created_at DESC, key_id",
                owner_user_id,
            )
        return [_api_key(row) for row in rows]

    async def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, if any (a malformed id is simply unknown)."""
        try:
            parsed = uuid.UUID(key_id)
        except ValueError:
            return None
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(f"SELECT * FROM {KEYS} WHERE key_id = $1", parsed)
        return _api_key(row) if row is not None else None

    async def revoke(self, key_id: str, now: datetime) -> ApiKey:
        """Revoke the key (a revoked key keeps its first revocation time)."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(
                f"UPDATE {KEYS} SET revoked_at = COALESCE(revoked_at, $2) WHERE key_id = $1 "
                "RETURNING *",
                uuid.UUID(key_id),
                now,
            )
        return _api_key(row)

    async def use(self, secret_hash: bytes, now: datetime) -> ApiKey | None:
        """The key with this secret hash, its use recorded unless revoked; None when unknown."""
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(
                f"UPDATE {KEYS} SET last_used_at = CASE WHEN revoked_at IS NULL THEN $2 "
                "ELSE last_used_at END WHERE secret_hash = $1 RETURNING *",
                secret_hash,
                now,
            )
        return _api_key(row) if row is not None else None


class DenyListWriter:
    """Adds revoked access tokens (by jti) and API keys (by id) to the Redis deny list every
    verifier of the mesh reads (services/common/tokens.py DenyList)."""

    def __init__(self, redis: aioredis.Redis, deployment: str = DEFAULT_DEPLOYMENT) -> None:
        self._redis = redis
        self._key = deny_list_key(deployment)

    async def deny(self, member: str, until: datetime) -> None:
        """Deny `member` ("jti:<jti>" or "key:<id>") until `until`, when what it denies has
        expired anyway; expired entries are dropped on the way so the set stays small."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self._key, {member: until.timestamp()})
            pipe.zremrangebyscore(self._key, "-inf", utc_now().timestamp())
            await pipe.execute()
