"""Access-token validation shared by every service and the edge.

Access tokens are JWTs (RFC 9068 profile: `typ: at+jwt`) signed by the auth service with an
asymmetric key named by `kid`; services verify them locally against the public keys auth
publishes (JWKS), cached, with no call to auth per request. What is accepted is deliberately
narrow: the algorithm comes from the key, never from the token (no `none`, no HS256 signed with
a public key), and iss, aud, sub, jti, iat, nbf and exp are all required.

Refresh tokens are opaque strings, never JWTs, so one can never pass as an access token.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import redis.asyncio as aioredis
from jwt import PyJWK

from services.common.config import deployment_from_environment
from services.common.errors import DependencyUnavailable, PermissionDenied, Unauthenticated

if TYPE_CHECKING:
    from services.common.config import TokenSettings

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type (RFC 9068), not a secret
STEAM_ID64_BASE = 76561197960265728
# Clock skew tolerated between the issuer and a verifier, in seconds.
LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ("iss", "aud", "sub", "jti", "iat", "nbf", "exp")
# Algorithms a published key may declare; anything else in a JWKS is ignored.
ASYMMETRIC_ALGORITHMS = frozenset({"EdDSA", "ES256", "RS256"})
# The Redis sorted set of revoked access tokens and API keys: member "jti:<jti>" or
# "key:<api key id>", score = unix time after which the entry is moot (the tokens it denies have
# expired). Auth writes it; every verifier reads it. Under the deployment's prefix (DEPLOYMENT):
# `deny_list_key(deployment)`; this is the default deployment's.
DENY_LIST_KEY = "counterpick:auth:denied"


def deny_list_key(deployment: str) -> str:
    """The deny list of one deployment (see DENY_LIST_KEY)."""
    return f"{deployment}:auth:denied"


# How stale a verifier's copy of the deny list may be: the "within seconds" of revocation.
DENY_LIST_REFRESH_SECONDS = 2.0
log = logging.getLogger(__name__)


class TokenExpired(Unauthenticated):
    """The token was valid but its time is up."""

    reason = "ERROR_REASON_TOKEN_EXPIRED"


class TokenInvalid(Unauthenticated):
    """Malformed, badly signed, for another audience or issuer, not yet valid, or unknown key."""

    reason = "ERROR_REASON_TOKEN_INVALID"


class MissingToken(Unauthenticated):
    """The call needs a token and none was sent."""

    reason = "ERROR_REASON_UNAUTHENTICATED"


@dataclass(frozen=True)
class Caller:
    """Who is calling, as a verified access token says."""

    user_id: str
    roles: frozenset[str]
    jti: str
    expires_at: int
    steamid64: int = 0
    tier: str = "free"
    scopes: tuple[str, ...] = ()
    # The API key (or "service:<name>" credential) the token was exchanged for; "" for logins.
    api_key_id: str = ""
    # When the token was issued (its `iat`), for user-wide revocations ("user:<id>:<cutoff>").
    issued_at: int = 0

    @property
    def account_id(self) -> int | None:
        """The 32-bit Steam account id, for user tokens."""
        return self.steamid64 - STEAM_ID64_BASE if self.steamid64 else None

    def has_any_role(self, *roles: str) -> bool:
        """True if the caller holds one of `roles`."""
        return not self.roles.isdisjoint(roles)


@dataclass
class KeySet:
    """Verification keys by kid."""

    keys: dict[str, PyJWK] = field(default_factory=dict)

    @classmethod
    def from_jwks(cls, document: str | Mapping[str, Any]) -> KeySet:
        """Parse a JWK Set; keys without kid or with a non-asymmetric algorithm are skipped."""
        data = json.loads(document) if isinstance(document, str) else document
        keys: dict[str, PyJWK] = {}
        for entry in data.get("keys", []):
            kid, algorithm = entry.get("kid"), entry.get("alg")
            if not kid or algorithm not in ASYMMETRIC_ALGORITHMS or "d" in entry:
                continue  # a private key has no place in a verification set
            keys[kid] = PyJWK(entry, algorithm)
        return cls(keys)


KeySource = Callable[[], Awaitable[KeySet]]


class DenyList:
    """A local copy of the revoked jtis and API key ids, refreshed from Redis at most every
    `refresh_seconds` (one ZRANGEBYSCORE per interval and process, never one per call).

    The first check awaits a load; later refreshes run in the background while calls use the
    copy they have. When Redis is unreachable the last copy stays in force (logged): refusing
    every token because the deny list is away would turn a Redis outage into a full outage.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        refresh_seconds: float = DENY_LIST_REFRESH_SECONDS,
        deployment: str | None = None,
    ):
        """`deployment` unset: this process's DEPLOYMENT (the environment's)."""
        self._url = redis_url
        self._key = deny_list_key(deployment or deployment_from_environment())
        self._refresh_seconds = refresh_seconds
        self._denied: frozenset[str] = frozenset()
        self._user_cutoffs: dict[str, int] = {}
        self._loaded_at = float("-inf")
        self._client: aioredis.Redis | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def _redis(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        # A client's connections belong to the loop that opened them.
        if self._client is None or self._client_loop is not loop:
            self._client = aioredis.Redis.from_url(
                self._url, socket_connect_timeout=1, socket_timeout=1
            )
            self._client_loop = loop
        return self._client

    async def refresh(self) -> None:
        """Reload the copy now (entries whose tokens have expired are left out)."""
        try:
            members = await self._redis().zrangebyscore(self._key, time.time(), "+inf")
        except Exception as error:
            log.warning("the token deny list could not be read; keeping the last copy: %s", error)
            self._loaded_at = time.monotonic()  # retry after the interval, not on every call
            return
        denied = frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        cutoffs: dict[str, int] = {}
        for member in denied:
            # "user:<user id>:<unix seconds>": every token of that user issued at or before then.
            kind, _, rest = member.partition(":")
            user_id, _, cutoff = rest.rpartition(":")
            if kind == "user" and user_id and cutoff.isdigit():
                cutoffs[user_id] = max(cutoffs.get(user_id, 0), int(cutoff))
        self._denied, self._user_cutoffs = denied, cutoffs
        self._loaded_at = time.monotonic()

    async def _current(self) -> frozenset[str]:
        if self._loaded_at == float("-inf"):
            await self.refresh()
        elif time.monotonic() - self._loaded_at > self._refresh_seconds and (
            self._task is None or self._task.done()
        ):
            self._task = asyncio.get_running_loop().create_task(self.refresh())
        return self._denied

    async def check(self, caller: Caller) -> None:
        """Raise TokenInvalid when the caller's token or its API key was revoked, or every token
        its user held when they signed out everywhere (or a stolen refresh token came back)."""
        denied = await self._current()
        if f"jti:{caller.jti}" in denied or (
            caller.api_key_id and f"key:{caller.api_key_id}" in denied
        ):
            raise TokenInvalid("the access token has been revoked")
        cutoff = self._user_cutoffs.get(caller.user_id)
        if cutoff is not None and caller.issued_at <= cutoff:
            raise TokenInvalid("the access token has been revoked (every session was signed out)")


class TokenVerifier:
    """Verifies access tokens against a cached key set, refreshing it for an unknown kid."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        fetch_keys: KeySource,
        cache_seconds: float = 600.0,
        min_refresh_seconds: float = 30.0,
        deny_list: DenyList | None,
    ) -> None:
        """`deny_list` is required, and explicit: a service builds it from its own settings
        (`verifier_from_settings`), so no verifier reads a Redis the process environment happens
        to name. None turns revocation off, for tests of signatures and claims alone."""
        self.issuer = issuer
        self.audience = audience
        self._fetch = fetch_keys
        self._cache_seconds = cache_seconds
        self._min_refresh_seconds = min_refresh_seconds
        self._keys = KeySet()
        self._fetched_at = float("-inf")
        self._deny_list = deny_list

    async def _key(self, kid: str) -> PyJWK | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self._cache_seconds
        unknown = kid not in self._keys.keys
        # An unknown kid may be a freshly rolled-over key; refetch, but not on every forged token.
        if stale or (unknown and now - self._fetched_at > self._min_refresh_seconds):
            try:
                self._keys = await self._fetch()
                self._fetched_at = now
            except Exception as error:
                if not self._keys.keys:
                    # Nothing cached to verify with: the caller cannot be told apart from a
                    # forger, and that is the key service's outage, not the caller's fault.
                    raise DependencyUnavailable(
                        "auth", f"the token signing keys could not be fetched: {error}"
                    ) from error
        return self._keys.keys.get(kid)

    async def verify(self, token: str) -> Caller:
        """The caller a token stands for, or TokenExpired / TokenInvalid."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise TokenInvalid(f"the token is not a JWT: {error}") from None
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise TokenInvalid("the token is not an access token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenInvalid("the token names no signing key (kid)")
        key = await self._key(kid)
        if key is None:
            raise TokenInvalid(f"the token's signing key {kid!r} is not a published key")
        if header.get("alg") != key.algorithm_name:
            raise TokenInvalid("the token's algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the access token has expired; refresh it") from None
        except jwt.ImmatureSignatureError:
            raise TokenInvalid("the access token is not valid yet") from None
        except jwt.PyJWTError as error:
            raise TokenInvalid(f"the access token is not valid: {error}") from None
        caller = _caller(claims)
        if self._deny_list is not None:
            await self._deny_list.check(caller)
        return caller


def _caller(claims: Mapping[str, Any]) -> Caller:
    roles = claims.get("roles", [])
    steamid = claims.get("steamid", "0")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise TokenInvalid("the token's roles claim is malformed")
    try:
        steamid64 = int(steamid)
    except (TypeError, ValueError):
        raise TokenInvalid("the token's steamid claim is malformed") from None
    scope = claims.get("scope", "")
    return Caller(
        user_id=str(claims["sub"]),
        roles=frozenset(roles),
        jti=str(claims["jti"]),
        expires_at=int(claims["exp"]),
        steamid64=steamid64,
        tier=str(claims.get("tier", "free")),
        scopes=tuple(scope.split()) if isinstance(scope, str) else (),
        api_key_id=str(claims.get("api_key", "")),
        issued_at=int(claims["iat"]),
    )


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The token of an `authorization: Bearer <token>` entry, if any."""
    for key, value in metadata:
        if key.lower() != "authorization":
            continue
        text = value.decode() if isinstance(value, bytes) else value
        scheme, _, token = text.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenInvalid("the authorization metadata is not 'Bearer <token>'")
        return token.strip()
    return None


_current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "counterpick_caller", default=None
)


def set_current_caller(caller: Caller | None) -> contextvars.Token[Caller | None]:
    """Bind the verified caller to the current call (done by the interceptor)."""
    return _current_caller.set(caller)


def current_caller() -> Caller | None:
    """The verified caller of the current call, or None for an anonymous call."""
    return _current_caller.get()


def require_caller(*roles: str) -> Caller:
    """The caller, who must be signed in and, if `roles` are given, hold one of them."""
    caller = current_caller()
    if caller is None:
        raise MissingToken("this call needs an access token: authorization: Bearer <token>")
    if roles and not caller.has_any_role(*roles):
        raise PermissionDenied(f"this call needs one of the roles {', '.join(sorted(roles))}")
    return caller


def jwks_from_auth(address: str, *, timeout_seconds: float = 5.0) -> KeySource:
    """A key source that asks the auth service's GetJwks (cached by TokenVerifier)."""
    from counterpick.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
    from services.common.channels import open_channel

    async def fetch() -> KeySet:
        async with open_channel(address) as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            response = await stub.GetJwks(
                auth_service_pb2.GetJwksRequest(), timeout=timeout_seconds
            )
        return KeySet.from_jwks(response.jwks_json)

    return fetch


def jwks_from_file(path: Path) -> KeySource:
    """A key source that reads a JWK Set file (AUTH_JWKS_FILE), again on every fetch, so a
    rewritten file (a key rollover) is picked up on the verifier's next refresh."""

    async def fetch() -> KeySet:
        return KeySet.from_jwks(await asyncio.to_thread(path.read_text))

    return fetch


def key_source_from_settings(settings: TokenSettings) -> KeySource:
    """The verification keys the settings name: the AUTH_JWKS_FILE if set, else auth's GetJwks
    at AUTH_ADDR."""
    if settings.auth_jwks_file is not None:
        return jwks_from_file(settings.auth_jwks_file)
    return jwks_from_auth(settings.auth_addr)


def verifier_from_settings(
    settings: TokenSettings, key_source: KeySource | None = None
) -> TokenVerifier:
    """A service's verifier, wholly from its settings: issuer and audience (TOKEN_ISSUER,
    TOKEN_AUDIENCE), keys (AUTH_JWKS_FILE or AUTH_ADDR; `key_source` overrides, for tests) and
    the deny list in the service's own Redis (REDIS_URL)."""
    return TokenVerifier(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        fetch_keys=key_source or key_source_from_settings(settings),
        deny_list=DenyList(settings.redis_url, deployment=settings.deployment),
    )
