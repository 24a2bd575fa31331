"""gRPC wiring of the auth service: Steam login, token pairs, rotation, revocation, JWKS."""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from counterpick.auth.v1 import auth_service_pb2 as pb
from counterpick.auth.v1 import auth_service_pb2_grpc as pb_grpc
from counterpick.common.v1 import common_pb2
from services.auth import api_keys, openid
from services.auth.api_keys import ApiKey
from services.auth.config import AuthSettings
from services.auth.repo import Session, TokenReused, utc_now
from services.auth.runtime import AuthRuntime, IssuedTokens
from services.auth.tokens import parse_refresh_token
from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from services.common.rate_limit import caller_key
from services.common.server import GrpcServer, registration
from services.common.stores import Stores
from services.common.timestamps import to_timestamp as _timestamp
from services.common.tokens import (
    LEEWAY_SECONDS,
    KeySet,
    TokenInvalid,
    require_caller,
    verifier_from_settings,
)

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AuthService"].full_name
_TIER_PROTO = {
    "free": common_pb2.SUBSCRIPTION_TIER_FREE,
    "plus": common_pb2.SUBSCRIPTION_TIER_PLUS,
    "pro": common_pb2.SUBSCRIPTION_TIER_PRO,
}


def _api_key_pb(key: ApiKey) -> pb.ApiKey:
    return pb.ApiKey(
        key_id=key.key_id,
        name=key.name,
        scopes=list(key.scopes),
        prefix=key.prefix,
        created_at=_timestamp(key.created_at),
        last_used_at=_timestamp(key.last_used_at) if key.last_used_at else None,
        revoked_at=_timestamp(key.revoked_at) if key.revoked_at else None,
    )


def _token_pair(issued: IssuedTokens) -> pb.TokenPair:
    return pb.TokenPair(
        access_token=issued.access.token,
        access_expires_at=_timestamp(issued.access.expires_at),
        refresh_token=issued.refresh_token,
        refresh_expires_at=_timestamp(issued.refresh_expires_at),
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
        session = Session(
            user_id=user_id,
            steamid64=assertion.steamid64,
            roles=runtime.roles_of(assertion.steamid64),
            tier=tier,
            family_id=str(uuid.uuid4()),
        )
        log.info("steam login", extra={"fields": {"user_id": user_id, "new_user": created}})
        return pb.CompleteSteamLoginResponse(
            tokens=_token_pair(await runtime.start_session(session, now)),
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
        # The new access token carries what the user may do now, not what the old one said.
        # Looked up before the rotation, so a user service outage does not use up the token.
        usable = await runtime.refresh.refresh_token_state(presented, now)
        grants = await runtime.current_grants(usable[0]) if usable is not None else None
        try:
            session, secret, expires = await runtime.refresh.rotate(presented, now, grants)
        except TokenReused as theft:
            # The thief (or the victim) may hold access tokens of that login: deny every token
            # the user holds now; the victim's other sessions get new ones by refreshing.
            await runtime.deny_user_tokens(theft.user_id, now)
            raise
        return pb.RefreshTokenResponse(
            tokens=_token_pair(runtime.issue(session, now, secret.token, expires))
        )

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
            # No token of any kind lives longer than this, so the denial may end then.
            longest = max(
                runtime.settings.access_token_seconds, runtime.settings.api_key_token_seconds
            )
            expires = now + timedelta(seconds=longest + LEEWAY_SECONDS)
            count = await runtime.refresh.deny_access_token(
                request.access_token_jti, caller.user_id, expires
            )
            await runtime.deny(f"jti:{request.access_token_jti}", expires)
            return pb.RevokeTokenResponse(revoked_count=count)
        if target == "all_sessions":
            if not request.all_sessions:
                raise InvalidArgument("all_sessions must be true", field="all_sessions")
            caller = require_caller()
            families = await runtime.refresh.revoke_user(caller.user_id, now)
            until = datetime.fromtimestamp(caller.expires_at + LEEWAY_SECONDS, now.tzinfo)
            denied = await runtime.refresh.deny_access_token(caller.jti, caller.user_id, until)
            await runtime.deny(f"jti:{caller.jti}", until)
            # Every other unexpired access token of the user, whichever session holds it.
            await runtime.deny_user_tokens(caller.user_id, now)
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

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Any
    ) -> pb.CreateApiKeyResponse:
        runtime = self._runtime
        assert runtime.api_keys is not None
        caller = require_caller()
        name, scopes = api_keys.check_new_key(caller, request.name, request.scopes)
        secret = api_keys.new_api_key_secret()
        key = await runtime.api_keys.create(
            ApiKey(
                key_id=str(uuid.uuid4()),
                owner_user_id=caller.user_id,
                owner_steamid64=caller.steamid64,
                name=name,
                scopes=scopes,
                prefix=secret.prefix,
                created_at=utc_now(),
            ),
            secret.secret_hash,
            api_keys.check_quota,
        )
        log.info(
            "api key created", extra={"fields": {"user_id": caller.user_id, "key_id": key.key_id}}
        )
        return pb.CreateApiKeyResponse(api_key=_api_key_pb(key), secret=secret.secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Any
    ) -> pb.ListApiKeysResponse:
        assert self._runtime.api_keys is not None
        caller = require_caller()
        keys = await self._runtime.api_keys.listing(caller.user_id)
        return pb.ListApiKeysResponse(api_keys=[_api_key_pb(key) for key in keys])

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Any
    ) -> pb.RevokeApiKeyResponse:
        runtime = self._runtime
        assert runtime.api_keys is not None
        caller = require_caller()
        key = await runtime.api_keys.get(request.key_id)
        if key is None or not api_keys.may_revoke(caller, key):
            # Another user's key looks exactly like a missing one: ids are not disclosed.
            raise NotFound("no such API key", metadata={"key_id": request.key_id})
        now = utc_now()
        revoked = await runtime.api_keys.revoke(key.key_id, now)
        # Tokens exchanged before now live at most this long; the denial can end after them.
        lifetime = runtime.settings.api_key_token_seconds + LEEWAY_SECONDS
        await runtime.deny(f"key:{key.key_id}", now + timedelta(seconds=lifetime))
        log.info(
            "api key revoked", extra={"fields": {"user_id": caller.user_id, "key_id": key.key_id}}
        )
        return pb.RevokeApiKeyResponse(api_key=_api_key_pb(revoked))

    async def ExchangeApiKey(
        self, request: pb.ExchangeApiKeyRequest, context: Any
    ) -> pb.ExchangeApiKeyResponse:
        runtime = self._runtime
        await runtime.limit("exchange", caller_key(None, context.peer()))
        if not request.api_key:
            raise InvalidArgument("api_key is required", field="api_key")
        token, scopes = await runtime.exchange(request.api_key, utc_now())
        return pb.ExchangeApiKeyResponse(
            access_token=token.token,
            access_expires_at=_timestamp(token.expires_at),
            scopes=list(scopes),
            token_type="Bearer",  # noqa: S106 - the RFC 6750 scheme name, not a secret
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
        verifier=verifier_from_settings(settings, own_keys),
    )
