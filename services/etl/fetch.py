"""Enrichment: fetch the full match from OpenDota when a reference carries none."""

from __future__ import annotations

from typing import Any

from services.common.external.opendota import OpenDotaClient
from services.etl.loader import FetchOutcome


class OpenDotaFetcher:
    """The MatchFetcher of production: OpenDota GET /api/matches/{id}."""

    def __init__(self, base_url: str, api_key: str | None, *, client: Any = None) -> None:
        self._client = client or OpenDotaClient(base_url=base_url, api_key=api_key)

    async def fetch_match(self, match_id: int) -> FetchOutcome:
        """The match JSON, or why not (not found upstream is final; 5xx and timeouts retry)."""
        result = await self._client.match(match_id)
        if result.data is not None and isinstance(result.data, dict):
            return FetchOutcome(result.data)
        return FetchOutcome(
            None,
            error=result.error or "empty response",
            retryable=result.retryable,
            not_found=result.status == 404,
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()
