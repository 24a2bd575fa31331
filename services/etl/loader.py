"""Fetch, transform, keep and store matches: the steps the consumer loop and ReprocessMatch share.

Upstream HTTP failures are retried once, inside the HTTP client (services/common/external): a
fetch that still fails here is final for this attempt, and `FetchFailed.retryable` says whether
a later attempt may succeed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.common.dota_constants import DotaConstants
from services.etl import transform
from services.etl.matches import CleanMatch, RejectReason, SkipReason
from services.etl.repo import Warehouse


@dataclass(frozen=True)
class FetchOutcome:
    """What an enrichment fetch produced: the match JSON, or why not."""

    data: dict[str, Any] | None
    error: str | None = None
    retryable: bool = False
    not_found: bool = False


class MatchFetcher(Protocol):
    """Fetches one full match by id (OpenDota /api/matches/{id} in production)."""

    async def fetch_match(self, match_id: int) -> FetchOutcome:
        """The match JSON, or a failure that says whether a retry may help."""
        ...


class FetchFailed(Exception):
    """Upstream has no match for the id (NOT_FOUND_UPSTREAM) or could not deliver it
    (FETCH_FAILED; `retryable` when a later attempt may succeed)."""

    def __init__(self, reason: RejectReason, detail: str, *, retryable: bool = False) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retryable = retryable


class MatchLoader:
    """The warehouse, the game constants and the upstream fetcher, used the one same way by
    every path that loads a match."""

    def __init__(
        self, warehouse: Warehouse, constants: DotaConstants, fetcher: MatchFetcher | None
    ) -> None:
        self.warehouse = warehouse
        self.constants = constants
        self.fetcher = fetcher

    async def fetch(self, match_id: int) -> CleanMatch:
        """The match from upstream as a clean match; FetchFailed when upstream does not deliver
        it, UnusableMatch (from transform) when what it delivers is not a valid match, and
        InsignificantMatch when it is flawed but would be skipped anyway."""
        if self.fetcher is None:
            raise FetchFailed(RejectReason.FETCH_FAILED, "no fetcher is configured")
        outcome = await self.fetcher.fetch_match(match_id)
        if outcome.data is None:
            reason = (
                RejectReason.NOT_FOUND_UPSTREAM if outcome.not_found else RejectReason.FETCH_FAILED
            )
            raise FetchFailed(reason, outcome.error or "fetch failed", retryable=outcome.retryable)
        return transform.from_opendota_match(outcome.data, self.constants)

    def skip_reason(self, match: CleanMatch) -> SkipReason | None:
        """Why a valid match is not loaded (OpenDota's "significant" rule), or None to keep it."""
        return transform.skip_reason(match, self.constants)

    async def stored(self, match_ids: Iterable[int]) -> set[int]:
        """Which of `match_ids` the warehouse already holds."""
        return await asyncio.to_thread(self.warehouse.existing_match_ids, list(match_ids))

    async def store(self, matches: Sequence[CleanMatch]) -> None:
        """Write matches (in a thread: the warehouse client is synchronous); idempotent."""
        await asyncio.to_thread(self.warehouse.insert_matches, list(matches))
