"""gRPC wiring of the auth service: Steam login, token pairs, rotation, revocation, JWKS."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import grpc
import httpx

from counterpick.auth.v1 import auth_service_pb2 as pb
from counterpick.auth.v1 import auth_service_pb2_grpc as pb_grpc
from counterpick.common.v1 import common_pb2
from counterpick.user.v1 import user_service_pb2 as user_pb
from counterpick.user.v1 import user_service_pb2_grpc as user_grpc
from services.auth import openid
from services.auth.config import AuthSettings
from services.auth.keys import KeyRing
from services.auth.store import (
    LoginStateStore,
    RefreshTokenStore,
    Session,
    migrate,
    utc_now,
)
from services.auth.tokens import issue_access_token, parse_refresh_token
from services.common.errors import DependencyUnavailable, InvalidArgument, PermissionDenied
from services.common.rate_limit import Quota, RateLimiter, caller_key
from services.common.server import GrpcServer, registration
from services.common.stores import Stores
from services.common.timestamps import to_timestamp as _timestamp
from services.common.tokens import KeySet, TokenInvalid, TokenVerifier, require_caller

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AuthService"].full_name
_TIERS = {
    common_pb2.SUBSCRIPTION_TIER_FREE: "free",
    common_pb2.SUBSCRIPTION_TIER_PLUS: "plus",
    common_pb2.SUBSCRIPTION_TIER_PRO: "pro",
}
_TIER_PROTO = {name: number for number, name in _TIERS.items()}

SteamCheck = Callable[[dict[str, str]], Awaitable[bool]]


class AuthRuntime:
    """The stores, keys and clients the RPCs use; built on start."""

    def __init__(self, settings: AuthSettings, stores: Stores) -> None:
        self.settings = settings
        self._stores = stores
        self.ring: KeyRing | None = None
        self.refresh: RefreshTokenStore | None = None
        self.logins: LoginStateStore | None = None
        self.verifier: TokenVerifier | None = None
        self._http: httpx.AsyncClient | None = None
        self.limiter: RateLimiter | None = None
        self._user_channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        """Load keys, migrate the token tables, open the clients."""
        settings = self.settings
        assert self._stores.postgres is not None
        assert self._stores.redis is not None
        self.ring = await asyncio.to_thread(
            KeyRing.load, settings.auth_keys_dir, create=settings.auth_generate_key
        )
        applied = await migrate(self._stores.postgres)
        if applied:
            log.info("auth tables migrated", extra={"fields": {"applied": applied}})
        self.refresh = RefreshTokenStore(
            self._stores.postgres, timedelta(seconds=settings.refresh_token_seconds)
        )
        self.logins = LoginStateStore(
            self._stores.redis,
            state_ttl=timedelta(seconds=settings.login_state_seconds),
            nonce_ttl=openid.NONCE_MAX_AGE * 2,
        )
        ring = self.ring

        async def own_keys() -> KeySet:
            return KeySet.from_jwks(ring.jwks())

        self.verifier = TokenVerifier(
            issuer=settings.token_issuer, audience=settings.token_audience, fetch_keys=own_keys
        )
        self._http = httpx.AsyncClient(timeout=settings.steam_timeout_seconds)
        self.limiter = RateLimiter(self._stores.redis, prefix="counterpick:rate:auth", name="auth")
        self._user_channel = grpc.aio.insecure_channel(settings.user_addr)

    async def stop(self) -> None:
        """Close the clients."""
        if self._http is not None:
            await self._http.aclose()
        if self._user_channel is not None:
            await self._user_channel.close()

    async def limit(self, kind: str, key: str) -> None:
        """Count one call against the per-minute quota of `kind` (login or refresh)."""
        assert self.limiter is not None
        calls = (
            self.settings.auth_login_calls_per_minute
            if kind == "login"
            else self.settings.auth_refresh_calls_per_minute
        )
        await self.limiter.hit(key, Quota(kind, calls, 60.0))

    async def steam_confirms(self, params: dict[str, str]) -> bool:
        """Ask Steam (check_authentication) whether it issued this assertion."""
        assert self._http is not None
        try:
            response = await self._http.post(
                self.settings.steam_openid_endpoint,
                data=openid.check_authentication_form(params),
            )
        except httpx.HTTPError as error:
            raise DependencyUnavailable("steam", f"Steam could not be asked: {error}") from error
        if response.status_code >= 500:
            raise DependencyUnavailable("steam", f"Steam answered HTTP {response.status_code}")
        return response.status_code == 200 and openid.is_valid_response(response.text)

    def service_token(self) -> str:
        """A short access token for calls to other services as the "service" role."""
        assert self.ring is not None
        return issue_access_token(
            self.ring,
            issuer=self.settings.token_issuer,
            audience=self.settings.token_audience,
            user_id="service:auth",
            roles=["service"],
            now=int(utc_now().timestamp()),
            lifetime_seconds=120,
        ).token

    async def upsert_user(self, steamid64: int) -> tuple[str, str, bool]:
        """(user id, tier, created) of the Steam account, through the user service."""
        assert self._user_channel is not None
        stub = user_grpc.UserServiceStub(self._user_channel)
        try:
            response = await stub.UpsertSteamUser(
                user_pb.UpsertSteamUserRequest(steamid64=steamid64),
                metadata=(("authorization", f"Bearer {self.service_token()}"),),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            raise DependencyUnavailable(
                "user", f"the user service could not record the login: {error.details()}"
            ) from error
        profile = response.profile
        return profile.user_id, _TIERS.get(profile.tier, "free"), response.created

    async def token_pair(self, session: Session, now: datetime) -> pb.TokenPair:
        """A new access token plus the next refresh token of the session's family."""
        assert self.ring is not None
        assert self.refresh is not None
        secret, refresh_expires = await self.refresh.start_family(session, now)
        return self.pair(session, now, secret.token, refresh_expires)

    def pair(
        self, session: Session, now: datetime, refresh_token: str, refresh_expires: datetime
    ) -> pb.TokenPair:
        assert self.ring is not None
        access = issue_access_token(
            self.ring,
            issuer=self.settings.token_issuer,
            audience=self.settings.token_audience,
            user_id=session.user_id,
            roles=session.roles,
            now=int(now.timestamp()),
            steamid64=session.steamid64,
            tier=session.tier,
            lifetime_seconds=self.settings.access_token_seconds,
        )
        return pb.TokenPair(
            access_token=access.token,
            access_expires_at=_timestamp(access.expires_at),
            refresh_token=refresh_token,
            refresh_expires_at=_timestamp(refresh_expires),
            token_type="Bearer",  # noqa: S106 - the RFC 6750 scheme name, not a secret
        )


class AuthServicer(pb_grpc.AuthServiceServicer):
    """counterpick.auth.v1.AuthService."""

    def __init__(self, runtime: AuthRuntime) -> None:
        self._runtime = runtime

    async def BeginSteamLogin(
        self, request: pb.BeginSteamLoginRequest, context: Any
    ) -> pb.BeginSteamLoginResponse:
        settings = self._runtime.settings
        assert self._runtime.logins is not None
        await self._runtime.limit("login", caller_key(None, context.peer()))
        return_to = openid.check_return_to(request.return_to, settings.allowed_origins())
        state = secrets.token_urlsafe(32)
        full_return_to = openid.with_state(return_to, state)
        login = await self._runtime.logins.remember(state, full_return_to, utc_now())
        return pb.BeginSteamLoginResponse(
            redirect_url=openid.redirect_url(
                settings.steam_openid_endpoint, full_return_to, openid.realm_of(return_to)
            ),
            state=state,
            expires_at=_timestamp(login.expires_at),
        )

    async def CompleteSteamLogin(
        self, request: pb.CompleteSteamLoginRequest, context: Any
    ) -> pb.CompleteSteamLoginResponse:
        runtime = self._runtime
        assert runtime.logins is not None
        params = dict(request.openid_params)
        await runtime.limit("login", caller_key(None, context.peer()))
        if not request.state:
            raise InvalidArgument("state is required", field="state")
        expected = await runtime.logins.take(request.state)
        if expected is None:
            raise openid.LoginFailed("the login state is unknown, expired or already used")
        now = utc_now()
        endpoint = runtime.settings.steam_openid_endpoint
        assertion = openid.check_assertion(
            params, expected_return_to=expected, endpoint=endpoint, now=now
        )
        if not await runtime.logins.first_use_of_nonce(endpoint, assertion.nonce):
            raise openid.LoginFailed("the assertion was already used (replayed nonce)")
        if not await runtime.steam_confirms(params):
            raise openid.LoginFailed("Steam did not confirm the assertion")
        user_id, tier, created = await runtime.upsert_user(assertion.steamid64)
        admin = assertion.steamid64 in runtime.settings.admin_steamids()
        session = Session(
            user_id=user_id,
            steamid64=assertion.steamid64,
            roles=("user", "admin") if admin else ("user",),
            tier=tier,
            family_id=str(uuid.uuid4()),
        )
        log.info("steam login", extra={"fields": {"user_id": user_id, "new_user": created}})
        return pb.CompleteSteamLoginResponse(
            tokens=await runtime.token_pair(session, now),
            user_id=user_id,
            steamid64=assertion.steamid64,
            account_id=assertion.account_id,
            new_user=created,
        )

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: Any
    ) -> pb.RefreshTokenResponse:
        runtime = self._runtime
        assert runtime.refresh is not None
        if not request.refresh_token:
            raise InvalidArgument("refresh_token is required", field="refresh_token")
        presented = parse_refresh_token(request.refresh_token)
        if presented is None:
            raise TokenInvalid("this is not a refresh token")
        await runtime.limit("refresh", f"token:{presented.token_id}")
        now = utc_now()
        session, secret, expires = await runtime.refresh.rotate(presented, now)
        return pb.RefreshTokenResponse(tokens=runtime.pair(session, now, secret.token, expires))

    async def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: Any
    ) -> pb.RevokeTokenResponse:
        runtime = self._runtime
        assert runtime.refresh is not None
        now = utc_now()
        target = request.WhichOneof("target")
        if target == "refresh_token":
            presented = parse_refresh_token(request.refresh_token)
            if presented is None:
                return pb.RevokeTokenResponse(revoked_count=0)
            return pb.RevokeTokenResponse(
                revoked_count=await runtime.refresh.revoke_family_of(presented, now)
            )
        if target == "access_token_jti":
            caller = require_caller()
            # Only the caller's own token can be attributed without a jti registry; an admin
            # may deny any jti.
            if request.access_token_jti != caller.jti and not caller.has_any_role("admin"):
                raise PermissionDenied("the token to revoke is not the caller's own")
            expires = now + timedelta(seconds=runtime.settings.access_token_seconds)
            count = await runtime.refresh.deny_access_token(
                request.access_token_jti, caller.user_id, expires
            )
            return pb.RevokeTokenResponse(revoked_count=count)
        if target == "all_sessions":
            if not request.all_sessions:
                raise InvalidArgument("all_sessions must be true", field="all_sessions")
            caller = require_caller()
            families = await runtime.refresh.revoke_user(caller.user_id, now)
            denied = await runtime.refresh.deny_access_token(
                caller.jti, caller.user_id, datetime.fromtimestamp(caller.expires_at, now.tzinfo)
            )
            return pb.RevokeTokenResponse(revoked_count=families + denied)
        raise InvalidArgument(
            "one of refresh_token, access_token_jti, all_sessions is required", field="target"
        )

    async def IntrospectToken(
        self, request: pb.IntrospectTokenRequest, context: Any
    ) -> pb.IntrospectTokenResponse:
        runtime = self._runtime
        assert runtime.refresh is not None
        assert runtime.verifier is not None
        require_caller("service", "admin")
        presented = parse_refresh_token(request.token)
        now = utc_now()
        if presented is not None:
            state = await runtime.refresh.refresh_token_state(presented, now)
            if state is None:
                return pb.IntrospectTokenResponse(active=False)
            session, issued, expires = state
            return pb.IntrospectTokenResponse(
                active=True,
                subject=session.user_id,
                steamid64=session.steamid64,
                roles=list(session.roles),
                tier=_TIER_PROTO.get(session.tier, common_pb2.SUBSCRIPTION_TIER_FREE),
                token_type=pb.TOKEN_TYPE_REFRESH,
                jti=presented.token_id,
                issued_at=_timestamp(issued),
                expires_at=_timestamp(expires),
            )
        try:
            caller = await runtime.verifier.verify(request.token)
        except Exception:
            return pb.IntrospectTokenResponse(active=False)
        if await runtime.refresh.is_access_token_denied(caller.jti):
            return pb.IntrospectTokenResponse(active=False)
        return pb.IntrospectTokenResponse(
            active=True,
            subject=caller.user_id,
            steamid64=caller.steamid64,
            roles=sorted(caller.roles),
            tier=_TIER_PROTO.get(caller.tier, common_pb2.SUBSCRIPTION_TIER_FREE),
            scopes=list(caller.scopes),
            token_type=pb.TOKEN_TYPE_ACCESS,
            jti=caller.jti,
            expires_at=_timestamp(caller.expires_at),
        )

    async def GetJwks(self, request: pb.GetJwksRequest, context: Any) -> pb.GetJwksResponse:
        ring = self._runtime.ring
        assert ring is not None
        document = ring.jwks()
        return pb.GetJwksResponse(
            keys=[pb.Jwk(**key) for key in document["keys"]],
            jwks_json=json.dumps(document),
        )


def build_server(settings: AuthSettings) -> GrpcServer:
    """The auth server; it verifies callers' tokens with its own keys (no JWKS round trip)."""
    stores = Stores(settings)
    runtime = AuthRuntime(settings, stores)

    async def own_keys() -> KeySet:
        assert runtime.ring is not None
        return KeySet.from_jwks(runtime.ring.jwks())

    return GrpcServer(
        name="auth",
        settings=settings,
        services=[
            registration(
                AuthServicer(runtime), pb_grpc.add_AuthServiceServicer_to_server, SERVICE_NAME
            )
        ],
        on_start=[stores.open, runtime.start],
        on_stop=[runtime.stop, stores.close],
        verifier=TokenVerifier(
            issuer=settings.token_issuer, audience=settings.token_audience, fetch_keys=own_keys
        ),
    )
