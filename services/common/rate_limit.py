"""Per-caller call quotas in Redis, shared by every replica of a service.

A sliding-window log: each admitted call adds its timestamp to a sorted set per caller, and a
call is refused while the set already holds `calls` timestamps younger than `window_seconds`.
Unlike a fixed window it never lets a burst of twice the quota through across a window edge,
and the refusal says exactly when the oldest call leaves the window (RateLimited's
retry_after_seconds, sent to the client as google.rpc.RetryInfo). One Lua script does the read
and the write atomically, using Redis' clock so replicas with skewed clocks agree. Refused calls
are not logged, so a client that keeps retrying too early still gets in once the window moves.

Callers are keyed by the verified token's user id, or by the peer's address when anonymous (see
`caller_key`). If Redis is unreachable the limiter lets calls through and logs it: losing rate
limiting for a while is better than losing the service.

`RateLimitInterceptor` applies one limiter to every RPC of a server, with a quota per
subscription tier (`TierQuotas`); a service gets it from its settings with
`rate_limiter_from_settings` and hands it to `GrpcServer(rate_limiter=...)`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ipaddress
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import unquote

import grpc
import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from services.common.config import RateLimitSettings
from services.common.errors import RateLimited
from services.common.stores import redis_client
from services.common.tokens import Caller, current_caller

log = logging.getLogger(__name__)

# The role of the mesh's own services (auth signing users in, draft asking the model). They are
# not limited: one service token carries the calls of every user it serves, so any per-token
# quota would either cap the whole product or be too large to protect anything, and those users
# are already counted where they entered the mesh.
SERVICE_ROLE = "service"
# How long a quota check may wait on Redis before the call is let through unchecked.
_STORE_TIMEOUT_SECONDS = 0.5

# TypeVar rather than PEP 695 syntax: mypy only matches the stub's method-level TypeVars this way.
Req = TypeVar("Req")
Resp = TypeVar("Resp")
_UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
_StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]

RATE_LIMITED = Counter(
    "counterpick_rate_limited",
    "Calls refused by a rate limiter, by limiter name and quota.",
    ["limiter", "quota"],
)
RATE_LIMIT_ERRORS = Counter(
    "counterpick_rate_limit_store_errors",
    "Calls let through unchecked because the rate-limit store failed, by limiter name.",
    ["limiter"],
)

# KEYS[1]: the caller's log. ARGV: calls, window in ms, a unique member for this call.
# Returns {1, 0} when admitted, {0, milliseconds until a slot frees} when refused.
_SLIDING_WINDOW = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local calls = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < calls then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
local blocking = redis.call('ZRANGE', KEYS[1], count - calls, count - calls, 'WITHSCORES')
local wait = tonumber(blocking[2]) + window - now
if wait < 1 then wait = 1 end
return {0, wait}
"""


@dataclass(frozen=True)
class Quota:
    """At most `calls` calls in any `window_seconds` long window."""

    name: str
    calls: int
    window_seconds: float

    def __post_init__(self) -> None:
        if self.calls < 1 or self.window_seconds <= 0:
            raise ValueError(f"quota {self.name}: calls must be >= 1 and the window > 0")


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer string, without the port: `ipv4:10.0.0.7:5123` ->
    `10.0.0.7`, `ipv6:[::1]:5123` -> `::1` (a client's ports change, its address does not)."""
    text = unquote(peer)
    kind, _, address = text.partition(":")
    if kind == "ipv4":
        return address.rpartition(":")[0] or address
    if kind == "ipv6":
        host = address.rpartition(":")[0] if address.startswith("[") else address
        return host.strip("[]")
    return text


# The address of the end client a trusted proxy (the edge) calls on behalf of. Without it every
# anonymous web user would share the edge's own address, and so one anonymous quota.
CLIENT_ADDRESS_HEADER = "x-counterpick-client-address"


def caller_key(caller: Caller | None, peer: str, client_address: str | None = None) -> str:
    """Whose quota a call uses: the verified user, else the end client's address when a trusted
    proxy vouched for it (`client_address`), else the calling address."""
    if caller is not None:
        return f"user:{caller.user_id}"
    return f"peer:{client_address or peer_host(peer)}"


@functools.lru_cache(maxsize=16)
def _networks(
    trusted_proxies: frozenset[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The trusted proxies as networks (an address is a /32 or /128); a bad entry is refused
    at start-up by trusted_proxies()."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies)


def _is_trusted(host: str, trusted_proxies: frozenset[str]) -> bool:
    if not trusted_proxies:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a unix socket peer or a name: only an exact entry trusts it
        return host in trusted_proxies
    return any(address in network for network in _networks(trusted_proxies))


def trusted_proxies(text: str) -> frozenset[str]:
    """RATE_LIMIT_TRUSTED_PROXIES parsed: comma-separated addresses or networks (10.0.0.0/8)."""
    entries = frozenset(entry.strip() for entry in text.split(",") if entry.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"RATE_LIMIT_TRUSTED_PROXIES: {entry!r} is not an address or network"
            ) from None
    return entries


def forwarded_address(
    peer: str, metadata: Iterable[tuple[str, str | bytes]], trusted_proxies: frozenset[str]
) -> str | None:
    """The end client's address a trusted proxy sent in CLIENT_ADDRESS_HEADER; None when the
    caller is not a trusted proxy (anyone else could claim any address) or sent none."""
    if not _is_trusted(peer_host(peer), trusted_proxies):
        return None
    for key, value in metadata:
        if key.lower() == CLIENT_ADDRESS_HEADER:
            text = value.decode() if isinstance(value, bytes) else value
            return text.strip()[:64] or None
    return None


class RateLimiter:
    """Checks calls against quotas kept in Redis under `prefix`."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        name: str = "default",
        timeout_seconds: float = 0.5,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._name = name
        self._timeout = timeout_seconds
        self._script: Any = redis.register_script(_SLIDING_WINDOW)

    async def hit(self, key: str, quota: Quota) -> None:
        """Count one call of `key` against `quota`, or raise RateLimited if it is used up."""
        window_ms = max(1, round(quota.window_seconds * 1000))
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                admitted, wait_ms = await self._script(
                    keys=[f"{self._prefix}:{quota.name}:{key}"],
                    args=[quota.calls, window_ms, uuid.uuid4().hex],
                )
        except (RedisError, OSError, TimeoutError) as error:
            RATE_LIMIT_ERRORS.labels(self._name).inc()
            log.warning(
                "rate limit not checked: %s",
                error,
                extra={"fields": {"limiter": self._name, "seconds": time.monotonic() - started}},
            )
            return
        if not int(admitted):
            RATE_LIMITED.labels(self._name, quota.name).inc()
            retry_after = int(wait_ms) / 1000
            raise RateLimited(
                f"rate limit of {quota.calls} calls per {quota.window_seconds:g}s exceeded; "
                f"retry in {retry_after:.3f}s",
                retry_after_seconds=retry_after,
            )


@dataclass(frozen=True)
class TierQuotas:
    """The quota each kind of caller is counted against: anonymous (per address) or a signed-in
    caller's subscription tier (per user). Callers holding `exempt_role` are not counted at all.
    """

    anonymous: Quota
    tiers: Mapping[str, Quota]
    # The tier used for a token whose tier this deployment does not know (an older or newer
    # auth service): the lowest, so an unexpected claim never buys a larger quota.
    fallback_tier: str = "free"
    exempt_role: str | None = SERVICE_ROLE

    def __post_init__(self) -> None:
        if self.fallback_tier not in self.tiers:
            raise ValueError(f"the fallback tier {self.fallback_tier!r} has no quota")

    def for_caller(self, caller: Caller | None) -> Quota | None:
        """The quota `caller` uses, or None when its calls are not limited."""
        if caller is None:
            return self.anonymous
        if self.exempt_role is not None and caller.has_any_role(self.exempt_role):
            return None
        return self.tiers.get(caller.tier, self.tiers[self.fallback_tier])


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Counts every call against its caller's quota before the handler runs.

    It must sit inside AuthInterceptor (GrpcServer installs it there): it reads the caller that
    interceptor binds, so a token is verified before it decides which quota applies, and the
    RateLimited it raises happens inside the handler StatusInterceptor wraps, which maps it to
    RESOURCE_EXHAUSTED with ErrorInfo and RetryInfo. A server-streaming call (WatchDraft) counts
    once, when it starts: a stream is one thing a client asked for, however long it stays open.
    Health and reflection are exempt, so probes and grpcurl never spend anyone's quota.
    """

    EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

    def __init__(
        self,
        limiter: RateLimiter,
        quotas: TierQuotas,
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
        trusted_proxies: frozenset[str] = frozenset(),
    ) -> None:
        self._limiter = limiter
        self._quotas = quotas
        self._on_close = on_close
        self._trusted_proxies = trusted_proxies

    async def admit(self, peer: str, client_address: str | None = None) -> None:
        """Count one call of the current caller (anonymous: of `client_address` when a trusted
        proxy sent it, else of `peer`), or raise RateLimited."""
        caller = current_caller()
        quota = self._quotas.for_caller(caller)
        if quota is not None:
            await self._limiter.hit(caller_key(caller, peer, client_address), quota)

    async def close(self) -> None:
        """Release the Redis connection this interceptor owns, if it owns one."""
        if self._on_close is not None:
            await self._on_close()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or handler.request_streaming or method.startswith(self.EXEMPT_PREFIXES):
            # The mesh has no client-streaming RPCs of its own (reflection is one, and exempt).
            return handler
        metadata = tuple(handler_call_details.invocation_metadata or ())
        trusted = self._trusted_proxies

        async def admit(peer: str) -> None:
            await self.admit(peer, forwarded_address(peer, metadata, trusted))

        if handler.response_streaming:
            stream = cast(_StreamBehavior, handler.unary_stream)
            if not inspect.isasyncgenfunction(stream):
                # Write-style streaming (`await context.write(...)`) is a plain coroutine, and
                # grpc.aio needs the wrapper to keep that shape.
                return grpc.unary_stream_rpc_method_handler(
                    self._wrap_unary(cast(_UnaryBehavior, stream), admit),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )

            async def call_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                await admit(context.peer())
                async for response in stream(request, context):
                    yield response

            return grpc.unary_stream_rpc_method_handler(
                call_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._wrap_unary(cast(_UnaryBehavior, handler.unary_unary), admit),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _wrap_unary(
        behavior: _UnaryBehavior, admit: Callable[[str], Awaitable[None]]
    ) -> _UnaryBehavior:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await admit(context.peer())
            return await behavior(request, context)

        return call


def rate_limiter_from_settings(
    settings: RateLimitSettings,
    redis: aioredis.Redis | str,
    service: str,
) -> RateLimitInterceptor:
    """The rate limit a service configures, ready for `GrpcServer(rate_limiter=...)`.

    Quotas come from the RATE_LIMIT_* settings and are counted under
    `<RATE_LIMIT_KEY_PREFIX>:<service>`, so a caller's calls to one service do not use up its quota
    on another. `redis` is a client the caller keeps and closes, or a URL (REDIS_URL): then the
    interceptor connects on its first call, so a Redis down at start-up only means calls pass
    unchecked, and closes the client when the server stops.
    """
    window = settings.rate_limit_window_seconds
    quotas = TierQuotas(
        anonymous=Quota("anonymous", settings.rate_limit_anonymous_per_minute, window),
        tiers={
            "free": Quota("free", settings.rate_limit_free_per_minute, window),
            "plus": Quota("plus", settings.rate_limit_plus_per_minute, window),
            "pro": Quota("pro", settings.rate_limit_pro_per_minute, window),
        },
    )
    on_close: Callable[[], Awaitable[None]] | None = None
    if isinstance(redis, str):
        # Short socket timeouts: the limiter gives up after its own timeout anyway, and a
        # black-holed Redis must not hold connections long after.
        redis = redis_client(
            redis,
            connect_timeout_seconds=_STORE_TIMEOUT_SECONDS,
            socket_timeout_seconds=_STORE_TIMEOUT_SECONDS,
        )
        on_close = redis.aclose
    rate_prefix = settings.rate_limit_key_prefix or f"{settings.deployment}:rate"
    limiter = RateLimiter(
        redis,
        prefix=f"{rate_prefix}:{service}",
        name=service,
        timeout_seconds=_STORE_TIMEOUT_SECONDS,
    )
    trusted = trusted_proxies(settings.rate_limit_trusted_proxies)
    return RateLimitInterceptor(limiter, quotas, on_close=on_close, trusted_proxies=trusted)
