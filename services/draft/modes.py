"""Draft modes as data: the order of bans and picks and the clocks, per mode and patch range.

The table lives in `modes.json` beside this module, with the sources each entry rests on; a game
update that changes a draft is an edit there, never here. `rules_for(mode, patch)` picks the entry
whose patch range contains the draft's patch, ordering patches by release
(`DotaConstants.patch_positions`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, Self

from services.common.dota import TEAM_SIZE
from services.draft.errors import UnknownPatch

DATA_FILE = Path(__file__).with_name("modes.json")


class DraftMode(Enum):
    """The draft rules a room follows. The value is the stored name."""

    ALL_PICK_RANKED = "all_pick_ranked"
    CAPTAINS_MODE = "captains_mode"


class ActionKind(Enum):
    """A pick (the team plays the hero) or a ban (nobody does). The value is the stored name."""

    PICK = "pick"
    BAN = "ban"


class Seat(Enum):
    """A team by its place in the draft order: the team with first pick, or the other one."""

    FIRST = "F"
    SECOND = "S"


@dataclass(frozen=True)
class Step:
    """One turn of the draft order: who acts, what they do and their time for it."""

    seat: Seat
    kind: ActionKind
    # Fractions allowed: a draft's DraftTimers may set sub-second times (practice drafts, tests).
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {"seat": self.seat.value, "kind": self.kind.value, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        """Inverse of `to_dict`."""
        return cls(Seat(raw["seat"]), ActionKind(raw["kind"]), float(raw["seconds"]))


@dataclass(frozen=True)
class Rules:
    """The rules one draft runs under, copied into its state so a later data fix never changes a
    draft already running.

    `nominated_bans` > 0 (ranked All Pick): before the first pick either side may ban up to that
    many heroes, outside the step order, while the first pick's clock waits `nomination_seconds`.
    """

    id: str
    mode: DraftMode
    steps: tuple[Step, ...]
    reserve_seconds: float
    nominated_bans: int = 0
    nomination_seconds: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "id": self.id,
            "mode": self.mode.value,
            "steps": [step.to_dict() for step in self.steps],
            "reserve_seconds": self.reserve_seconds,
            "nominated_bans": self.nominated_bans,
            "nomination_seconds": self.nomination_seconds,
        }

    def with_times(self, *, step_seconds: float | None, reserve_seconds: float | None) -> Rules:
        """These rules with every step's time and/or the reserve replaced (a draft's
        DraftTimers); None keeps the mode's own value."""
        steps = self.steps
        if step_seconds is not None:
            steps = tuple(replace(step, seconds=step_seconds) for step in steps)
        reserve = self.reserve_seconds if reserve_seconds is None else reserve_seconds
        return replace(self, steps=steps, reserve_seconds=reserve)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        """Inverse of `to_dict`."""
        return cls(
            id=str(raw["id"]),
            mode=DraftMode(raw["mode"]),
            steps=tuple(Step.from_dict(step) for step in raw["steps"]),
            reserve_seconds=float(raw["reserve_seconds"]),
            nominated_bans=int(raw["nominated_bans"]),
            nomination_seconds=int(raw["nomination_seconds"]),
        )


@dataclass(frozen=True)
class Source:
    """Where an entry's facts come from, and what that source says."""

    url: str
    says: str


@dataclass(frozen=True)
class ModeEntry:
    """One row of the table: a mode's rules for a range of patches, with its sources."""

    rules: Rules
    from_patch: str
    until_patch: str | None
    sources: tuple[Source, ...]
    unconfirmed: tuple[str, ...]


def _steps(phases: Iterable[Mapping[str, Any]]) -> tuple[Step, ...]:
    return tuple(
        Step(Seat(letter), ActionKind(phase["kind"]), int(phase["step_seconds"]))
        for phase in phases
        for letter in phase["teams"]
    )


def _validate(entry: ModeEntry) -> None:
    """Every draft ends with TEAM_SIZE picks per team; Captains Mode also bans evenly."""
    rules = entry.rules
    for seat in Seat:
        picks = sum(1 for s in rules.steps if s.seat is seat and s.kind is ActionKind.PICK)
        if picks != TEAM_SIZE:
            raise ValueError(f"{rules.id}: {seat.name} team has {picks} picks, not {TEAM_SIZE}")
    if any(step.seconds <= 0 for step in rules.steps) or rules.reserve_seconds < 0:
        raise ValueError(f"{rules.id}: step times must be positive and reserves not negative")
    if not entry.sources:
        raise ValueError(f"{rules.id}: an entry needs at least one source")


def parse_table(raw: Mapping[str, Any]) -> tuple[ModeEntry, ...]:
    """The entries of a table in the `modes.json` format, validated."""
    entries = []
    for item in raw["modes"]:
        nominated = item.get("nominated_bans") or {}
        entry = ModeEntry(
            rules=Rules(
                id=str(item["id"]),
                mode=DraftMode(item["mode"]),
                steps=_steps(item["phases"]),
                reserve_seconds=int(item["reserve_seconds"]),
                nominated_bans=int(nominated.get("per_side", 0)),
                nomination_seconds=int(nominated.get("seconds", 0)),
            ),
            from_patch=str(item["patches"]["from"]),
            until_patch=item["patches"]["until"],
            sources=tuple(Source(s["url"], s["says"]) for s in item["source"]),
            unconfirmed=tuple(item.get("unconfirmed", ())),
        )
        _validate(entry)
        entries.append(entry)
    return tuple(entries)


@cache
def load_table(path: Path = DATA_FILE) -> tuple[ModeEntry, ...]:
    """The table shipped with the service, read once per process."""
    return parse_table(json.loads(path.read_text()))


def rules_for(
    mode: DraftMode,
    patch: str,
    positions: Mapping[str, int],
    table: Iterable[ModeEntry] | None = None,
) -> Rules:
    """The rules of `mode` for `patch`: the entry whose [from, until) range holds the patch.

    `positions` is `DotaConstants.patch_positions()`. An entry whose `until` patch is not yet
    known is open-ended; one whose `from` patch is not yet known applies to nothing yet. Raises
    UnknownPatch for a patch the constants do not know or no entry covers.
    """
    position = positions.get(patch)
    if position is None:
        raise UnknownPatch(patch)
    matches = []
    for entry in load_table() if table is None else table:
        start = positions.get(entry.from_patch)
        end = positions.get(entry.until_patch) if entry.until_patch is not None else None
        covers = start is not None and start <= position and (end is None or position < end)
        if entry.rules.mode is mode and covers:
            matches.append(entry)
    if len(matches) != 1:
        raise UnknownPatch(
            patch,
            f"{len(matches)} {mode.value} rule entries cover patch {patch!r}; expected one",
        )
    return matches[0].rules
