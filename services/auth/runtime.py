"""What the auth RPCs run on: signing keys, token and login stores, the Steam and user clients,
and the job that prunes unusable refresh tokens.

Built once per server, started after the shared stores open and stopped before they close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
import httpx

from counterpick.common.v1 import common_pb2
from counterpick.user.v1 import user_service_pb2 as user_pb
from counterpick.user.v1 import user_service_pb2_grpc as user_grpc
from services.auth import api_keys, openid
from services.auth.api_keys import ApiKey, ServiceCredential
from services.auth.config import AuthSettings
from services.auth.keys import KeyRing
from services.auth.repo import (
    ApiKeyStore,
    DenyListWriter,
    Grants,
    LoginStateStore,
    RefreshTokenStore,
    Session,
    migrate,
    utc_now,
)
from services.auth.tokens import AccessToken, issue_access_token
from services.common.channels import open_channel
from services.common.errors import DependencyUnavailable
from services.common.rate_limit import Quota, RateLimiter
from services.common.stores import Stores
from services.common.tokens import (
    LEEWAY_SECONDS,
    KeySet,
    TokenInvalid,
    TokenVerifier,
    verifier_from_settings,
)

log = logging.getLogger(__name__)

# The user service's tiers, by the names sessions and tokens carry.
_TIERS = {
    common_pb2.SUBSCRIPTION_TIER_FREE: "free",
    common_pb2.SUBSCRIPTION_TIER_PLUS: "plus",
    common_pb2.SUBSCRIPTION_TIER_PRO: "pro",
}


@dataclass(frozen=True)
class IssuedTokens:
    """A new access token with the refresh token that renews it."""

    access: AccessToken
    refresh_token: str
    refresh_expires_at: datetime


class AuthRuntime:
    """The stores, keys and clients the RPCs use; built on start."""

    def __init__(self, settings: AuthSettings, stores: Stores) -> None:
        self.settings = settings
        self._stores = stores
        self.ring: KeyRing | None = None
        self.refresh: RefreshTokenStore | None = None
        self.logins: LoginStateStore | None = None
        self.verifier: TokenVerifier | None = None
        self.api_keys: ApiKeyStore | None = None
        self.deny_list: DenyListWriter | None = None
        self.service_credentials: dict[bytes, ServiceCredential] = {}
        self._http: httpx.AsyncClient | None = None
        self.limiter: RateLimiter | None = None
        self._user_channel: grpc.aio.Channel | None = None
        self._prune_task: asyncio.Task[None] | None = None

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
            deployment=settings.deployment,
        )
        self.api_keys = ApiKeyStore(self._stores.postgres)
        self.deny_list = DenyListWriter(self._stores.redis, settings.deployment)
        self.service_credentials = settings.service_credentials()
        ring = self.ring

        async def own_keys() -> KeySet:
            return KeySet.from_jwks(ring.jwks())

        self.verifier = verifier_from_settings(settings, own_keys)
        self._http = httpx.AsyncClient(timeout=settings.steam_timeout_seconds)
        rate_prefix = settings.rate_limit_key_prefix or f"{settings.deployment}:rate"
        self.limiter = RateLimiter(self._stores.redis, prefix=f"{rate_prefix}:auth", name="auth")
        self._user_channel = open_channel(settings.user_addr)
        self._prune_task = asyncio.create_task(self._prune_periodically(), name="auth-prune")

    async def stop(self) -> None:
        """Stop the prune job, close the clients."""
        if self._prune_task is not None:
            self._prune_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prune_task
        if self._http is not None:
            await self._http.aclose()
        if self._user_channel is not None:
            await self._user_channel.close()

    async def prune(self, now: datetime) -> tuple[int, int]:
        """Delete unusable refresh-token families and expired access-token denials now."""
        assert self.refresh is not None
        retention = timedelta(seconds=self.settings.auth_revoked_retention_seconds)
        return await self.refresh.prune(now, now - retention)

    async def _prune_periodically(self) -> None:
        """Without it every login and refresh adds rows for ever; the first pass runs at start."""
        while True:
            try:
                tokens, denied = await self.prune(utc_now())
                if tokens or denied:
                    log.info(
                        "pruned unusable tokens",
                        extra={"fields": {"refresh_tokens": tokens, "denied_access": denied}},
                    )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # PostgreSQL briefly away: the next pass catches up.
                log.warning("pruning tokens failed: %s", error)
            await asyncio.sleep(self.settings.auth_prune_interval_seconds)

    def roles_of(self, steamid64: int) -> tuple[str, ...]:
        """The roles of a Steam account now (admins are configured in AUTH_ADMIN_STEAMIDS)."""
        admin = steamid64 in self.settings.admin_steamids()
        return ("user", "admin") if admin else ("user",)

    async def current_grants(self, session: Session) -> Grants:
        """The roles and tier the session's user holds now: roles from the configuration, the
        tier from the user service (its subscription may have changed since the last token)."""
        return await self.grants_of(session.user_id, session.steamid64)

    async def grants_of(self, user_id: str, steamid64: int) -> Grants:
        """The roles and tier a user holds now (see current_grants)."""
        assert self._user_channel is not None
        stub = user_grpc.UserServiceStub(self._user_channel)
        try:
            response = await stub.GetSubscription(
                user_pb.GetSubscriptionRequest(user_id=user_id),
                metadata=(("authorization", f"Bearer {self.service_token()}"),),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise TokenInvalid("the account of this token no longer exists") from error
            raise DependencyUnavailable(
                "user", f"the user service could not say the current tier: {error.details()}"
            ) from error
        tier = _TIERS.get(response.subscription.tier, "free")
        return Grants(self.roles_of(steamid64), tier)

    async def limit(self, kind: str, key: str) -> None:
        """Count one call against the per-minute quota of `kind` (login, refresh or exchange)."""
        assert self.limiter is not None
        calls = {
            "login": self.settings.auth_login_calls_per_minute,
            "refresh": self.settings.auth_refresh_calls_per_minute,
            "exchange": self.settings.auth_exchange_calls_per_minute,
        }[kind]
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

    async def start_session(self, session: Session, now: datetime) -> IssuedTokens:
        """A new access token plus the first refresh token of the session's family."""
        assert self.refresh is not None
        secret, refresh_expires = await self.refresh.start_family(session, now)
        return self.issue(session, now, secret.token, refresh_expires)

    def issue(
        self, session: Session, now: datetime, refresh_token: str, refresh_expires: datetime
    ) -> IssuedTokens:
        """A new access token for `session`, paired with the refresh token that renews it."""
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
        return IssuedTokens(access, refresh_token, refresh_expires)

    async def deny_user_tokens(self, user_id: str, now: datetime) -> None:
        """Deny every access token of `user_id` issued up to `now` (all sessions signed out,
        or a stolen refresh token came back), until the longest-lived of them has expired."""
        longest = max(self.settings.access_token_seconds, self.settings.api_key_token_seconds)
        until = now + timedelta(seconds=longest + LEEWAY_SECONDS)
        await self.deny(f"user:{user_id}:{int(now.timestamp())}", until)

    async def deny(self, member: str, until: datetime) -> None:
        """Put a revoked jti ("jti:<jti>") or API key ("key:<id>") on the mesh's deny list."""
        assert self.deny_list is not None
        try:
            await self.deny_list.deny(member, until)
        except Exception as error:
            # The revocation itself is stored (PostgreSQL); without Redis the other services
            # cannot hear of it and keep accepting the token until it expires: say so, loudly.
            log.error("could not publish a revocation to the deny list: %s", error)
            raise DependencyUnavailable("redis", "the revocation could not be published") from error

    async def exchange(self, secret: str, now: datetime) -> tuple[AccessToken, tuple[str, ...]]:
        """A short-lived access token for an API key or a service credential, and its scopes."""
        assert self.api_keys is not None
        assert self.ring is not None
        api_keys.check_presented(secret)
        digest = api_keys.hash_secret(secret)
        lifetime = self.settings.api_key_token_seconds
        settings = self.settings
        service = self.service_credentials.get(digest)
        if service is not None:
            token = issue_access_token(
                self.ring,
                issuer=settings.token_issuer,
                audience=settings.token_audience,
                user_id=service.subject,
                roles=["service"],
                now=int(now.timestamp()),
                scopes=service.scopes,
                lifetime_seconds=lifetime,
                api_key_id=service.subject,
            )
            return token, service.scopes
        key: ApiKey = api_keys.usable(await self.api_keys.use(digest, now))
        grants = await self.grants_of(key.owner_user_id, key.owner_steamid64)
        token = issue_access_token(
            self.ring,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            user_id=key.owner_user_id,
            roles=grants.roles,
            now=int(now.timestamp()),
            steamid64=key.owner_steamid64,
            tier=grants.tier,
            scopes=key.scopes,
            lifetime_seconds=lifetime,
            api_key_id=key.key_id,
        )
        return token, key.scopes
