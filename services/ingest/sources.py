"""The ingest sources: each turns API pages into match references and knows its cursor.

A poll reads what is new since the cursor, publishes it, and only then advances the cursor, so a
crash at any point re-publishes (harmless) and never skips. Upstream failures are expected: they
are recorded in the source's status and the poll backs off, nothing else is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from counterpick.events.v1 import events_pb2

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Publishes references and returns once Kafka acknowledged them."""

    async def publish(self, refs: Sequence[events_pb2.MatchRef]) -> None: ...


class Cursors(Protocol):
    """Persistent per-source cursors."""

    async def get(self, source: str) -> int | None: ...

    async def advance(self, source: str, value: int) -> None: ...


@dataclass
class SourceHealth:
    """What GetIngestStatus reports for one source."""

    name: str
    source: int  # events_pb2.MatchSource
    enabled: bool = True
    cursor: int | None = None
    newest_seen: int | None = None
    newest_start_time: int | None = None
    last_success_at: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    consecutive_failures: int = 0
    polls: int = 0
    matches_published: int = 0

    def succeeded(self) -> None:
        """Record a successful poll."""
        self.last_success_at = time.time()
        self.consecutive_failures = 0

    def failed(self, error: str) -> None:
        """Record a failed poll."""
        self.last_error = error
        self.last_error_at = time.time()
        self.consecutive_failures += 1


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def public_match_ref(row: dict[str, Any], source: int) -> events_pb2.MatchRef | None:
    """A reference carrying the publicMatches summary (teams, result, rank), or None if unusable."""
    try:
        match_id = int(row["match_id"])
    except (KeyError, TypeError, ValueError):
        return None
    ref = events_pb2.MatchRef(match_id=match_id, source=source, discovered_at=_now())  # type: ignore[arg-type]
    if row.get("match_seq_num") is not None:
        ref.match_seq_num = int(row["match_seq_num"])
    summary = ref.summary
    radiant, dire = row.get("radiant_team"), row.get("dire_team")
    if isinstance(radiant, str):
        radiant = [int(x) for x in radiant.replace(" ", ",").split(",") if x]
    if isinstance(dire, str):
        dire = [int(x) for x in dire.replace(" ", ",").split(",") if x]
    if isinstance(radiant, list) and isinstance(dire, list):
        summary.radiant_hero_ids.extend(int(h) for h in radiant)
        summary.dire_hero_ids.extend(int(h) for h in dire)
    if row.get("radiant_win") is not None:
        summary.radiant_win = bool(row["radiant_win"])
    if row.get("start_time") is not None:
        summary.start_time.FromSeconds(int(row["start_time"]))
    for name, target in (
        ("duration", "duration_seconds"),
        ("lobby_type", "lobby_type"),
        ("game_mode", "game_mode"),
        ("avg_rank_tier", "avg_rank_tier"),
    ):
        if row.get(name) is not None:
            setattr(summary, target, int(row[name]))
    return ref


class MatchIdPagedSource:
    """OpenDota /publicMatches or /parsedMatches: newest first, paged by less_than_match_id.

    The cursor is the highest match id published. A poll reads the newest page and pages back
    until it reaches the cursor (bounded per poll); the first poll ever starts at the newest page.
    """

    def __init__(
        self,
        health: SourceHealth,
        fetch_page: Any,
        publisher: Publisher,
        cursors: Cursors,
        *,
        max_pages_per_poll: int,
        carries_summary: bool,
    ) -> None:
        self.health = health
        self._fetch_page = fetch_page
        self._publisher = publisher
        self._cursors = cursors
        self._max_pages = max_pages_per_poll
        self._carries_summary = carries_summary

    async def poll(self) -> bool:
        """One poll; True when it published something (so the caller polls again soon)."""
        cursor = await self._cursors.get(self.health.name)
        self.health.cursor = cursor
        rows: list[dict[str, Any]] = []
        less_than: int | None = None
        for _ in range(self._max_pages):
            self.health.polls += 1
            result = await self._fetch_page(less_than)
            if result.data is None:
                self.health.failed(result.error or "fetch failed")
                break
            page = [row for row in result.data if isinstance(row, dict) and "match_id" in row]
            if not page:
                break
            newest = max(int(row["match_id"]) for row in page)
            self.health.newest_seen = max(self.health.newest_seen or 0, newest)
            fresh = [row for row in page if cursor is None or int(row["match_id"]) > cursor]
            rows.extend(fresh)
            oldest = min(int(row["match_id"]) for row in page)
            if cursor is None or len(fresh) < len(page) or oldest <= cursor:
                break
            less_than = oldest
        else:
            log.warning(
                "%s: more than %d pages behind; older matches are left for a backfill",
                self.health.name,
                self._max_pages,
            )
        if not rows:
            if self.health.consecutive_failures == 0 or self.health.last_error_at is None:
                self.health.succeeded()
            return False
        source = self.health.source
        refs = []
        for row in sorted(rows, key=lambda r: int(r["match_id"])):
            ref = (
                public_match_ref(row, source)
                if self._carries_summary
                else events_pb2.MatchRef(
                    match_id=int(row["match_id"]),
                    source=source,  # type: ignore[arg-type]
                    discovered_at=_now(),
                )
            )
            if ref is not None:
                refs.append(ref)
        await self._publisher.publish(refs)
        highest = max(ref.match_id for ref in refs)
        await self._cursors.advance(self.health.name, highest)
        self.health.cursor = highest
        self.health.matches_published += len(refs)
        self.health.newest_start_time = max(
            (int(row["start_time"]) for row in rows if row.get("start_time")), default=None
        )
        self.health.succeeded()
        return True


class SteamSequenceSource:
    """Steam GetMatchHistoryBySequenceNum: every public match once, in sequence order.

    The cursor is the next sequence number to ask for. Each match travels with its full JSON,
    so etl does not fetch it again.
    """

    def __init__(
        self,
        health: SourceHealth,
        fetch_page: Any,
        publisher: Publisher,
        cursors: Cursors,
        *,
        start_at: int = 0,
        page_size: int = 100,
    ) -> None:
        self.health = health
        self._fetch_page = fetch_page
        self._publisher = publisher
        self._cursors = cursors
        self._start_at = start_at
        self._page_size = page_size

    async def poll(self) -> bool:
        """One page; True when the page was full (more is waiting)."""
        cursor = await self._cursors.get(self.health.name)
        next_seq = cursor if cursor is not None else self._start_at
        self.health.cursor = next_seq
        self.health.polls += 1
        result = await self._fetch_page(next_seq, self._page_size)
        if result.data is None:
            self.health.failed(result.error or "fetch failed")
            return False
        matches = [m for m in result.data if isinstance(m, dict) and "match_seq_num" in m]
        refs = []
        for match in matches:
            ref = events_pb2.MatchRef(
                match_id=int(match["match_id"]),
                match_seq_num=int(match["match_seq_num"]),
                source=events_pb2.MATCH_SOURCE_STEAM_SEQUENCE,
                discovered_at=_now(),
            )
            ref.raw_match.format = events_pb2.RAW_MATCH_FORMAT_STEAM_SEQUENCE_JSON
            ref.raw_match.json = json.dumps(match, separators=(",", ":")).encode()
            refs.append(ref)
        if refs:
            await self._publisher.publish(refs)
            next_seq = max(ref.match_seq_num for ref in refs) + 1
            await self._cursors.advance(self.health.name, next_seq)
            self.health.cursor = next_seq
            self.health.matches_published += len(refs)
            self.health.newest_start_time = max(
                (int(m["start_time"]) for m in matches if m.get("start_time")), default=None
            )
        self.health.succeeded()
        return len(matches) >= self._page_size


class Poller(Protocol):
    """A source that can poll once."""

    health: SourceHealth

    async def poll(self) -> bool: ...


async def run_source(poller: Poller, stop: asyncio.Event, *, idle_seconds: float) -> None:
    """Poll until `stop`: again at once while behind, `idle_seconds` when caught up, and with
    exponential backoff (capped at 10 minutes) while the upstream fails."""
    while not stop.is_set():
        try:
            more = await poller.poll()
        except (ConnectionError, TimeoutError, OSError) as error:
            # Kafka or Redis hiccup: the cursor did not move, the next poll re-publishes.
            poller.health.failed(f"{type(error).__name__}: {error}")
            more = False
        failures = poller.health.consecutive_failures
        if failures:
            delay = min(600.0, idle_seconds * 2 ** min(failures, 10)) * (0.5 + random.random())  # noqa: S311
        else:
            delay = 0.0 if more else idle_seconds
        if delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)


@dataclass
class BackfillJobs:
    """Manual backfills: references without data, which etl enriches by fetching."""

    publisher: Publisher
    chunk: int = 1000
    jobs: dict[str, int] = field(default_factory=dict)

    async def submit(self, job_id: str, match_ids: Sequence[int]) -> int:
        """Publish one reference per id, in chunks; returns how many were accepted."""
        published = 0
        for start in range(0, len(match_ids), self.chunk):
            refs = [
                events_pb2.MatchRef(
                    match_id=match_id, source=events_pb2.MATCH_SOURCE_BACKFILL, discovered_at=_now()
                )
                for match_id in match_ids[start : start + self.chunk]
            ]
            await self.publisher.publish(refs)
            published += len(refs)
            self.jobs[job_id] = published
        return published
