"""Reads the warehouse's aggregated counts into per patch and bracket Counts.

The counting itself is SQL in the warehouse (services/etl/warehouse.py: hero_counts,
pair_counts), so only a few hundred thousand aggregate rows leave ClickHouse whatever the number
of matches. This module turns those Arrow rows into the dense arrays the statistics use.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from services.common.dota import SkillBracket as Bracket
from services.model.statistics import Counts

PatchBracket = tuple[str, Bracket]


class CountsSource(Protocol):
    """What the model reads from the warehouse (the etl Warehouse adapter satisfies it)."""

    def hero_counts(
        self, patch: str | None = None, loaded_after: datetime | None = None
    ) -> pa.Table: ...

    def pair_counts(
        self, patch: str | None = None, loaded_after: datetime | None = None
    ) -> pa.Table: ...

    def latest_loaded_at(self) -> datetime | None: ...

    def player_hero_groups(self) -> pa.Table: ...

    def match_drafts(self, patch: str | None = None) -> pa.Table: ...


def counts_from_tables(
    hero_rows: pa.Table, pair_rows: pa.Table, hero_slots: int
) -> dict[PatchBracket, Counts]:
    """Counts per (patch, bracket), plus (patch, ALL) summed over every bracket."""
    heroes = pl.from_arrow(hero_rows)
    pairs = pl.from_arrow(pair_rows)
    assert isinstance(heroes, pl.DataFrame)
    assert isinstance(pairs, pl.DataFrame)
    result: dict[PatchBracket, Counts] = {}
    keys = heroes.select("patch", "skill_bracket").unique().sort("patch", "skill_bracket")
    for patch, bracket_name in keys.iter_rows():
        counts = Counts.empty(hero_slots)
        hero_part = heroes.filter(
            (pl.col("patch") == patch) & (pl.col("skill_bracket") == bracket_name)
        )
        counts.add_heroes(
            _ints(hero_part, "hero_id"), _ints(hero_part, "games"), _ints(hero_part, "wins")
        )
        counts.matches = int(hero_part["games"].sum()) // 10
        pair_part = pairs.filter(
            (pl.col("patch") == patch) & (pl.col("skill_bracket") == bracket_name)
        )
        versus = pair_part.filter(pl.col("relation") == "vs")
        counts.add_versus(
            _ints(versus, "hero_a"),
            _ints(versus, "hero_b"),
            _ints(versus, "games"),
            _ints(versus, "wins"),
        )
        together = pair_part.filter(pl.col("relation") == "with")
        counts.add_with(
            _ints(together, "hero_a"),
            _ints(together, "hero_b"),
            _ints(together, "games"),
            _ints(together, "wins"),
        )
        result[(patch, _bracket(bracket_name))] = counts
        total = result.get((patch, Bracket.ALL))
        if total is None:
            result[(patch, Bracket.ALL)] = counts.copy()
        else:
            total.merge(counts)
    return result


def read_counts(
    source: CountsSource,
    hero_slots: int,
    patch: str | None = None,
    loaded_after: datetime | None = None,
) -> dict[PatchBracket, Counts]:
    """Counts of every (patch, bracket) with matches, or only those loaded after a watermark."""
    return counts_from_tables(
        source.hero_counts(patch, loaded_after),
        source.pair_counts(patch, loaded_after),
        hero_slots,
    )


def _bracket(name: str) -> Bracket:
    try:
        return Bracket(name)
    except ValueError:
        return Bracket.UNKNOWN


def _ints(frame: pl.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy().astype(np.int64)
