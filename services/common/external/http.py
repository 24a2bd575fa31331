"""JSON over HTTP for the external APIs: rate limits, retries, and failures as return values.

Expected upstream trouble (5xx, timeouts, 429, quota exhausted, broken JSON, 404) comes back as
a `Fetched` with `retryable` set; only bugs raise. Every client keeps the counters the ingest
status RPC reports.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Fetched[T]:
    """The outcome of one logical request (after its retries)."""

    data: T | None
    error: str | None = None
    retryable: bool = False
    status: int | None = None

    @property
    def ok(self) -> bool:
        """True when data arrived."""
        return self.data is not None


class TokenBucket:
    """`rate` requests per second on average, bursts of up to `burst`; `acquire` waits."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Take one token, waiting until one is available."""
        async with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens < 1:
                # Sleep exactly until the token has accrued and take it then; re-measuring after
                # the sleep invites float rounding to leave 0.9999... tokens and spin.
                wait = (1 - self._tokens) / self.rate
                await self._sleep(wait)
                self._tokens = 1.0
                self._updated = now + wait
            self._tokens -= 1


@dataclass
class ClientStats:
    """Counters for the status RPC."""

    requests_made: int = 0
    rate_limited_responses: int = 0
    last_success_at: float | None = None
    last_error: str = ""
    last_error_at: float | None = None


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


class JsonApi:
    """A polite JSON GET client: one token bucket, bounded retries with full jitter."""

    def __init__(
        self,
        base_url: str,
        *,
        bucket: TokenBucket,
        daily_bucket: TokenBucket | None = None,
        timeout_seconds: float = 10.0,
        attempts: int = 4,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        http: httpx.AsyncClient | None = None,
        secret_params: Mapping[str, str] | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._http = http or httpx.AsyncClient(timeout=timeout_seconds)
        self._owns_http = http is None
        self._base = base_url.rstrip("/")
        self._bucket = bucket
        self._daily_bucket = daily_bucket
        self._timeout = timeout_seconds
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._secret_params = dict(secret_params or {})
        self._clock = clock
        self._sleep = sleep
        self._paused_until = 0.0
        self.stats = ClientStats()

    async def close(self) -> None:
        """Close the connection pool (if this client created it)."""
        if self._owns_http:
            await self._http.aclose()

    def pause_until(self, moment: float) -> None:
        """Send nothing before `moment` (wall clock): the upstream asked us to wait."""
        self._paused_until = max(self._paused_until, moment)

    def _fail(self, error: str, *, retryable: bool, status: int | None = None) -> Fetched[Any]:
        self.stats.last_error = error
        self.stats.last_error_at = self._clock()
        return Fetched(None, error, retryable, status)

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Fetched[Any]:
        """GET base_url + path; retries 5xx, timeouts and connection errors with backoff."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        query.update(self._secret_params)
        url = f"{self._base}/{path.lstrip('/')}"
        last: Fetched[Any] = Fetched(None, "not attempted", True)
        for attempt in range(self._attempts):
            # After a 429 the Retry-After pause is the wait; no extra backoff on top.
            if attempt and last.status != 429:
                cap = min(self._max_backoff, self._backoff * 2**attempt)
                await self._sleep(random.uniform(0, cap))  # noqa: S311 - full jitter
            wait = self._paused_until - self._clock()
            if wait > 0:
                await self._sleep(wait)
            if self._daily_bucket is not None:
                await self._daily_bucket.acquire()
            await self._bucket.acquire()
            self.stats.requests_made += 1
            try:
                response = await self._http.get(url, params=query, timeout=self._timeout)
            except httpx.TimeoutException:
                last = self._fail(f"GET {path}: timed out after {self._timeout:g}s", retryable=True)
                continue
            except httpx.TransportError as error:
                last = self._fail(f"GET {path}: {type(error).__name__}: {error}", retryable=True)
                continue
            outcome = self._interpret(path, response)
            if outcome.data is not None or not outcome.retryable:
                return outcome
            last = outcome
        return last

    def _interpret(self, path: str, response: httpx.Response) -> Fetched[Any]:
        status = response.status_code
        now = self._clock()
        self._honour_quota(response.headers, now)
        if status == 429:
            self.stats.rate_limited_responses += 1
            delay = retry_after_seconds(response.headers.get("retry-after"), now) or 60.0
            self.pause_until(now + delay)
            return self._fail(
                f"GET {path}: 429 rate limited, retry after {delay:g}s",
                retryable=True,
                status=status,
            )
        if status >= 500:
            return self._fail(f"GET {path}: HTTP {status}", retryable=True, status=status)
        if status == 404:
            return self._fail(f"GET {path}: 404 not found", retryable=False, status=status)
        if status >= 400:
            return self._fail(f"GET {path}: HTTP {status}", retryable=False, status=status)
        try:
            data = json.loads(response.content)
        except ValueError as error:
            # Truncated bodies happen when an upstream dies mid-response: worth one more try.
            return self._fail(f"GET {path}: invalid JSON: {error}", retryable=True, status=status)
        self.stats.last_success_at = now
        return Fetched(data, status=status)

    def _honour_quota(self, headers: httpx.Headers, now: float) -> None:
        minute = headers.get("x-rate-limit-remaining-minute")
        day = headers.get("x-rate-limit-remaining-day")
        if day is not None and _as_int(day) == 0:
            # Nothing more today: wait until the next UTC midnight.
            self.pause_until(now - now % 86_400 + 86_400)
        elif minute is not None and _as_int(minute) == 0:
            self.pause_until(now - now % 60 + 60)


def _as_int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


class ApiClient:
    """Base of the typed API clients: their counters and their life cycle."""

    _api: JsonApi

    @property
    def stats(self) -> ClientStats:
        """Request counters for the status RPC."""
        return self._api.stats

    @property
    def requests_made(self) -> int:
        """Requests sent so far."""
        return self._api.stats.requests_made

    @property
    def rate_limited_responses(self) -> int:
        """429 answers seen so far."""
        return self._api.stats.rate_limited_responses

    async def close(self) -> None:
        """Close the connection pool."""
        await self._api.close()
