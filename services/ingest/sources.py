"""The ingest sources: each turns API pages into match references and knows where to resume.

A poll reads pages, publishes what is new, and only then records its progress in Redis, so a
crash at any point re-publishes (harmless: etl's sink is idempotent) and never skips. Upstream
failures are expected: they are recorded in the source's status and the poll backs off. Anything
else a poll raises (Redis, Kafka, a bug) is caught by `supervise`, counted, and the poller is
restarted after a capped, jittered backoff; a row that cannot be converted is counted and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from counterpick.events.v1 import events_pb2
from services.ingest.state import Gap, Sweep

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
    # Unexpected exceptions of the poll, by type name; each is followed by a restart.
    errors_total: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    bad_rows: int = 0
    open_gaps: int = 0
    oldest_gap_at: float | None = None
    floor: int | None = None
    # A count of listed matches not published yet, when the last poll knows it (see the proto).
    lag_matches: int | None = None

    def succeeded(self) -> None:
        """Record a successful poll."""
        self.last_success_at = time.time()
        self.consecutive_failures = 0

    def failed(self, error: str) -> None:
        """Record a failed poll."""
        self.last_error = error
        self.last_error_at = time.time()
        self.consecutive_failures += 1

    def crashed(self, error: Exception) -> None:
        """Record an unexpected exception of a poll (the supervisor restarts the poller)."""
        kind = type(error).__name__
        self.errors_total += 1
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1
        self.failed(f"{kind}: {error}"[:500])


def now_timestamp() -> Timestamp:
    """Now, as a protobuf Timestamp (MatchRef.discovered_at)."""
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def public_match_ref(row: dict[str, Any], source: int) -> events_pb2.MatchRef | None:
    """A reference carrying the publicMatches summary (teams, result, rank), or None if unusable."""
    try:
        match_id = int(row["match_id"])
    except (KeyError, TypeError, ValueError):
        return None
    ref = events_pb2.MatchRef(match_id=match_id, source=source, discovered_at=now_timestamp())  # type: ignore[arg-type]
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


class Window(Protocol):
    """The persisted late-window state of a listing source (see repo.WindowStore)."""

    async def floor(self, source: str) -> int | None: ...

    async def raise_floor(self, source: str, value: int) -> None: ...

    async def unseen(self, source: str, match_ids: list[int]) -> list[int]: ...

    async def mark_seen(self, source: str, match_ids: list[int]) -> None: ...

    async def gaps(self, source: str) -> list[Gap]: ...

    async def add_gap(self, source: str, gap: Gap) -> None: ...

    async def replace_gap(self, source: str, old: Gap, new: Gap | None) -> None: ...

    async def sweep(self, source: str) -> Sweep | None: ...

    async def begin_sweep(self, source: str, sweep: Sweep, gap: Gap) -> None: ...

    async def note_settled(self, source: str, match_id: int) -> None: ...

    async def end_sweep(self, source: str) -> None: ...


@dataclass
class _RangeRead:
    """What reading one id range top-down did."""

    pages: int = 0
    lowest: int | None = None  # smallest id of the last page read
    newest: int | None = None  # largest id of the first page read
    complete: bool = False  # reached the bottom of the range (or the end of the listing)
    failed: bool = False
    clock: float | None = None  # the newest match end on the first page (the source's clock)
    published: int = 0
    settled_below: int | None = None  # first poll only: highest id older than the window


def _row_id(row: dict[str, Any]) -> int | None:
    try:
        return int(row["match_id"])
    except (KeyError, TypeError, ValueError):
        return None


def _row_start(row: dict[str, Any]) -> int | None:
    try:
        return int(row["start_time"])
    except (KeyError, TypeError, ValueError):
        return None


def _row_end(row: dict[str, Any]) -> int | None:
    start = _row_start(row)
    try:
        return None if start is None else start + int(row.get("duration") or 0)
    except (TypeError, ValueError):
        return start


class MatchIdPagedSource:
    """OpenDota /publicMatches or /parsedMatches: newest id first, paged by less_than_match_id.

    OpenDota lists a match when it ends, but its id was given when it started, so a long game
    appears below ids listed long before it: a cursor at the highest id seen never reads it. This
    source therefore keeps a late window in Redis (see repo.WindowStore):

    - the *floor*: every listed match with an id at or below it is published or was never listed;
    - the ids published above the floor (a sorted set), so each is published once;
    - *gaps*: id ranges known to be unread (a page that failed, a poll that ran out of pages);
    - a *sweep*: a pass over the window (floor, newest id] begun at source time T, recorded as a
      gap when it begins. When every gap is read, the floor moves up to the highest id read during
      the pass whose match started more than `late_window_seconds` before T: such a match, and
      every lower id, had ended before its page was read, so nothing below can still appear.

    A poll spends `max_pages_per_poll` requests: the head first (new matches above the highest id
    seen; at most half the budget while gaps are open), then the gaps, oldest first. A page that
    fails or a budget that runs out leaves the unread range as a gap for later polls; nothing is
    skipped. The source's clock is the newest match end on the first page (start_time + duration),
    so the window does not depend on our clock agreeing with OpenDota's. Rows without a start time
    (parsedMatches) count as settled when read.

    Assumes match ids grow with start times, up to an inversion much shorter than
    `late_window_seconds` minus the longest game; the default 3 hours leaves an hour.

    Cost, honestly: the window is re-read every sweep. A real 3-hour window of publicMatches holds
    on the order of a thousand pages; key-less OpenDota (60 requests a minute, 3,000 a day) cannot
    read it even once a day, so gaps stay open and grow (visible as `open_gaps` / `oldest_gap_at`)
    and the floor rarely moves. Only a paid key, or a shorter window that accepts losing the
    longest games, makes this source complete. The Steam sequence source has no late finishers:
    Valve assigns the sequence number when a match ends.

    The first poll ever has no floor: it reads down until a match older than the window or the end
    of the listing (floor 0), or, when the budget ends first, sets the floor below the lowest id it
    read (ingest starts at an arbitrary moment; Backfill reaches further back).
    """

    PAGE_ROWS = 100

    def __init__(
        self,
        health: SourceHealth,
        fetch_page: Any,
        publisher: Publisher,
        cursors: Cursors,
        window: Window,
        *,
        max_pages_per_poll: int,
        carries_summary: bool,
        late_window_seconds: float = 3 * 3600,
        clock: Any = time.time,
    ) -> None:
        self.health = health
        self._fetch_page = fetch_page
        self._publisher = publisher
        self._cursors = cursors
        self._window = window
        self._max_pages = max_pages_per_poll
        self._carries_summary = carries_summary
        self._late_window = late_window_seconds
        self._wall_clock = clock
        self._source_clock: float | None = None

    async def poll(self) -> bool:
        """One poll; True when more work is waiting (something published, or gaps left)."""
        name = self.health.name
        floor = await self._window.floor(name)
        cursor = await self._cursors.get(name)
        self.health.cursor = cursor
        budget = self._max_pages
        errors_before = self.health.last_error_at
        if floor is None:
            head = await self._first_poll(budget)
            published = head.published
        else:
            gaps = await self._window.gaps(name)
            sweep = await self._window.sweep(name)
            stop = max(floor, cursor if cursor is not None else floor)
            head_budget = budget if not gaps else max(1, budget // 2)
            head = await self._read(None, stop, head_budget, sweep)
            budget -= head.pages
            published = head.published
            clock = head.clock if head.clock is not None else self._source_clock
            top = await self._cursors.get(name)
            # A new sweep's gap (floor, top) holds whatever the head left unread.
            begin = sweep is None and clock is not None and top is not None and top > floor
            if not head.complete and head.lowest is not None and not begin:
                await self._window.add_gap(name, Gap(stop, head.lowest, clock or 0.0))
            if begin:
                assert clock is not None
                assert top is not None
                sweep = Sweep(clock, top, None)
                await self._window.begin_sweep(name, sweep, Gap(floor, top, clock))
            failed = head.failed
            for gap in await self._window.gaps(name):
                if budget <= 0 or failed:
                    break
                part = await self._read(gap.high, gap.low, budget, sweep)
                budget -= part.pages
                published += part.published
                failed = part.failed
                if part.complete:
                    await self._window.replace_gap(name, gap, None)
                elif part.lowest is not None:
                    await self._window.replace_gap(name, gap, Gap(gap.low, part.lowest, gap.since))
            if sweep is not None and not await self._window.gaps(name):
                settled = (await self._window.sweep(name) or sweep).settled
                if settled is not None and settled > floor:
                    await self._window.raise_floor(name, settled)
                await self._window.end_sweep(name)
        await self._refresh_status()
        if self.health.last_error_at == errors_before:
            self.health.succeeded()
        return published > 0 or (self.health.open_gaps > 0 and budget <= 0)

    async def _first_poll(self, budget: int) -> _RangeRead:
        """Read down to a match older than the window; then there is a floor."""
        name = self.health.name
        head = await self._read(None, None, budget, None, find_settled=True)
        if head.settled_below is not None:
            floor = head.settled_below
        elif head.complete:
            floor = 0  # the listing ended: everything it holds was read
        elif head.lowest is not None:
            floor = head.lowest - 1
            log.warning(
                "%s: first poll ran out of pages before matches older than the late window; "
                "late finishers below id %d are not chased (use Backfill)",
                name,
                head.lowest,
            )
        else:
            return head
        await self._window.raise_floor(name, floor)
        return head

    async def _refresh_status(self) -> None:
        """The status of a finished poll, all fields at once: a reader never sees the cursor of
        this poll next to the lag of the previous one."""
        name = self.health.name
        self.health.cursor = await self._cursors.get(name)
        gaps = await self._window.gaps(name)
        self.health.floor = await self._window.floor(name)
        self.health.open_gaps = len(gaps)
        self.health.oldest_gap_at = min((gap.since for gap in gaps), default=None)
        # With no gap open, every listed match above the floor has been read and published.
        self.health.lag_matches = 0 if not gaps and self.health.floor is not None else None

    async def _read(
        self,
        high: int | None,
        low: int | None,
        budget: int,
        sweep: Sweep | None,
        *,
        find_settled: bool = False,
    ) -> _RangeRead:
        """Read ids in (low, high) top-down (None: unbounded) within `budget` pages, publishing
        those not published yet; each page's progress is persisted after Kafka acknowledged it."""
        name = self.health.name
        read = _RangeRead()
        less_than = high
        while read.pages < budget:
            read.pages += 1
            self.health.polls += 1
            result = await self._fetch_page(less_than)
            if result.data is None:
                self.health.failed(result.error or "fetch failed")
                read.failed = True
                return read
            page = [row for row in result.data if isinstance(row, dict)]
            ids = [i for i in map(_row_id, page) if i is not None]
            if not ids:
                read.complete = True
                return read
            ends = [end for end in map(_row_end, page) if end is not None]
            if read.clock is None:
                read.clock = float(max(ends)) if ends else float(self._wall_clock())
                self._source_clock = read.clock
                read.newest = max(ids)
                self.health.newest_seen = max(self.health.newest_seen or 0, read.newest)
            wanted = [
                row
                for row in page
                if (match_id := _row_id(row)) is not None
                and (low is None or match_id > low)
                and (high is None or match_id < high)
            ]
            read.published += await self._publish_new(wanted)
            if high is None:
                # The head: the highest id read is the cursor the next head stops at.
                await self._cursors.advance(name, max(ids))
            horizon = None if read.clock is None else read.clock - self._late_window
            if sweep is not None:
                settled = self._settled(page, sweep.at - self._late_window, below=sweep.top)
                if settled is not None:
                    await self._window.note_settled(name, settled)
            if find_settled and horizon is not None:
                settled = self._settled(page, horizon, below=None)
                if settled is not None:
                    read.settled_below = settled
                    read.complete = True
                    return read
            read.lowest = min(ids)
            if len(page) < self.PAGE_ROWS or (low is not None and read.lowest <= low):
                read.complete = True
                return read
            less_than = read.lowest
        return read

    @staticmethod
    def _settled(page: list[dict[str, Any]], horizon: float, *, below: int | None) -> int | None:
        """The highest id on the page whose match started before `horizon` (a row without a
        start time counts as settled), below `below` when given."""
        best = None
        for row in page:
            match_id, start = _row_id(row), _row_start(row)
            if match_id is None or (below is not None and match_id >= below):
                continue
            if (start is None or start < horizon) and (best is None or match_id > best):
                best = match_id
        return best

    async def _publish_new(self, rows: list[dict[str, Any]]) -> int:
        """Publish the rows not published yet (once each, even if a page repeats one)."""
        name = self.health.name
        by_id: dict[int, dict[str, Any]] = {}
        for row in rows:
            match_id = _row_id(row)
            if match_id is not None:
                by_id.setdefault(match_id, row)
        fresh = await self._window.unseen(name, sorted(by_id))
        if not fresh:
            return 0
        refs, unusable = [], []
        for match_id in fresh:
            ref = self._ref(by_id[match_id])
            if ref is None:
                unusable.append(match_id)
            else:
                refs.append(ref)
        # Skipped rows count as handled at once, so a failed publish does not count them twice.
        if unusable:
            await self._window.mark_seen(name, unusable)
        await self._publisher.publish(refs)
        await self._window.mark_seen(name, [ref.match_id for ref in refs])
        self.health.matches_published += len(refs)
        starts = [s for s in (_row_start(by_id[i]) for i in fresh) if s is not None]
        if starts:
            self.health.newest_start_time = max(self.health.newest_start_time or 0, *starts)
        return len(refs)

    def _ref(self, row: dict[str, Any]) -> events_pb2.MatchRef | None:
        """The reference of one row; None (counted, logged) when the row is unusable."""
        try:
            if self._carries_summary:
                return public_match_ref(row, self.health.source)
            return events_pb2.MatchRef(
                match_id=int(row["match_id"]),
                source=self.health.source,  # type: ignore[arg-type]
                discovered_at=now_timestamp(),
            )
        except (TypeError, ValueError, KeyError) as error:
            # A hero list that is no list of ids, a negative duration for a uint32 field: skip
            # the row (marked as seen, so it is not retried every sweep), keep the page.
            self.health.bad_rows += 1
            log.warning("%s: skipped an unusable row %r: %s", self.health.name, row, error)
            return None


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
        highest_seq: int | None = None
        for match in matches:
            try:
                seq_num = int(match["match_seq_num"])
                highest_seq = max(highest_seq or seq_num, seq_num)
                ref = events_pb2.MatchRef(
                    match_id=int(match["match_id"]),
                    match_seq_num=seq_num,
                    source=events_pb2.MATCH_SOURCE_STEAM_SEQUENCE,
                    discovered_at=now_timestamp(),
                )
            except (KeyError, TypeError, ValueError) as error:
                # Skipped, and the cursor still moves past it: a bad row must not stall the feed.
                self.health.bad_rows += 1
                log.warning("%s: skipped an unusable match: %s", self.health.name, error)
                continue
            ref.raw_match.format = events_pb2.RAW_MATCH_FORMAT_STEAM_SEQUENCE_JSON
            ref.raw_match.json = json.dumps(match, separators=(",", ":")).encode()
            refs.append(ref)
        await self._publisher.publish(refs)
        if highest_seq is not None:
            next_seq = highest_seq + 1
            await self._cursors.advance(self.health.name, next_seq)
            self.health.cursor = next_seq
            self.health.matches_published += len(refs)
            self.health.newest_start_time = max(
                (int(m["start_time"]) for m in matches if m.get("start_time")), default=None
            )
        full = len(matches) >= self._page_size
        # Sequence numbers are given when matches end, so a page that is not full means every
        # finished match was read: a real count of 0. A full page says nothing about how many
        # more wait (the API has no "newest sequence number"), so the lag is then unknown.
        self.health.lag_matches = None if full else 0
        self.health.succeeded()
        return full


class Poller(Protocol):
    """A source that can poll once."""

    health: SourceHealth

    async def poll(self) -> bool: ...


HealthReport = Callable[[SourceHealth], None]


async def supervise(
    poller: Poller,
    stop: asyncio.Event,
    *,
    idle_seconds: float,
    max_backoff_seconds: float = 600.0,
    report: HealthReport | None = None,
) -> None:
    """Poll until `stop`: again at once while behind, `idle_seconds` when caught up.

    Every exception but cancellation is caught here: counted by kind in the source's health,
    logged, and followed by a restart of the poller after an exponential backoff (from
    `idle_seconds`, capped at `max_backoff_seconds`, with jitter so replicas spread out). Upstream
    failures the poll recorded itself back off the same way. The poller keeps no state between
    polls that is not in Redis, so calling `poll` again is a full restart. `report` is told the
    health after every poll (the gRPC health entry of the source follows it).
    """
    health = poller.health
    while not stop.is_set():
        crashed = False
        try:
            more = await poller.poll()
        except Exception as error:  # the supervisor's job (CancelledError passes)
            crashed = True
            health.crashed(error)
            log.error("%s: poll failed, restarting: %r", health.name, error, exc_info=error)
            more = False
        if report is not None:
            report(health)
        failures = health.consecutive_failures
        if failures:
            cap = min(max_backoff_seconds, idle_seconds * 2 ** min(failures, 16))
            delay = cap * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not cryptography
        else:
            delay = 0.0 if more else idle_seconds
        if delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        if crashed and not stop.is_set():
            health.restarts += 1
