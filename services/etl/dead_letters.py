"""Which dead letters are still open, and which to replay.

A dead letter stays in its topic forever; replaying one appends a replay record elsewhere. A
letter is open while no replay record names it. One match can have several open letters (ingest
published it twice, or the one before the last replay failed differently): it is listed once,
with its newest letter, and replaying it closes all of them. Plain values: the Kafka adapter
(`dead_letter_topic.py`) decodes the records, the servicer encodes the answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Letter:
    """One record of the dead-letter topic."""

    partition: int  # where the letter is in the dead-letter topic
    offset: int
    key: bytes  # the original record, verbatim
    value: bytes
    match_id: int | None
    reason: str  # e.g. "unknown_hero" (events.v1.DeadLetterReason without its prefix)
    detail: str
    failed_at: float  # unix seconds
    original_topic: str
    original_partition: int
    original_offset: int

    @property
    def position(self) -> tuple[int, int]:
        """Partition and offset in the dead-letter topic: what a replay record names."""
        return self.partition, self.offset

    def identity(self) -> tuple[object, ...]:
        """The thing that failed: the match, or the record when no match id was decoded."""
        if self.match_id is not None:
            return ("match", self.match_id)
        return ("record", self.original_topic, self.original_partition, self.original_offset)


@dataclass(frozen=True, slots=True)
class OpenLetter:
    """The open letters of one match (or one undecodable record), the newest first."""

    letters: tuple[Letter, ...]

    @property
    def newest(self) -> Letter:
        """The letter that is listed and whose record a replay sends."""
        return self.letters[0]


def _age_key(letter: Letter) -> tuple[float, int, int]:
    return letter.failed_at, letter.partition, letter.offset


def open_letters(
    letters: Iterable[Letter], replayed: Collection[tuple[int, int]]
) -> tuple[list[OpenLetter], int]:
    """The open letters grouped per match, newest first, and how many letters were replayed."""
    groups: dict[tuple[object, ...], list[Letter]] = {}
    closed = 0
    for letter in letters:
        if letter.position in replayed:
            closed += 1
            continue
        groups.setdefault(letter.identity(), []).append(letter)
    opened = [
        OpenLetter(tuple(sorted(group, key=_age_key, reverse=True))) for group in groups.values()
    ]
    opened.sort(key=lambda open_letter: _age_key(open_letter.newest), reverse=True)
    return opened, closed


def select(
    opened: Sequence[OpenLetter],
    *,
    match_ids: Collection[int] | None = None,
    reason: str | None = None,
) -> list[OpenLetter]:
    """The open letters of these matches and/or with this (newest) reason; None = any."""
    return [
        open_letter
        for open_letter in opened
        if (match_ids is None or open_letter.newest.match_id in match_ids)
        and (reason is None or open_letter.newest.reason == reason)
    ]


def count_by_reason(opened: Iterable[OpenLetter]) -> Counter[str]:
    """Open letters per reason of their newest letter."""
    return Counter(open_letter.newest.reason for open_letter in opened)
