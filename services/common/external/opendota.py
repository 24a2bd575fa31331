"""OpenDota API client: /publicMatches, /parsedMatches and /matches/{id}.

Bodies come back as decoded JSON, checked for shape but otherwise untouched: the etl transform
owns the formats (e.g. publicMatches `radiant_team` is an int array today and a comma-separated
string in 2018 recordings; both are passed through as sent).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from services.common.external.json_api import ApiClient, JsonApi
from services.common.external.rate_limits import Clock, Sleep, TokenBucket
from services.common.external.results import FailureReason, Fetched, Problem

DEFAULT_BASE_URL = "https://api.opendota.com/api"
# The free tier without a key: 60 requests per wall-clock minute and 3,000 per UTC day. A key
# raises both (it is then billed per call, and OpenDota stops sending the daily header).
FREE_REQUESTS_PER_MINUTE = 60
FREE_REQUESTS_PER_DAY = 3000
DEFAULT_BURST = 5
# A minute's worth of the daily budget may go at once, so a gap can still be closed quickly.
DAILY_BURST = 60


class OpenDotaClient(ApiClient):
    """Typed access to the OpenDota endpoints counterpick reads.

    The limits default to the free tier and are enforced on our side, so the upstream rarely
    has to say 429: `burst + rate * 60` never exceeds `requests_per_minute`, and without a key
    the day's budget is spread over the day instead of being spent by noon. The
    X-Rate-Limit-Remaining-* headers remain the authority (see `JsonApi`); note that every
    process using a key-less client shares one IP quota upstream.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        requests_per_minute: float = FREE_REQUESTS_PER_MINUTE,
        burst: int = DEFAULT_BURST,
        requests_per_day: int | None = None,
        timeout_seconds: float = 10.0,
        attempts: int = 4,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        api: JsonApi | None = None,
    ) -> None:
        """`requests_per_day` None means 3,000 without a key and no daily pacing with one.
        `clock` (unix seconds) and `sleep` are for tests; `api` replaces the whole transport
        layer and makes the other tuning arguments moot."""
        if api is not None:
            self._api = api
            return
        if requests_per_minute <= burst:
            raise ValueError("requests_per_minute must exceed burst")
        bucket_clock = clock or time.monotonic
        per_day = requests_per_day
        if per_day is None and api_key is None:
            per_day = FREE_REQUESTS_PER_DAY
        daily = None
        if per_day is not None:
            daily_burst = min(DAILY_BURST, max(1, per_day // 10))
            daily = TokenBucket(
                (per_day - daily_burst) / 86_400, daily_burst, clock=bucket_clock, sleep=sleep
            )
        self._api = JsonApi(
            base_url,
            bucket=TokenBucket(
                (requests_per_minute - burst) / 60, burst, clock=bucket_clock, sleep=sleep
            ),
            daily_bucket=daily,
            timeout_seconds=timeout_seconds,
            attempts=attempts,
            http=http,
            transport=transport,
            secret_params={"api_key": api_key} if api_key else None,
            clock=clock or time.time,
            sleep=sleep,
        )

    async def public_matches(
        self, less_than_match_id: int | None = None
    ) -> Fetched[list[dict[str, Any]]]:
        """Up to 100 recent public matches, newest first; only ids below `less_than_match_id`
        when given (the paging cursor: pass the smallest id of the previous page)."""
        _check_match_id(less_than_match_id)
        return await self._api.get_json(
            "publicMatches", {"less_than_match_id": less_than_match_id}, check=_rows_of_matches
        )

    async def parsed_matches(
        self, less_than_match_id: int | None = None
    ) -> Fetched[list[dict[str, Any]]]:
        """Recently parsed match ids (`[{"match_id": ...}]`), newest first, paged like
        `public_matches`."""
        _check_match_id(less_than_match_id)
        return await self._api.get_json(
            "parsedMatches", {"less_than_match_id": less_than_match_id}, check=_rows_of_matches
        )

    async def match(self, match_id: int) -> Fetched[dict[str, Any]]:
        """One full match; 404 is final (reason NOT_FOUND: the match is unknown or private)."""
        _check_match_id(match_id)
        return await self._api.get_json(f"matches/{match_id}", check=_match_object)


def _check_match_id(match_id: int | None) -> None:
    # A bad id is a caller bug: raise rather than ask the upstream a question it rejects.
    if match_id is not None and (
        isinstance(match_id, bool) or not isinstance(match_id, int) or match_id <= 0
    ):
        raise ValueError(f"match ids are positive integers, got {match_id!r}")


def _upstream_error(body: Any) -> Problem | None:
    """OpenDota reports some failures as `{"error": "..."}` even with a 200."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return Problem(FailureReason.UPSTREAM_ERROR, f"OpenDota error: {body['error'][:200]}")
    return None


def _rows_of_matches(body: Any) -> Problem | None:
    if (problem := _upstream_error(body)) is not None:
        return problem
    if not isinstance(body, list):
        return Problem(FailureReason.INVALID_BODY, f"expected a JSON array, got {_kind(body)}")
    for position, row in enumerate(body):
        if not isinstance(row, dict) or "match_id" not in row:
            return Problem(
                FailureReason.INVALID_BODY, f"row {position} is not an object with a match_id"
            )
    return None


def _match_object(body: Any) -> Problem | None:
    if (problem := _upstream_error(body)) is not None:
        return problem
    if not isinstance(body, dict) or "match_id" not in body:
        return Problem(FailureReason.INVALID_BODY, f"expected a match object, got {_kind(body)}")
    return None


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a scalar"
