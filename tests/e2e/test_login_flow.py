"""The whole login flow with the real auth and user services, PostgreSQL, Redis and a local
OpenID provider: begin -> provider -> complete -> tokens -> own profile through the user service
-> refresh -> revoke."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest

from counterpick.auth.v1 import auth_service_pb2 as pb
from counterpick.auth.v1 import auth_service_pb2_grpc as pb_grpc
from counterpick.user.v1 import user_service_pb2 as user_pb
from counterpick.user.v1 import user_service_pb2_grpc as user_grpc
from services.auth.config import AuthSettings
from services.auth.server import build_server as build_auth
from services.user.config import UserSettings
from services.user.server import build_server as build_user
from tests.conftest import free_port
from tests.openid_provider import OpenIdProvider, running_provider  # noqa: F401 - the provider fixture
from tests.rpc import bearer, fails

pytestmark = pytest.mark.e2e
RETURN_TO = "http://localhost:8000/auth/steam/callback"
STEAMID = 76561198000004242


async def test_begin_provider_complete_profile_refresh_revoke(
    tmp_path: Path, postgres_dsn: str, redis_url: str, provider: OpenIdProvider
) -> None:
    auth_port, user_port = free_port(), free_port()
    schema = f"user_e2e_{uuid.uuid4().hex[:8]}"
    common = {
        "postgres_dsn": postgres_dsn,
        "redis_url": redis_url,
        "auth_addr": f"127.0.0.1:{auth_port}",
    }
    user = build_user(
        UserSettings.model_validate(
            common
            | {
                "port": user_port,
                "user_postgres_schema": schema,
                "rate_limit_key_prefix": f"e2e:{uuid.uuid4().hex[:8]}",
            }
        )
    )
    auth = build_auth(
        AuthSettings.model_validate(
            common
            | {
                "port": auth_port,
                "user_addr": f"127.0.0.1:{user_port}",
                "auth_keys_dir": str(tmp_path / "keys"),
                "steam_openid_endpoint": provider.endpoint,
            }
        )
    )
    await user.start()
    await auth.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{auth_port}") as auth_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{user_port}") as user_channel,
        ):
            auth_stub = pb_grpc.AuthServiceStub(auth_channel)
            users = user_grpc.UserServiceStub(user_channel)

            begin = await auth_stub.BeginSteamLogin(pb.BeginSteamLoginRequest(return_to=RETURN_TO))
            params = provider.assert_login(begin.redirect_url, STEAMID)  # the browser's trip
            done = await auth_stub.CompleteSteamLogin(
                pb.CompleteSteamLoginRequest(state=begin.state, openid_params=params)
            )
            assert done.new_user
            assert provider.check_requests == 1  # Steam was asked to confirm

            profile = await users.GetProfile(
                user_pb.GetProfileRequest(), metadata=bearer(done.tokens.access_token)
            )
            assert profile.profile.user_id == done.user_id
            assert profile.profile.steamid64 == STEAMID
            assert profile.profile.account_id == done.account_id

            refreshed = await auth_stub.RefreshToken(
                pb.RefreshTokenRequest(refresh_token=done.tokens.refresh_token)
            )
            again = await users.GetProfile(
                user_pb.GetProfileRequest(), metadata=bearer(refreshed.tokens.access_token)
            )
            assert again.profile.user_id == done.user_id

            revoked = await auth_stub.RevokeToken(
                pb.RevokeTokenRequest(refresh_token=refreshed.tokens.refresh_token)
            )
            assert revoked.revoked_count == 1
            reused = await fails(
                auth_stub.RefreshToken(
                    pb.RefreshTokenRequest(refresh_token=refreshed.tokens.refresh_token)
                )
            )
            assert reused.reason == "ERROR_REASON_TOKEN_INVALID"
            # Another user's data stays out of reach with this user's token.
            other = await fails(
                users.GetProfile(
                    user_pb.GetProfileRequest(user_id=str(uuid.uuid4())),
                    metadata=bearer(refreshed.tokens.access_token),
                )
            )
            assert other.code == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await auth.stop(0)
        await user.stop(0)
        connection = await asyncpg.connect(postgres_dsn)
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()
