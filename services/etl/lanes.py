"""Positions 1-5 of one team's players from what OpenDota's replay parser says about their laning.

OpenDota parses a replay into, per player, `lane_role` (1 safe lane, 2 mid, 3 off lane, 4 jungle;
the lane the parser saw the hero in during the first minutes) and `is_roaming`. A lane is not a
position: both the carry (1) and the hard support (5) lane safe, both the offlaner (3) and the soft
support (4) lane off, and the roamer (4) may show in any lane. What tells the two apart is farm.

The rule: every injective assignment of the team's five players to positions 1-5 is scored and the
best one is kept (5! = 120 candidates), where a player earns
- LANE_POINTS when their lane_role is the home lane of the position (1 and 5: safe lane, 2: mid,
  3 and 4: off lane; a jungler, lane_role 4, has no home lane and is placed by farm alone);
- when roaming, ROAM_POINTS for position 4 and ROAM_POINTS / 2 for position 5 (a roamer is a
  support, the soft one first);
- minus FARM_POINTS per step between their farm rank in the team (most last hits first, ties by
  gold per minute) and the position's expected rank (position 1 farms most, 5 least).
So of the two safe laners the one with more farm is 1 and the other 5, of the two off laners the
one with more farm is 3 and the other 4, and a lone roamer is 4. Lane points outweigh one or two
farm steps: a mid with less farm than the offlaner stays 2. Ties go to the first assignment in
permutation order, which makes the rule deterministic.

A team any of whose five players lacks a lane_role (an unparsed match, or Steam data) gets no
positions: guessing them from farm alone would look like data.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

POSITIONS = (1, 2, 3, 4, 5)
SAFE, MID, OFF, JUNGLE = 1, 2, 3, 4
HOME_LANE = {1: SAFE, 2: MID, 3: OFF, 4: OFF, 5: SAFE}
LANE_POINTS = 2.0
ROAM_POINTS = 2.0
FARM_POINTS = 0.5


@dataclass(frozen=True)
class Laner:
    """What the rule reads of one player (None where the match does not say)."""

    lane_role: int | None
    is_roaming: bool = False
    last_hits: int | None = None
    gold_per_min: int | None = None


def _points(laner: Laner, position: int, farm_rank: int) -> float:
    points = -FARM_POINTS * abs(farm_rank - (position - 1))
    if laner.lane_role == HOME_LANE[position]:
        points += LANE_POINTS
    if laner.is_roaming:
        points += ROAM_POINTS if position == 4 else ROAM_POINTS / 2 if position == 5 else 0.0
    return points


def team_positions(team: Sequence[Laner]) -> tuple[int, ...] | None:
    """The positions of a team's five players, in their order, or None when the team is not five
    parsed players (see the module docstring for the rule)."""
    if len(team) != len(POSITIONS) or any(
        laner.lane_role not in (SAFE, MID, OFF, JUNGLE) for laner in team
    ):
        return None
    by_farm = sorted(
        range(len(team)),
        key=lambda i: (-(team[i].last_hits or 0), -(team[i].gold_per_min or 0), i),
    )
    rank = {player: place for place, player in enumerate(by_farm)}
    points = [[_points(laner, p, rank[i]) for p in POSITIONS] for i, laner in enumerate(team)]
    best: tuple[int, ...] = POSITIONS
    best_points = float("-inf")
    for candidate in itertools.permutations(POSITIONS):
        total = sum(points[i][p - 1] for i, p in enumerate(candidate))
        if total > best_points:
            best, best_points = candidate, total
    return best
