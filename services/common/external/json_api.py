"""JSON over HTTP for the external APIs: rate limits, retries, and failures as return values.

Expected upstream trouble (5xx, timeouts, refused connections, 429, an exhausted quota, broken
JSON, 404) comes back as a failed `Fetched` that says whether retrying can help (STYLE R11); only
bugs raise. One `JsonApi` is one polite client of one upstream: it paces requests with token
buckets, pauses entirely when the upstream says so (Retry-After, OpenDota's remaining-quota
headers), and keeps the counters the ingest status RPC reports. API keys are passed as secret
query parameters and registered with `redaction`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import httpx

from services.common.external.rate_limits import (
    Clock,
    Sleep,
    TokenBucket,
    retry_after_seconds,
)
from services.common.external.redaction import redact, register_secret
from services.common.external.results import (
    BodyCheck,
    ClientStats,
    FailureReason,
    Fetched,
    Reachability,
)

log = logging.getLogger(__name__)

# Draws the actual backoff delay for a given cap; tests pass `lambda cap: cap` to be exact.
Jitter = Callable[[float], float]

SECONDS_PER_DAY = 86_400
USER_AGENT = "counterpick/0.1 (Dota 2 draft assistant)"
# Pauses the upstream asks for that are shorter than this are waited out inside the call; longer
# ones come back as a retryable failure with `retry_at`, so no caller hangs for an hour.
DEFAULT_MAX_PAUSE_SECONDS = 90.0
# Waiting for "the next minute" is measured on our clock, theirs may be a little behind.
MINUTE_BOUNDARY_MARGIN_SECONDS = 1.0


def full_jitter(cap: float) -> float:
    """A uniformly random delay in [0, cap] ("full jitter"), so retrying clients spread out."""
    return random.uniform(0.0, cap)  # noqa: S311 - load spreading, not cryptography


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _as_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class JsonApi:
    """A polite JSON GET client of one upstream.

    Each `get_json` is bounded: at most `attempts` requests, with full-jitter exponential
    backoff between retryable failures (5xx, timeouts, connection errors, broken bodies) and
    the upstream's own pause after a 429. A 429 or an exhausted minute quota pauses the whole
    client, so concurrent calls wait too; an exhausted day quota makes every call fail at once,
    without a request, until the quota resets.
    """

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
        max_pause_seconds: float = DEFAULT_MAX_PAUSE_SECONDS,
        default_retry_after_seconds: float = 60.0,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        secret_params: Mapping[str, str] | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        jitter: Jitter = full_jitter,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if url.query:
            raise ValueError("base_url must not carry a query; pass keys as secret_params")
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        if http is not None and transport is not None:
            raise ValueError("pass either an httpx client or a transport, not both")
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=timeout_seconds,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )
        self._base = base_url.rstrip("/")
        self._host = url.netloc.decode("ascii")
        self._bucket = bucket
        self._daily_bucket = daily_bucket
        self._timeout = timeout_seconds
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._max_pause = max_pause_seconds
        self._default_retry_after = default_retry_after_seconds
        self._secret_params = dict(secret_params or {})
        for secret in self._secret_params.values():
            register_secret(secret)
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._paused_until = 0.0
        self._quota_resets_at = 0.0
        self.stats = ClientStats()

    @property
    def closed(self) -> bool:
        """True once the connection pool is closed."""
        return self._http.is_closed

    async def close(self) -> None:
        """Close the connection pool, if this client created it (a passed-in one is the
        caller's to close)."""
        if self._owns_http:
            await self._http.aclose()

    def pause_until(self, moment: float) -> None:
        """Send nothing before `moment` (wall clock): the upstream asked us to wait."""
        self._paused_until = max(self._paused_until, moment)
        self.stats.paused_until = self._paused_until

    async def get_json(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        check: BodyCheck | None = None,
    ) -> Fetched[Any]:
        """GET base_url/path?params and decode the JSON body; None-valued params are left out.

        `check` vets the decoded body (its shape, an error flag inside it) so that a wrong
        answer counts as a failure in the counters rather than as a success.
        """
        query = {k: v for k, v in (params or {}).items() if v is not None}
        query.update(self._secret_params)
        url = f"{self._base}/{path.lstrip('/')}"
        where = f"{self._host}{httpx.URL(url).path}"
        outcome: Fetched[Any] | None = None
        for attempt in range(1, self._attempts + 1):
            if outcome is not None and outcome.retry_at is None:
                # When the upstream named a moment (Retry-After) the pause is the wait; only
                # failures without one back off, exponentially and with full jitter.
                cap = min(self._max_backoff, self._backoff * 2 ** (attempt - 2))
                delay = self._jitter(cap)
                log.info("%s; retry %d/%d in %.2fs", outcome.error, attempt, self._attempts, delay)
                await self._sleep(delay)
            refusal = await self._wait_until_allowed(where)
            if refusal is not None:
                return refusal
            outcome = await self._attempt(url, query, where, check)
            if outcome.ok or not outcome.retryable:
                return outcome
            if outcome.retry_at is not None and outcome.retry_at - self._clock() > self._max_pause:
                return outcome  # longer than a caller should hang; it retries at retry_at
        assert outcome is not None  # attempts >= 1
        return outcome

    async def _wait_until_allowed(self, where: str) -> Fetched[Any] | None:
        """Wait out a short pause and take the rate-limit tokens; a failure if not allowed."""
        while True:
            now = self._clock()
            if self._quota_resets_at > now:
                return self._refuse(
                    FailureReason.QUOTA_EXHAUSTED,
                    f"GET {where}: daily request quota exhausted until "
                    f"{_iso(self._quota_resets_at)}",
                    retryable=False,
                    retry_at=self._quota_resets_at,
                )
            wait = self._paused_until - now
            if wait > self._max_pause:
                return self._refuse(
                    FailureReason.RATE_LIMITED,
                    f"GET {where}: rate limited by the upstream until {_iso(self._paused_until)}",
                    retryable=True,
                    retry_at=self._paused_until,
                )
            if wait > 0:
                await self._sleep(wait)
                continue
            if self._daily_bucket is not None:
                await self._daily_bucket.acquire()
            await self._bucket.acquire()
            # Another call may have hit a 429 while this one queued for its token.
            now = self._clock()
            if self._paused_until <= now and self._quota_resets_at <= now:
                return None

    async def _attempt(
        self, url: str, query: Mapping[str, Any], where: str, check: BodyCheck | None
    ) -> Fetched[Any]:
        self.stats.requests_made += 1
        try:
            response = await self._http.get(url, params=query, timeout=self._timeout)
        except httpx.TimeoutException:
            return self._fail(
                FailureReason.TIMEOUT,
                f"GET {where}: timed out after {self._timeout:g}s",
                retryable=True,
                state=Reachability.UNREACHABLE,
            )
        except httpx.TransportError as error:
            # Includes a body cut off before its Content-Length: the upstream died mid-answer.
            return self._fail(
                FailureReason.CONNECTION,
                f"GET {where}: {type(error).__name__}: {error}",
                retryable=True,
                state=Reachability.UNREACHABLE,
            )
        except httpx.DecodingError as error:
            return self._fail(
                FailureReason.INVALID_BODY,
                f"GET {where}: undecodable body: {error}",
                retryable=True,
                state=Reachability.FAILING,
            )
        return self._interpret(where, response, check)

    def _interpret(
        self, where: str, response: httpx.Response, check: BodyCheck | None
    ) -> Fetched[Any]:
        now = self._clock()
        self._honour_quota(response.headers, now)
        if 200 <= response.status_code < 300:
            return self._decode(where, response, check, now)
        return self._unsuccessful(where, response, now)

    def _unsuccessful(self, where: str, response: httpx.Response, now: float) -> Fetched[Any]:
        """A failure for any status outside 2xx."""
        status = response.status_code
        server_now = _http_date(response.headers.get("date")) or now
        if status == 429:
            self.stats.rate_limited_responses += 1
            if self._quota_resets_at > now:
                return self._fail(
                    FailureReason.QUOTA_EXHAUSTED,
                    f"GET {where}: HTTP 429{_hint(response)}, daily request quota exhausted "
                    f"until {_iso(self._quota_resets_at)}",
                    retryable=False,
                    status=status,
                    retry_at=self._quota_resets_at,
                    state=Reachability.RATE_LIMITED,
                )
            delay = retry_after_seconds(response.headers.get("retry-after"), server_now)
            if delay is None:
                delay = (
                    self._paused_until - now
                    if self._paused_until > now  # the minute quota named the moment
                    else self._default_retry_after
                )
            self.pause_until(now + delay)
            log.warning("GET %s: rate limited (HTTP 429), pausing %.1fs", where, delay)
            return self._fail(
                FailureReason.RATE_LIMITED,
                f"GET {where}: HTTP 429 rate limited{_hint(response)}, retry after {delay:g}s",
                retryable=True,
                status=status,
                retry_at=self._paused_until,
                state=Reachability.RATE_LIMITED,
            )
        if status >= 500 or status == 408:
            retry_at = None
            delay = retry_after_seconds(response.headers.get("retry-after"), server_now)
            if delay is not None:  # a 503 may say when the maintenance ends
                self.pause_until(now + delay)
                retry_at = self._paused_until
            return self._fail(
                FailureReason.SERVER_ERROR,
                f"GET {where}: HTTP {status}{_hint(response)}",
                retryable=True,
                status=status,
                retry_at=retry_at,
                state=Reachability.FAILING,
            )
        if status == 404:
            return self._fail(
                FailureReason.NOT_FOUND,
                f"GET {where}: 404 not found",
                retryable=False,
                status=status,
                state=Reachability.REACHABLE,
            )
        return self._fail(
            FailureReason.CLIENT_ERROR,
            f"GET {where}: HTTP {status}{_hint(response)}",
            retryable=False,
            status=status,
            state=Reachability.FAILING,
        )

    def _decode(
        self, where: str, response: httpx.Response, check: BodyCheck | None, now: float
    ) -> Fetched[Any]:
        """The decoded body of a 2xx answer, if it is JSON and passes `check`."""
        status = response.status_code
        try:
            data = json.loads(response.content)
        except ValueError as error:
            # Truncated bodies happen when an upstream dies mid-response: worth another try.
            return self._fail(
                FailureReason.INVALID_BODY,
                f"GET {where}: invalid JSON ({len(response.content)} bytes): {error}",
                retryable=True,
                status=status,
                state=Reachability.FAILING,
            )
        if data is None:
            return self._fail(
                FailureReason.INVALID_BODY,
                f"GET {where}: the body is JSON null",
                retryable=False,
                status=status,
                state=Reachability.FAILING,
            )
        problem = check(data) if check is not None else None
        if problem is not None:
            return self._fail(
                problem.reason,
                f"GET {where}: {problem.message}",
                retryable=problem.retryable,
                status=status,
                state=Reachability.FAILING,
            )
        self.stats.last_success_at = now
        self.stats.state = Reachability.REACHABLE
        return Fetched.success(data, status)

    def _honour_quota(self, headers: httpx.Headers, now: float) -> None:
        """OpenDota's X-Rate-Limit-Remaining-* headers: 0 means that was the last request the
        window allows, below 0 that this one was refused. Its windows are the wall-clock minute
        and the UTC day."""
        day = _as_int(headers.get("x-rate-limit-remaining-day"))
        minute = _as_int(headers.get("x-rate-limit-remaining-minute"))
        if day is not None and day <= 0:
            reset = (now // SECONDS_PER_DAY + 1) * SECONDS_PER_DAY
            if reset > self._quota_resets_at:
                log.warning("%s: daily request quota spent; idle until %s", self._host, _iso(reset))
            self._quota_resets_at = max(self._quota_resets_at, reset)
            self.stats.paused_until = max(self.stats.paused_until or 0.0, reset)
        elif minute is not None and minute <= 0:
            self.pause_until(now - now % 60 + 60 + MINUTE_BOUNDARY_MARGIN_SECONDS)

    def _refuse(
        self, reason: FailureReason, error: str, *, retryable: bool, retry_at: float
    ) -> Fetched[Any]:
        """A failure decided without sending a request: the client is paused by the upstream."""
        return self._fail(
            reason, error, retryable=retryable, retry_at=retry_at, state=Reachability.RATE_LIMITED
        )

    def _fail(
        self,
        reason: FailureReason,
        error: str,
        *,
        retryable: bool,
        state: Reachability,
        status: int | None = None,
        retry_at: float | None = None,
    ) -> Fetched[Any]:
        error = redact(error)
        self.stats.last_error = error
        self.stats.last_error_at = self._clock()
        self.stats.state = state
        return Fetched.failure(reason, error, retryable=retryable, status=status, retry_at=retry_at)


def _hint(response: httpx.Response) -> str:
    """The upstream's own error message (`{"error": "..."}`), if it sent one, shortened."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return ""
    message = body.get("error") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message:
        return ""
    return f" ({message[:200]})"


class ApiClient:
    """Base of the typed API clients: their counters and their life cycle."""

    _api: JsonApi

    @property
    def stats(self) -> ClientStats:
        """Request counters and reachability for the status RPC."""
        return self._api.stats

    @property
    def requests_made(self) -> int:
        """Requests sent so far."""
        return self._api.stats.requests_made

    @property
    def rate_limited_responses(self) -> int:
        """429 answers seen so far."""
        return self._api.stats.rate_limited_responses

    @property
    def reachable(self) -> bool | None:
        """Whether the upstream answered the last request; None before the first."""
        return self._api.stats.reachable

    @property
    def closed(self) -> bool:
        """True once the connection pool is closed."""
        return self._api.closed

    async def close(self) -> None:
        """Close the connection pool."""
        await self._api.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
