"""The auth service's token tables stay bounded: unusable refresh-token families and expired
access-token denials are deleted, periodically, by the running service (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.auth.config import AuthSettings
from services.auth.repo import TOKENS, Grants, RefreshTokenStore, Session, migrate
from services.auth.server import build_server
from services.auth.tokens import parse_refresh_token
from services.common.tokens import TokenInvalid

LIFETIME = timedelta(days=30)


@pytest.fixture
async def pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    await migrate(pool)
    yield pool
    await pool.close()


def session() -> Session:
    return Session(
        user_id=f"prune-{uuid.uuid4().hex[:8]}",
        steamid64=76561198000000001,
        roles=("user",),
        tier="free",
        family_id=str(uuid.uuid4()),
    )


async def family_rows(pool: asyncpg.Pool, family_id: str) -> int:
    async with pool.acquire() as connection:
        count: int = await connection.fetchval(
            f"SELECT count(*) FROM {TOKENS} WHERE family_id = $1", uuid.UUID(family_id)
        )
    return count


async def seed(store: RefreshTokenStore, now: datetime) -> dict[str, str]:
    """One family of each kind; returns kind -> family id."""
    families: dict[str, str] = {}
    # Expired: its only token ran out ten days ago.
    expired = session()
    await store.start_family(expired, now - LIFETIME - timedelta(days=10))
    families["expired"] = expired.family_id
    # Alive, with an old used token whose own expiry passed: kept whole, or reuse of that old
    # token could no longer be recognised.
    rotated = session()
    secret, _ = await store.start_family(rotated, now - LIFETIME - timedelta(days=1))
    presented = parse_refresh_token(secret.token)
    assert presented is not None
    await store.rotate(presented, now - timedelta(days=2), grants_of(rotated))
    families["rotated"] = rotated.family_id
    # Revoked long ago, and revoked just now.
    for kind, when in (("revoked_long_ago", now - timedelta(days=8)), ("revoked_now", now)):
        revoked = session()
        secret, _ = await store.start_family(revoked, now - timedelta(days=9))
        presented = parse_refresh_token(secret.token)
        assert presented is not None
        await store.revoke_family_of(presented, when)
        families[kind] = revoked.family_id
    return families


async def seed_beside_the_pruner(store: RefreshTokenStore) -> dict[str, str]:
    """seed() while the service prunes every 0.2 s: the "rotated" family's first token is
    expired from the start, so a pass between its creation and its rotation removes it (as it
    should: a family whose only token expired is dead) and the rotation finds nothing. Seed
    again then; a loaded machine loses that race now and then."""
    for _ in range(5):
        try:
            return await seed(store, datetime.now(UTC))
        except TokenInvalid:
            continue
    raise AssertionError("every seeding lost its race with the prune pass")


def grants_of(owner: Session) -> Grants:
    return Grants(owner.roles, owner.tier)


async def test_prune_deletes_only_what_can_never_be_used_again(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    store = RefreshTokenStore(pool, LIFETIME)
    families = await seed(store, now)
    expired_jti, live_jti = uuid.uuid4().hex, uuid.uuid4().hex
    await store.deny_access_token(expired_jti, "u", now - timedelta(minutes=1))
    await store.deny_access_token(live_jti, "u", now + timedelta(minutes=10))

    tokens, denied = await store.prune(now, now - timedelta(days=7))
    assert tokens >= 2
    assert denied >= 1
    assert await family_rows(pool, families["expired"]) == 0
    assert await family_rows(pool, families["revoked_long_ago"]) == 0
    assert await family_rows(pool, families["rotated"]) == 2
    assert await family_rows(pool, families["revoked_now"]) == 1
    assert not await store.is_access_token_denied(expired_jti)
    assert await store.is_access_token_denied(live_jti)


async def test_the_running_service_prunes_periodically(
    pool: asyncpg.Pool, tmp_path: Path, postgres_dsn: str, redis_url: str
) -> None:
    settings = AuthSettings.model_validate(
        {
            "port": 0,
            "postgres_dsn": postgres_dsn,
            "redis_url": redis_url,
            "auth_keys_dir": str(tmp_path / "keys"),
            "auth_prune_interval_seconds": 0.2,
        }
    )
    server = build_server(settings)
    await server.start()
    try:
        store = RefreshTokenStore(pool, LIFETIME)
        # Twice: the second batch is stored after a pass removed the first, so only a later,
        # periodic pass can remove it.
        for _ in range(2):
            families = await seed_beside_the_pruner(store)
            deadline = asyncio.get_running_loop().time() + 30
            while await family_rows(pool, families["expired"]):
                assert asyncio.get_running_loop().time() < deadline, "no prune pass within 30 s"
                await asyncio.sleep(0.1)
            assert await family_rows(pool, families["rotated"]) == 2
            assert await family_rows(pool, families["revoked_now"]) == 1
    finally:
        await server.stop(0)
