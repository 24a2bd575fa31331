"""Steam Web API client: IDOTA2Match_570/GetMatchHistoryBySequenceNum, the public firehose.

The key is a query parameter (Valve's API wants it there) and is registered as a secret: it never
appears in an error string or a log line.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from services.common.external.json_api import ApiClient, JsonApi
from services.common.external.rate_limits import Clock, Sleep, TokenBucket
from services.common.external.redaction import register_secret
from services.common.external.results import FailureReason, Fetched, Problem

DEFAULT_BASE_URL = "https://api.steampowered.com"
SEQUENCE_PATH = "IDOTA2Match_570/GetMatchHistoryBySequenceNum/v1"
# Valve tolerates about one request per 5 seconds per key on this endpoint.
DEFAULT_RATE_PER_SECOND = 0.2
MAX_MATCHES_PER_PAGE = 100


class SteamClient(ApiClient):
    """Typed access to the sequence endpoint."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        rate_per_second: float = DEFAULT_RATE_PER_SECOND,
        timeout_seconds: float = 10.0,
        attempts: int = 4,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        api: JsonApi | None = None,
    ) -> None:
        """`clock` (unix seconds) and `sleep` are for tests; `api` replaces the whole transport
        layer (it must then carry the key as its `key` secret parameter itself)."""
        if not api_key:
            raise ValueError("the Steam Web API needs a key")
        register_secret(api_key)
        self._api = api or JsonApi(
            base_url,
            # No burst: Valve's limit is a steady rate per key.
            bucket=TokenBucket(rate_per_second, 1, clock=clock or time.monotonic, sleep=sleep),
            timeout_seconds=timeout_seconds,
            attempts=attempts,
            http=http,
            transport=transport,
            secret_params={"key": api_key},
            clock=clock or time.time,
            sleep=sleep,
        )

    async def match_history_by_seq_num(
        self, start_at_match_seq_num: int, matches_requested: int = MAX_MATCHES_PER_PAGE
    ) -> Fetched[list[dict[str, Any]]]:
        """Up to `matches_requested` (at most 100) full matches, in sequence order, starting at
        `start_at_match_seq_num`; a `result.status` other than 1 is a (final) failure."""
        if start_at_match_seq_num < 0 or matches_requested < 1:
            raise ValueError(
                "need start_at_match_seq_num >= 0 and matches_requested >= 1, got "
                f"{start_at_match_seq_num} and {matches_requested}"
            )
        result = await self._api.get_json(
            SEQUENCE_PATH,
            {
                "start_at_match_seq_num": start_at_match_seq_num,
                "matches_requested": min(MAX_MATCHES_PER_PAGE, matches_requested),
            },
            check=_sequence_page,
        )
        if result.data is None:
            if result.status in (401, 403):
                # Valve answers a missing or revoked key with a bare 403 page.
                return Fetched.failure(
                    FailureReason.CLIENT_ERROR,
                    f"{result.error} (is the Steam API key valid?)",
                    retryable=False,
                    status=result.status,
                )
            return result.retyped()
        matches: list[dict[str, Any]] = result.data["result"]["matches"]
        return Fetched.success(matches, result.status)


def _sequence_page(body: Any) -> Problem | None:
    """`{"result": {"status": 1, "matches": [{...}, ...]}}` is the only good answer."""
    result = body.get("result") if isinstance(body, dict) else None
    if not isinstance(result, dict):
        return Problem(FailureReason.INVALID_BODY, "no result object")
    if result.get("status") != 1:
        detail = result.get("statusDetail") or f"status {result.get('status')!r}"
        return Problem(FailureReason.UPSTREAM_ERROR, f"Steam says: {str(detail)[:200]}")
    matches = result.get("matches")
    if not isinstance(matches, list) or not all(isinstance(m, dict) for m in matches):
        return Problem(FailureReason.INVALID_BODY, "result.matches is not a list of objects")
    return None
