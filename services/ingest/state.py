"""The persisted state of the ingest sources and backfill jobs, as plain values (repo.py stores
them in Redis; sources.py and backfill.py decide with them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gap:
    """Ids strictly between `low` and `high` are unread; recorded at `since` (source clock)."""

    low: int
    high: int
    since: float

    @property
    def empty(self) -> bool:
        """True when no id lies strictly between the bounds."""
        return self.high - self.low <= 1


@dataclass(frozen=True)
class Sweep:
    """A pass over the late window, begun at `at` (source clock) when the newest id was `top`.

    `settled` is the highest id read during the pass whose match started more than the late
    window before `at`; once every gap is read the floor may move up to it.
    """

    at: float
    top: int
    settled: int | None


@dataclass
class JobRecord:
    """A backfill job: its target ids, how far it got and how it ended."""

    job_id: str
    match_ids: list[int] | None  # an explicit, ascending list
    first: int | None  # or an inclusive range
    last: int | None
    total: int
    published: int
    state: str  # "running" | "succeeded" | "failed"
    created_at: float
    updated_at: float
    error: str = ""

    def ids_from(self, position: int, count: int) -> list[int]:
        """The `count` ids after the first `position` (ids ascend)."""
        if self.match_ids is not None:
            return self.match_ids[position : position + count]
        assert self.first is not None
        assert self.last is not None
        start = self.first + position
        return list(range(start, min(self.last + 1, start + count)))
