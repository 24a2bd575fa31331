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
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from services.common.errors import RateLimited
from services.common.tokens import Caller

log = logging.getLogger(__name__)

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


def caller_key(caller: Caller | None, peer: str) -> str:
    """Whose quota a call uses: the verified user, else the calling address."""
    if caller is not None:
        return f"user:{caller.user_id}"
    return f"peer:{peer_host(peer)}"


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
