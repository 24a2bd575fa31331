"""OpenDota API client: /publicMatches, /parsedMatches and /matches/{id}."""

from __future__ import annotations

from typing import Any

import httpx

from services.common.external.http import ApiClient, Fetched, JsonApi, TokenBucket

# The free tier: 60 requests per minute and 3,000 per day without a key.
FREE_RATE_PER_SECOND = 1.0
FREE_BURST = 5.0
FREE_REQUESTS_PER_DAY = 3000


class OpenDotaClient(ApiClient):
    """Typed access to the OpenDota endpoints counterpick reads."""

    def __init__(
        self,
        base_url: str = "https://api.opendota.com/api",
        api_key: str | None = None,
        *,
        rate_per_second: float = FREE_RATE_PER_SECOND,
        burst: float = FREE_BURST,
        http: httpx.AsyncClient | None = None,
        api: JsonApi | None = None,
    ) -> None:
        # Without a key the day's 3,000 requests are the binding limit: spread them out, with a
        # minute's worth of burst so a gap can still be closed quickly.
        daily = TokenBucket(FREE_REQUESTS_PER_DAY / 86_400, 60) if api_key is None else None
        self._api = api or JsonApi(
            base_url,
            bucket=TokenBucket(rate_per_second, burst),
            daily_bucket=daily,
            http=http,
            secret_params={"api_key": api_key} if api_key else None,
        )

    async def public_matches(self, less_than_match_id: int | None = None) -> Fetched[list[Any]]:
        """Up to 100 recent public matches, newest first, older than `less_than_match_id`."""
        result = await self._api.get_json(
            "publicMatches", {"less_than_match_id": less_than_match_id}
        )
        return _expect_list(result)

    async def parsed_matches(self, less_than_match_id: int | None = None) -> Fetched[list[Any]]:
        """Recently parsed match ids, newest first."""
        result = await self._api.get_json(
            "parsedMatches", {"less_than_match_id": less_than_match_id}
        )
        return _expect_list(result)

    async def match(self, match_id: int) -> Fetched[dict[str, Any]]:
        """One full match; 404 is final (the match is unknown or private)."""
        result = await self._api.get_json(f"matches/{int(match_id)}")
        if result.data is not None and not isinstance(result.data, dict):
            return Fetched(None, f"matches/{match_id}: expected an object", False, result.status)
        return result


def _expect_list(result: Fetched[Any]) -> Fetched[list[Any]]:
    if result.data is not None and not isinstance(result.data, list):
        return Fetched(None, "expected a JSON array", False, result.status)
    return result
