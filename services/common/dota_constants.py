"""Dota 2 game constants (heroes, patches, game modes, lobby types) from the dotaconstants package.

The project depends on the npm package `dotaconstants` (OpenDota's constants, MIT); its `build/`
JSON is read from `DOTACONSTANTS_DIR`, by default `node_modules/dotaconstants/build` at the repo
root. Every service that needs to know whether a hero exists or which patch a date falls in
reads it through this module.

A dotaconstants update (a new patch, a new hero) is picked up without a restart: long-running
services hold a `ConstantsWatcher`, which re-reads the files when their modification times change
(checked at most every `RELOAD_CHECK_SECONDS`).
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)
DEFAULT_DIR = _REPO_ROOT / "node_modules" / "dotaconstants" / "build"
# The files load_constants reads: a change to any of them is a new set of constants.
FILES = ("heroes.json", "patch.json", "game_mode.json", "lobby_type.json")
# How often a watcher looks at the files' modification times (a few stat calls).
RELOAD_CHECK_SECONDS = 30.0


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

    def current_patch(self, now: float | None = None) -> Patch:
        """The newest patch that has started at `now` (unix seconds, default the clock): what
        "the current patch" means, whether or not any match of it is stored yet."""
        moment = time.time() if now is None else now
        index = max(0, bisect.bisect_right(self.release_times, moment) - 1)
        return self.patches[index]


def _read(directory: Path, name: str) -> object:
    path = directory / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing: run `npm ci` at the repo root or set DOTACONSTANTS_DIR"
        ) from None


def constants_dir() -> Path:
    """Where the constants are read from: DOTACONSTANTS_DIR, else the npm package's build/."""
    return Path(os.environ.get("DOTACONSTANTS_DIR", DEFAULT_DIR))


@cache
def load_constants(directory: Path | None = None) -> DotaConstants:
    """Read and index the constants once per process (a ConstantsWatcher follows changes)."""
    return read_constants(directory or constants_dir())


def read_constants(directory: Path) -> DotaConstants:
    """Read and index the constants in `directory` now (no cache)."""
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


def _signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Modification time and size of each constants file (missing files count as 0)."""
    result = []
    for name in FILES:
        try:
            stat = (directory / name).stat()
        except FileNotFoundError:
            result.append((name, 0, 0))
            continue
        result.append((name, stat.st_mtime_ns, stat.st_size))
    return tuple(result)


class ConstantsWatcher:
    """The current constants of a long-running process, re-read when the files change.

    `current()` costs a clock read, and a few `stat` calls every `check_seconds`; the files are
    parsed again only when a modification time or size changed. A half-written update (a file
    that does not parse) keeps the previous constants and is tried again at the next check.
    The returned object is the same one until the constants change, so callers can compare
    with `is` to see a reload.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        check_seconds: float = RELOAD_CHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        initial: DotaConstants | None = None,
    ) -> None:
        self.directory = directory or constants_dir()
        self.check_seconds = check_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._signature = _signature(self.directory)
        self._constants = initial or read_constants(self.directory)
        self._checked_at = monotonic()

    def current(self) -> DotaConstants:
        """The constants as the files hold them (at most `check_seconds` old)."""
        now = self._monotonic()
        if now - self._checked_at < self.check_seconds:
            return self._constants
        return self.check(now)

    def check(self, now: float | None = None) -> DotaConstants:
        """Look at the files now and reload them if they changed."""
        with self._lock:
            self._checked_at = self._monotonic() if now is None else now
            signature = _signature(self.directory)
            if signature == self._signature:
                return self._constants
            try:
                constants = read_constants(self.directory)
            except (OSError, ValueError, KeyError, AssertionError) as error:
                log.warning(
                    "dotaconstants in %s changed but do not load: %s", self.directory, error
                )
                return self._constants
            log.info(
                "dotaconstants reloaded from %s: %d heroes, newest patch %s",
                self.directory,
                len(constants.heroes),
                constants.patches[-1].name if constants.patches else "none",
            )
            self._signature, self._constants = signature, constants
            return constants
