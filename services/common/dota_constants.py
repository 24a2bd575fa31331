"""Dota 2 game constants (heroes, patches, game modes, lobby types) from the dotaconstants package.

The project depends on the npm package `dotaconstants` (OpenDota's constants, MIT); its `build/`
JSON is read from `DOTACONSTANTS_DIR`, by default `node_modules/dotaconstants/build` at the repo
root. Every service that needs to know whether a hero exists or which patch a date falls in
reads it through this module.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = _REPO_ROOT / "node_modules" / "dotaconstants" / "build"


@dataclass(frozen=True)
class Hero:
    """One hero as Valve numbers it."""

    id: int
    name: str
    localized_name: str
    primary_attribute: str
    attack_type: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Patch:
    """A game patch and the moment it went live."""

    id: int
    name: str
    released_at: datetime


@dataclass(frozen=True)
class DotaConstants:
    """The subset of dotaconstants counterpick relies on, indexed for fast lookups."""

    heroes: dict[int, Hero]
    patches: tuple[Patch, ...]
    balanced_game_modes: frozenset[int]
    balanced_lobby_types: frozenset[int]
    release_times: tuple[float, ...]

    @property
    def hero_slots(self) -> int:
        """Length of an array indexed by hero id: the highest id + 1 (index 0 = no hero)."""
        return max(self.heroes) + 1

    def patch_position(self, name: str) -> int | None:
        """Where patch `name` stands in release order (0 = oldest), or None if unknown."""
        return self.patch_positions().get(name)

    def patch_positions(self) -> dict[str, int]:
        """Patch name -> position in release order: the one patch ordering."""
        return {patch.name: index for index, patch in enumerate(self.patches)}

    def patch_at(self, unix_seconds: int) -> Patch | None:
        """The last patch released at or before `unix_seconds`, or None before the first."""
        index = bisect.bisect_right(self.release_times, unix_seconds) - 1
        return self.patches[index] if index >= 0 else None

    def patch_named(self, name: str) -> Patch | None:
        """The patch called `name` (e.g. "7.36"), if it exists."""
        return next((patch for patch in self.patches if patch.name == name), None)


def _read(directory: Path, name: str) -> object:
    path = directory / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing: run `npm ci` at the repo root or set DOTACONSTANTS_DIR"
        ) from None


@cache
def load_constants(directory: Path | None = None) -> DotaConstants:
    """Read and index the constants once per process."""
    directory = directory or Path(os.environ.get("DOTACONSTANTS_DIR", DEFAULT_DIR))
    heroes_raw = _read(directory, "heroes.json")
    patches_raw = _read(directory, "patch.json")
    modes_raw = _read(directory, "game_mode.json")
    lobbies_raw = _read(directory, "lobby_type.json")
    assert isinstance(heroes_raw, dict)
    assert isinstance(patches_raw, list)
    assert isinstance(modes_raw, dict)
    assert isinstance(lobbies_raw, dict)
    heroes = {
        int(raw["id"]): Hero(
            id=int(raw["id"]),
            name=raw["name"],
            localized_name=raw["localized_name"],
            primary_attribute=raw.get("primary_attr", ""),
            attack_type=raw.get("attack_type", ""),
            roles=tuple(raw.get("roles", ())),
        )
        for raw in heroes_raw.values()
    }
    patches = tuple(
        sorted(
            (
                Patch(
                    id=int(raw["id"]),
                    name=str(raw["name"]),
                    released_at=datetime.fromisoformat(
                        raw["date"].replace("Z", "+00:00")
                    ).astimezone(UTC),
                )
                for raw in patches_raw
            ),
            key=lambda patch: patch.released_at,
        )
    )
    return DotaConstants(
        heroes=heroes,
        patches=patches,
        balanced_game_modes=frozenset(int(k) for k, v in modes_raw.items() if v.get("balanced")),
        balanced_lobby_types=frozenset(int(k) for k, v in lobbies_raw.items() if v.get("balanced")),
        release_times=tuple(patch.released_at.timestamp() for patch in patches),
    )
