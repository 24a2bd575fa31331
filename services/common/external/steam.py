"""Steam Web API client: IDOTA2Match_570/GetMatchHistoryBySequenceNum, the public firehose."""

from __future__ import annotations

from typing import Any

import httpx

from services.common.external.http import ApiClient, Fetched, JsonApi, TokenBucket

# Valve tolerates about one request per 5 seconds per key on this endpoint.
DEFAULT_RATE_PER_SECOND = 0.2


class SteamClient(ApiClient):
    """Typed access to the sequence endpoint; the key never appears in errors or logs."""

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.steampowered.com",
        *,
        rate_per_second: float = DEFAULT_RATE_PER_SECOND,
        http: httpx.AsyncClient | None = None,
        api: JsonApi | None = None,
    ) -> None:
        # The key goes in as a secret parameter: JsonApi's messages name only the path.
        self._api = api or JsonApi(
            base_url,
            bucket=TokenBucket(rate_per_second, 1.0),
            http=http,
            secret_params={"key": api_key},
        )

    async def match_history_by_seq_num(
        self, start_at_match_seq_num: int, matches_requested: int = 100
    ) -> Fetched[list[Any]]:
        """Up to `matches_requested` (max 100) full matches from the given sequence number on."""
        result = await self._api.get_json(
            "IDOTA2Match_570/GetMatchHistoryBySequenceNum/v1",
            {
                "start_at_match_seq_num": start_at_match_seq_num,
                "matches_requested": min(100, matches_requested),
            },
        )
        if result.data is None:
            return result
        body = result.data.get("result") if isinstance(result.data, dict) else None
        if not isinstance(body, dict):
            return Fetched(
                None, "GetMatchHistoryBySequenceNum: no result object", False, result.status
            )
        if body.get("status") != 1:
            detail = body.get("statusDetail", f"status {body.get('status')}")
            return Fetched(None, f"GetMatchHistoryBySequenceNum: {detail}", False, result.status)
        matches = body.get("matches")
        if not isinstance(matches, list):
            return Fetched(
                None, "GetMatchHistoryBySequenceNum: no matches list", False, result.status
            )
        return Fetched(matches, status=result.status)
