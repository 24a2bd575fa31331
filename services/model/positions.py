"""Where heroes play: hero x position frequencies per patch, a team's most likely assignment of its
picks to positions 1-5, and how well a candidate fits a requested position.

Pure domain code on numpy arrays indexed by Valve hero id (column p - 1 is position p).

Frequencies. The warehouse counts how often each hero was played in each position in a patch
(match_players.position, derived by the etl from OpenDota's parsed laning). A hero with few or no
such games leans on a prior from its dotaconstants roles (`role_prior`), as if the prior had been
seen PRIOR_WEIGHT times:
    frequency[h, p] = (count[h, p] + PRIOR_WEIGHT * prior[h, p]) / (games[h] + PRIOR_WEIGHT)
so a patch without parsed matches answers from the roles alone, and a hero with hundreds of games
from its own data.

The fit term. For a requested position p, a candidate's POSITION_FIT term, in win-rate points, is
    FIT_POINTS * ln(frequency[h, p] / max_q frequency[h, q])
zero for the hero's main position and negative elsewhere: a hero that plays p half as often as its
main position loses 1.4 points, one that plays it a tenth as often 4.6 points. A hero that
essentially never plays p (frequency below NEVER_FREQUENCY) also loses OFF_POSITION_POINTS from
its ranking score (not from the term it is explained by), more than any gain in win probability
can make up, so it ranks below every hero that does play p. Per-position win rates are not used:
matches say too little about them, and a hero absent from a position would score 0 by that
measure, as if it fit.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from services.common.dota_constants import DotaConstants

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

POSITIONS = (1, 2, 3, 4, 5)
# How many games the roles prior is worth against a hero's own position counts.
PRIOR_WEIGHT = 20.0
# Win-rate points per unit of log frequency ratio (see the module docstring).
FIT_POINTS = 0.02
NEVER_FREQUENCY = 0.04
OFF_POSITION_POINTS = 1.0

# How much each dotaconstants role says for positions 1..5, added up over a hero's roles on top of
# ROLE_FLOOR for every position, then normalised. Carries farm in the safe lane (and sometimes
# mid), supports play 4 or 5, initiators and durable heroes offlane, nukers and escape heroes lean
# mid; disablers lean support. Deliberately coarse: the patch's own counts override it.
ROLE_WEIGHTS: Mapping[str, tuple[float, float, float, float, float]] = {
    "Carry": (2.0, 0.75, 0.5, 0.0, 0.0),
    "Support": (0.0, 0.0, 0.0, 2.0, 2.0),
    "Initiator": (0.0, 0.25, 1.0, 0.5, 0.0),
    "Durable": (0.5, 0.0, 1.0, 0.0, 0.0),
    "Nuker": (0.0, 0.5, 0.0, 0.5, 0.25),
    "Escape": (0.5, 0.5, 0.0, 0.25, 0.0),
    "Disabler": (0.0, 0.0, 0.25, 0.5, 0.5),
    "Pusher": (0.25, 0.25, 0.25, 0.0, 0.0),
}
ROLE_FLOOR = 0.2


def role_prior(constants: DotaConstants) -> FloatArray:
    """(H, 5) prior position frequencies of every hero from its dotaconstants roles; rows of
    unknown hero ids are uniform."""
    prior = np.full((constants.hero_slots, len(POSITIONS)), ROLE_FLOOR)
    for hero in constants.heroes.values():
        for role in hero.roles:
            prior[hero.id] += ROLE_WEIGHTS.get(role, (0.0,) * len(POSITIONS))
    normalised: FloatArray = prior / prior.sum(axis=1, keepdims=True)
    return normalised


@dataclass(frozen=True)
class HeroPositions:
    """One patch's hero x position counts and the shrunk frequencies derived from them."""

    counts: IntArray  # (H, 5) games of each hero in positions 1..5
    prior: FloatArray  # (H, 5) rows sum to 1
    prior_weight: float = PRIOR_WEIGHT
    frequency: FloatArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        games = self.counts.sum(axis=1, keepdims=True)
        frequency = (self.counts + self.prior_weight * self.prior) / (games + self.prior_weight)
        object.__setattr__(self, "frequency", frequency)

    @property
    def games(self) -> int:
        """Player-games with a known position behind the counts (0: the roles prior alone)."""
        return int(self.counts.sum())

    def fit(self, position: int) -> FloatArray:
        """(H,) POSITION_FIT term of every hero for `position`, in win-rate points (see the
        module docstring)."""
        frequency = self.frequency[:, position - 1]
        fit: FloatArray = FIT_POINTS * np.log(frequency / self.frequency.max(axis=1))
        return fit

    def off_position_penalty(self, position: int) -> FloatArray:
        """(H,) what the ranking takes off heroes almost never played in `position`, so they
        rank below every hero that is. Kept out of the POSITION_FIT term: an explanation that
        says "-100 points" would be a ranking device dressed up as a win-rate effect."""
        frequency = self.frequency[:, position - 1]
        penalty: FloatArray = np.where(frequency < NEVER_FREQUENCY, OFF_POSITION_POINTS, 0.0)
        return penalty

    def position_games(self, position: int) -> IntArray:
        """(H,) games of every hero in `position`."""
        games: IntArray = self.counts[:, position - 1]
        return games


def hero_positions(prior: FloatArray, counts: IntArray | None = None) -> HeroPositions:
    """A patch's positions: its counts (None or all zero: none known) shrunk toward `prior`."""
    if counts is None:
        counts = np.zeros(prior.shape, dtype=np.int64)
    return HeroPositions(counts=counts, prior=prior)


def position_counts(rows: pa.Table, hero_slots: int) -> dict[str, IntArray]:
    """(H, 5) counts per patch from the warehouse's (patch, hero_id, position, games) rows;
    rows of unknown heroes or positions outside 1..5 are left out."""
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    result: dict[str, IntArray] = {}
    if frame.is_empty():
        return result
    frame = frame.filter(
        (pl.col("hero_id") < hero_slots) & pl.col("position").is_between(1, len(POSITIONS))
    )
    for (patch,), part in frame.group_by("patch"):
        counts = np.zeros((hero_slots, len(POSITIONS)), dtype=np.int64)
        np.add.at(
            counts,
            (
                part["hero_id"].to_numpy().astype(np.intp),
                part["position"].to_numpy().astype(np.intp) - 1,
            ),
            part["games"].to_numpy().astype(np.int64),
        )
        result[str(patch)] = counts
    return result


@dataclass(frozen=True)
class Assignment:
    """Where one picked hero most likely plays."""

    hero_id: int
    position: int
    frequency: float


def assign(positions: HeroPositions, picks: Sequence[int]) -> list[Assignment]:
    """The most likely assignment of a team's picks (at most 5, pick order) to distinct positions:
    the one that maximises the product of the heroes' frequencies in their positions, over every
    injective assignment (at most 120). Ties go to the first in permutation order, so lower
    positions to earlier picks."""
    if not picks:
        return []
    if len(picks) > len(POSITIONS):
        raise ValueError(f"{len(picks)} picks; a team has {len(POSITIONS)} positions")
    logs = np.log(positions.frequency[np.asarray(picks, dtype=np.intp)])
    best: tuple[int, ...] = ()
    best_total = -np.inf
    for candidate in itertools.permutations(range(len(POSITIONS)), len(picks)):
        total = float(logs[np.arange(len(picks)), candidate].sum())
        if total > best_total:
            best, best_total = candidate, total
    return [
        Assignment(hero, column + 1, float(positions.frequency[hero, column]))
        for hero, column in zip(picks, best, strict=True)
    ]


def open_positions(assignment: Sequence[Assignment]) -> list[int]:
    """The positions an assignment leaves to fill, in order."""
    taken = {entry.position for entry in assignment}
    return [position for position in POSITIONS if position not in taken]
