"""The auth service against a local OpenID provider, real PostgreSQL and Redis.

The user service is stood in for by a minimal UserService that records UpsertSteamUser calls, so
these tests can say exactly when a user was (not) created.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from counterpick.auth.v1 import auth_service_pb2 as pb
from counterpick.auth.v1 import auth_service_pb2_grpc as pb_grpc
from counterpick.common.v1 import common_pb2
from counterpick.user.v1 import user_service_pb2 as user_pb
from counterpick.user.v1 import user_service_pb2_grpc as user_grpc
from services.auth.config import AuthSettings
from services.auth.server import build_server
from services.common.config import ServiceSettings
from services.common.server import GrpcServer, registration
from services.common.tokens import (
    DenyList,
    TokenInvalid,
    TokenVerifier,
    current_caller,
    jwks_from_auth,
)
from tests.conftest import free_port
from tests.openid_provider import OpenIdProvider, running_provider  # noqa: F401 - the provider fixture
from tests.rpc import Failure, bearer, fails

RETURN_TO = "http://localhost:8000/auth/steam/callback"
STEAMID = 76561198000000077


@dataclass
class Users(user_grpc.UserServiceServicer):
    """Stand-in user service: remembers who was upserted and by whom, and answers each user's
    subscription tier from `tiers` (free when unset; NOT_FOUND for a user in `deleted`)."""

    created: dict[int, str] = field(default_factory=dict)
    callers: list[frozenset[str]] = field(default_factory=list)
    tiers: dict[str, common_pb2.SubscriptionTier.ValueType] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)

    async def GetSubscription(
        self, request: user_pb.GetSubscriptionRequest, context: Any
    ) -> user_pb.GetSubscriptionResponse:
        caller = current_caller()
        self.callers.append(caller.roles if caller else frozenset())
        if request.user_id in self.deleted:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such user")
        tier = self.tiers.get(request.user_id, common_pb2.SUBSCRIPTION_TIER_FREE)
        return user_pb.GetSubscriptionResponse(subscription=user_pb.Subscription(tier=tier))

    async def UpsertSteamUser(
        self, request: user_pb.UpsertSteamUserRequest, context: Any
    ) -> user_pb.UpsertSteamUserResponse:
        caller = current_caller()
        self.callers.append(caller.roles if caller else frozenset())
        new = request.steamid64 not in self.created
        user_id = self.created.setdefault(request.steamid64, str(uuid.uuid4()))
        return user_pb.UpsertSteamUserResponse(
            profile=user_pb.Profile(
                user_id=user_id,
                steamid64=request.steamid64,
                tier=common_pb2.SUBSCRIPTION_TIER_FREE,
            ),
            created=new,
        )


@dataclass
class Auth:
    stub: pb_grpc.AuthServiceAsyncStub
    users: Users
    port: int
    settings: AuthSettings
    user_server: GrpcServer


@pytest.fixture
async def auth(
    tmp_path: Path, postgres_dsn: str, redis_url: str, provider: OpenIdProvider
) -> AsyncIterator[Auth]:
    users = Users()  # type: ignore[abstract]  # a stand-in: only what auth calls
    user_port = free_port()
    settings = AuthSettings.model_validate(
        {
            "port": 0,
            "postgres_dsn": postgres_dsn,
            "redis_url": redis_url,
            "auth_keys_dir": str(tmp_path / "keys"),
            "steam_openid_endpoint": provider.endpoint,
            "user_addr": f"127.0.0.1:{user_port}",
            "auth_admin_steamids": "76561198000000099",
            # These tests log in dozens of times from one address on purpose.
            "auth_login_calls_per_minute": 1000,
        }
    )
    auth_server = build_server(settings)
    auth_port = await auth_server.start()
    user_server = GrpcServer(
        name="user",
        settings=ServiceSettings(port=user_port),
        services=[
            registration(
                users,
                user_grpc.add_UserServiceServicer_to_server,
                "counterpick.user.v1.UserService",
            )
        ],
        verifier=TokenVerifier(
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            fetch_keys=jwks_from_auth(f"127.0.0.1:{auth_port}"),
            deny_list=DenyList(redis_url),
        ),
    )
    await user_server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{auth_port}") as channel:
        yield Auth(pb_grpc.AuthServiceStub(channel), users, auth_port, settings, user_server)
    await user_server.stop(0)
    await auth_server.stop(0)


async def login(
    auth: Auth, provider: OpenIdProvider, steamid: int = STEAMID
) -> pb.CompleteSteamLoginResponse:
    begin = await auth.stub.BeginSteamLogin(pb.BeginSteamLoginRequest(return_to=RETURN_TO))
    params = provider.assert_login(begin.redirect_url, steamid)
    return await auth.stub.CompleteSteamLogin(
        pb.CompleteSteamLoginRequest(state=begin.state, openid_params=params)
    )


async def test_login_refresh_revoke_end_to_end(auth: Auth, provider: OpenIdProvider) -> None:
    begin = await auth.stub.BeginSteamLogin(pb.BeginSteamLoginRequest(return_to=RETURN_TO))
    assert begin.redirect_url.startswith(provider.endpoint + "?")
    assert "openid.mode=checkid_setup" in begin.redirect_url
    assert "identifier_select" in begin.redirect_url
    params = provider.assert_login(begin.redirect_url, STEAMID)
    assert params["openid.return_to"] == f"{RETURN_TO}?state={begin.state}"
    done = await auth.stub.CompleteSteamLogin(
        pb.CompleteSteamLoginRequest(state=begin.state, openid_params=params)
    )
    assert done.new_user
    assert done.account_id == STEAMID - 76561197960265728
    assert auth.users.callers == [frozenset({"service"})]  # auth called user as a service
    verifier = TokenVerifier(
        issuer="counterpick-auth",
        audience="counterpick",
        fetch_keys=jwks_from_auth(f"127.0.0.1:{auth.port}"),
        deny_list=DenyList(auth.settings.redis_url),
    )
    caller = await verifier.verify(done.tokens.access_token)
    assert (caller.user_id, caller.roles, caller.steamid64) == (
        done.user_id,
        frozenset({"user"}),
        STEAMID,
    )
    expires = done.tokens.access_expires_at.ToDatetime(tzinfo=UTC)
    assert timedelta(minutes=14) < expires - datetime.now(UTC) <= timedelta(minutes=15)
    again = await login(auth, provider)
    assert not again.new_user
    assert again.user_id == done.user_id

    refreshed = await auth.stub.RefreshToken(
        pb.RefreshTokenRequest(refresh_token=done.tokens.refresh_token)
    )
    assert refreshed.tokens.refresh_token != done.tokens.refresh_token
    assert (await verifier.verify(refreshed.tokens.access_token)).user_id == done.user_id
    # Theft detection: the used token comes back, the family dies, the thief's copy too.
    reused = await fails(
        auth.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=done.tokens.refresh_token))
    )
    assert reused.code == grpc.StatusCode.UNAUTHENTICATED
    assert reused.reason == "ERROR_REASON_TOKEN_REUSED"
    # The access tokens the user held are denied everywhere too, not only the refresh tokens:
    # a verifier reading the deny list now refuses the token the stolen login had yielded.
    fresh = TokenVerifier(
        issuer="counterpick-auth",
        audience="counterpick",
        fetch_keys=jwks_from_auth(f"127.0.0.1:{auth.port}"),
        deny_list=DenyList(auth.settings.redis_url),
    )
    with pytest.raises(TokenInvalid, match="revoked"):
        await fresh.verify(refreshed.tokens.access_token)
    after = await fails(
        auth.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=refreshed.tokens.refresh_token))
    )
    assert after.reason == "ERROR_REASON_TOKEN_INVALID"
    # The other session (second login) is a different family: still alive, then revoked.
    revoked = await auth.stub.RevokeToken(
        pb.RevokeTokenRequest(refresh_token=again.tokens.refresh_token)
    )
    assert revoked.revoked_count == 1
    assert (
        await auth.stub.RevokeToken(pb.RevokeTokenRequest(refresh_token=again.tokens.refresh_token))
    ).revoked_count == 0
    gone = await fails(
        auth.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=again.tokens.refresh_token))
    )
    assert gone.reason == "ERROR_REASON_TOKEN_INVALID"
    jwks = await auth.stub.GetJwks(pb.GetJwksRequest())
    assert jwks.keys[0].alg == "EdDSA"
    assert jwks.keys[0].kty == "OKP"


async def test_refresh_and_access_tokens_cannot_stand_in_for_each_other(
    auth: Auth, provider: OpenIdProvider
) -> None:
    done = await login(auth, provider)
    as_refresh = await fails(
        auth.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=done.tokens.access_token))
    )
    assert as_refresh.reason == "ERROR_REASON_TOKEN_INVALID"
    as_access = await fails(
        auth.stub.RevokeToken(
            pb.RevokeTokenRequest(all_sessions=True),
            metadata=bearer(done.tokens.refresh_token),
        )
    )
    assert as_access.code == grpc.StatusCode.UNAUTHENTICATED
    empty = await fails(auth.stub.RefreshToken(pb.RefreshTokenRequest()))
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_introspection_needs_a_service_or_admin_and_sees_revocations(
    auth: Auth, provider: OpenIdProvider
) -> None:
    user = await login(auth, provider)
    admin = await login(auth, provider, steamid=76561198000000099)
    request = pb.IntrospectTokenRequest(token=user.tokens.access_token)
    denied = await fails(
        auth.stub.IntrospectToken(request, metadata=bearer(user.tokens.access_token))
    )
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    anonymous = await fails(auth.stub.IntrospectToken(request))
    assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED
    as_admin = bearer(admin.tokens.access_token)
    seen = await auth.stub.IntrospectToken(request, metadata=as_admin)
    assert seen.active
    assert seen.token_type == pb.TOKEN_TYPE_ACCESS
    assert seen.subject == user.user_id
    refresh = await auth.stub.IntrospectToken(
        pb.IntrospectTokenRequest(token=user.tokens.refresh_token), metadata=as_admin
    )
    assert refresh.active
    assert refresh.token_type == pb.TOKEN_TYPE_REFRESH
    revoked = await auth.stub.RevokeToken(
        pb.RevokeTokenRequest(all_sessions=True),
        metadata=bearer(user.tokens.access_token),
    )
    assert revoked.revoked_count == 2  # one family and the access token itself
    assert not (await auth.stub.IntrospectToken(request, metadata=as_admin)).active
    assert not (
        await auth.stub.IntrospectToken(
            pb.IntrospectTokenRequest(token=user.tokens.refresh_token), metadata=as_admin
        )
    ).active
    assert not (
        await auth.stub.IntrospectToken(pb.IntrospectTokenRequest(token="x.y.z"), metadata=as_admin)
    ).active


def tamper(params: dict[str, str], **changes: str) -> dict[str, str]:
    return dict(params, **{f"openid.{key}": value for key, value in changes.items()})


async def test_every_forged_or_replayed_assertion_is_refused(
    auth: Auth, provider: OpenIdProvider
) -> None:
    async def attempt(make: Any) -> Failure:
        begin = await auth.stub.BeginSteamLogin(pb.BeginSteamLoginRequest(return_to=RETURN_TO))
        params = make(provider.assert_login(begin.redirect_url, STEAMID))
        return await fails(
            auth.stub.CompleteSteamLogin(
                pb.CompleteSteamLoginRequest(state=begin.state, openid_params=params)
            )
        )

    stale_time = datetime.now(UTC) - timedelta(minutes=20)
    cases: list[tuple[str, Any, grpc.StatusCode]] = [
        (
            "claimed_id of another domain",
            lambda p: provider.resign(
                tamper(
                    p,
                    claimed_id=f"https://evil.example/openid/id/{STEAMID}",
                    identity=f"https://evil.example/openid/id/{STEAMID}",
                )
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (
            "return_to of another site",
            lambda p: provider.resign(tamper(p, return_to="https://evil.example/callback")),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (
            "tampered claimed_id, old signature",
            lambda p: tamper(
                p,
                claimed_id="https://steamcommunity.com/openid/id/76561198000000001",
                identity="https://steamcommunity.com/openid/id/76561198000000001",
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (
            "stale nonce",
            lambda p: provider.resign(
                tamper(p, response_nonce=stale_time.strftime("%Y-%m-%dT%H:%M:%SZ") + "abc")
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (
            "missing signature",
            lambda p: {k: v for k, v in p.items() if k != "openid.sig"},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "unsigned claimed_id",
            lambda p: provider.resign(tamper(p, signed="signed,op_endpoint,return_to")),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (
            "another provider",
            lambda p: provider.resign(tamper(p, op_endpoint="https://evil.example/openid/login")),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        ("user cancelled", lambda p: tamper(p, mode="cancel"), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for name, make, code in cases:
        error = await attempt(make)
        assert error.code == code, name
        if code == grpc.StatusCode.UNAUTHENTICATED:
            assert error.reason == "ERROR_REASON_LOGIN_FAILED", name
    provider.answer_invalid = True
    rejected = await attempt(lambda p: p)
    assert rejected.reason == "ERROR_REASON_LOGIN_FAILED"
    assert "did not confirm" in rejected.message
    provider.answer_invalid = False
    assert auth.users.created == {}  # not one forgery created a user

    # Replays: the same assertion under a new state, and the same state twice.
    begin = await auth.stub.BeginSteamLogin(pb.BeginSteamLoginRequest(return_to=RETURN_TO))
    params = provider.assert_login(begin.redirect_url, STEAMID)
    await auth.stub.CompleteSteamLogin(
        pb.CompleteSteamLoginRequest(state=begin.state, openid_params=params)
    )
    again = await fails(
        auth.stub.CompleteSteamLogin(
            pb.CompleteSteamLoginRequest(state=begin.state, openid_params=params)
        )
    )
    assert again.reason == "ERROR_REASON_LOGIN_FAILED"
    second = await auth.stub.BeginSteamLogin(pb.BeginSteamLoginRequest(return_to=RETURN_TO))
    replayed = dict(params)  # same nonce, but our return_to now carries the new state
    error = await fails(
        auth.stub.CompleteSteamLogin(
            pb.CompleteSteamLoginRequest(state=second.state, openid_params=replayed)
        )
    )
    assert error.reason == "ERROR_REASON_LOGIN_FAILED"
    bad_origin = await fails(
        auth.stub.BeginSteamLogin(pb.BeginSteamLoginRequest(return_to="https://evil.example/cb"))
    )
    assert bad_origin.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_login_attempts_are_rate_limited_per_address(
    tmp_path: Path, postgres_dsn: str, redis_url: str, provider: OpenIdProvider
) -> None:
    settings = AuthSettings.model_validate(
        {
            "port": 0,
            "postgres_dsn": postgres_dsn,
            "redis_url": redis_url,
            "auth_keys_dir": str(tmp_path / "keys"),
            "steam_openid_endpoint": provider.endpoint,
            "auth_login_calls_per_minute": 3,
        }
    )
    server = build_server(settings)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AuthServiceStub(channel)
            for _ in range(3):
                await stub.BeginSteamLogin(pb.BeginSteamLoginRequest(return_to=RETURN_TO))
            limited = await fails(
                stub.BeginSteamLogin(pb.BeginSteamLoginRequest(return_to=RETURN_TO))
            )
            assert limited.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert limited.reason == "ERROR_REASON_RATE_LIMITED"
    finally:
        await server.stop(0)


async def test_an_unreachable_provider_is_unavailable_and_creates_no_user(
    tmp_path: Path, postgres_dsn: str, redis_url: str, provider: OpenIdProvider
) -> None:
    users = Users()  # type: ignore[abstract]  # a stand-in: only what auth calls
    settings = AuthSettings.model_validate(
        {
            "port": 0,
            "postgres_dsn": postgres_dsn,
            "redis_url": redis_url,
            "auth_keys_dir": str(tmp_path / "keys"),
            "steam_openid_endpoint": provider.endpoint,
            "user_addr": f"127.0.0.1:{free_port()}",
            "steam_timeout_seconds": 2,
        }
    )
    server = build_server(settings)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AuthServiceStub(channel)
            begin = await stub.BeginSteamLogin(pb.BeginSteamLoginRequest(return_to=RETURN_TO))
            params = provider.assert_login(begin.redirect_url, STEAMID)
            provider.stop()
            error = await fails(
                stub.CompleteSteamLogin(
                    pb.CompleteSteamLoginRequest(state=begin.state, openid_params=params)
                )
            )
            assert error.code == grpc.StatusCode.UNAVAILABLE
            assert error.metadata["dependency"] == "steam"
            assert users.created == {}
    finally:
        await server.stop(0)


def verifier_of(auth: Auth, port: int | None = None) -> TokenVerifier:
    return TokenVerifier(
        issuer="counterpick-auth",
        audience="counterpick",
        fetch_keys=jwks_from_auth(f"127.0.0.1:{port or auth.port}"),
        deny_list=DenyList(auth.settings.redis_url),
    )


async def test_a_refresh_carries_the_current_roles_and_tier(
    auth: Auth, provider: OpenIdProvider
) -> None:
    admin = await login(auth, provider, steamid=76561198000000099)
    verifier = verifier_of(auth)
    first = await verifier.verify(admin.tokens.access_token)
    assert (first.roles, first.tier) == (frozenset({"user", "admin"}), "free")

    # The tier changed in the user service: the next refresh says so.
    auth.users.tiers[admin.user_id] = common_pb2.SUBSCRIPTION_TIER_PRO
    upgraded = await auth.stub.RefreshToken(
        pb.RefreshTokenRequest(refresh_token=admin.tokens.refresh_token)
    )
    assert (await verifier.verify(upgraded.tokens.access_token)).tier == "pro"

    # Demoted: the admin list no longer names the account (a configuration change and restart).
    demoted_settings = auth.settings.model_copy(update={"auth_admin_steamids": ""})
    demoted_server = build_server(demoted_settings)
    port = await demoted_server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AuthServiceStub(channel)
            auth.users.tiers[admin.user_id] = common_pb2.SUBSCRIPTION_TIER_FREE
            refreshed = await stub.RefreshToken(
                pb.RefreshTokenRequest(refresh_token=upgraded.tokens.refresh_token)
            )
            caller = await verifier_of(auth, port).verify(refreshed.tokens.access_token)
            assert (caller.roles, caller.tier) == (frozenset({"user"}), "free")
    finally:
        await demoted_server.stop(0)


async def test_a_refresh_fails_safe_when_the_user_service_cannot_answer(
    auth: Auth, provider: OpenIdProvider
) -> None:
    done = await login(auth, provider)
    await auth.user_server.stop(0)
    down = await fails(
        auth.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=done.tokens.refresh_token))
    )
    assert down.code == grpc.StatusCode.UNAVAILABLE
    assert down.metadata["dependency"] == "user"
    await auth.user_server.start()
    # The outage did not use the refresh token up: it works once auth's channel reconnects
    # (each UNAVAILABLE meanwhile leaves the token as it was).
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            refreshed = await auth.stub.RefreshToken(
                pb.RefreshTokenRequest(refresh_token=done.tokens.refresh_token)
            )
            break
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            assert asyncio.get_running_loop().time() < deadline, "the user service stayed away"
            await asyncio.sleep(0.2)
    # A deleted account cannot refresh any more.
    auth.users.deleted.add(done.user_id)
    gone = await fails(
        auth.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=refreshed.tokens.refresh_token))
    )
    assert gone.code == grpc.StatusCode.UNAUTHENTICATED
    assert gone.reason == "ERROR_REASON_TOKEN_INVALID"
