"""The warehouse's hero and pair count rows, grouped per patch and skill bracket.

`hero_counts` and `pair_counts` (`direct.py`) return long Arrow tables; this turns them into
dense integer arrays per (patch, bracket), the shape the model's statistics accumulate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from services.common.dota import PLAYERS_PER_MATCH, SkillBracket

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class HeroRows:
    """Games and wins per hero id."""

    hero_ids: IntArray
    games: IntArray
    wins: IntArray


@dataclass(frozen=True)
class PairRows:
    """Games and wins per hero pair, one direction only (see ClickHouseReader.pair_counts)."""

    first: IntArray
    second: IntArray
    games: IntArray
    wins: IntArray


@dataclass(frozen=True)
class CountGroup:
    """The counts of one stored (patch, skill bracket)."""

    patch: str
    bracket: SkillBracket
    matches: int
    heroes: HeroRows
    versus: PairRows  # first on Radiant against second on Dire, wins = Radiant wins
    together: PairRows  # same team, first < second, wins = that team's wins


def count_groups(hero_rows: pa.Table, pair_rows: pa.Table) -> list[CountGroup]:
    """One group per (patch, skill_bracket) with hero rows, ordered by patch then bracket name.

    A bracket name this build does not know counts as UNKNOWN.
    """
    heroes = pl.from_arrow(hero_rows)
    pairs = pl.from_arrow(pair_rows)
    assert isinstance(heroes, pl.DataFrame)
    assert isinstance(pairs, pl.DataFrame)
    groups = []
    keys = heroes.select("patch", "skill_bracket").unique().sort("patch", "skill_bracket")
    for patch, bracket_name in keys.iter_rows():
        hero_part = heroes.filter(
            (pl.col("patch") == patch) & (pl.col("skill_bracket") == bracket_name)
        )
        pair_part = pairs.filter(
            (pl.col("patch") == patch) & (pl.col("skill_bracket") == bracket_name)
        )
        groups.append(
            CountGroup(
                patch=patch,
                bracket=SkillBracket.parse(bracket_name) or SkillBracket.UNKNOWN,
                matches=int(hero_part["games"].sum()) // PLAYERS_PER_MATCH,
                heroes=HeroRows(
                    _ints(hero_part, "hero_id"),
                    _ints(hero_part, "games"),
                    _ints(hero_part, "wins"),
                ),
                versus=_pair_rows(pair_part.filter(pl.col("relation") == "vs")),
                together=_pair_rows(pair_part.filter(pl.col("relation") == "with")),
            )
        )
    return groups


def _pair_rows(frame: pl.DataFrame) -> PairRows:
    return PairRows(
        _ints(frame, "hero_a"), _ints(frame, "hero_b"), _ints(frame, "games"), _ints(frame, "wins")
    )


def _ints(frame: pl.DataFrame, column: str) -> IntArray:
    values: IntArray = frame[column].to_numpy().astype(np.int64)
    return values
