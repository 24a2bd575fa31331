"""Reads the warehouse's aggregated counts into per patch and bracket Counts.

The counting itself is SQL in the warehouse (services/common/warehouse: hero_counts,
pair_counts), so only a few hundred thousand aggregate rows leave ClickHouse whatever the number
of matches; `count_groups` there splits them per patch and bracket. This module accumulates
them into the statistics' Counts and adds the every-bracket total.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from services.common.dota import SkillBracket
from services.common.warehouse.counts import count_groups
from services.common.warehouse.reader import WarehouseReader
from services.model.statistics import Counts

PatchBracket = tuple[str, SkillBracket]


def counts_from_tables(
    hero_rows: pa.Table, pair_rows: pa.Table, hero_slots: int
) -> dict[PatchBracket, Counts]:
    """Counts per (patch, bracket), plus (patch, ALL) summed over every bracket."""
    result: dict[PatchBracket, Counts] = {}
    for group in count_groups(hero_rows, pair_rows):
        counts = Counts.empty(hero_slots)
        counts.add_heroes(group.heroes.hero_ids, group.heroes.games, group.heroes.wins)
        counts.matches = group.matches
        versus, together = group.versus, group.together
        counts.add_versus(versus.first, versus.second, versus.games, versus.wins)
        counts.add_with(together.first, together.second, together.games, together.wins)
        result[(group.patch, group.bracket)] = counts
        total = result.get((group.patch, SkillBracket.ALL))
        if total is None:
            result[(group.patch, SkillBracket.ALL)] = counts.copy()
        else:
            total.merge(counts)
    return result


def read_counts(
    source: WarehouseReader,
    hero_slots: int,
    patch: str | None = None,
    loaded_after: datetime | None = None,
    loaded_until: datetime | None = None,
) -> dict[PatchBracket, Counts]:
    """Counts of every (patch, bracket) over the matches first stored in
    (loaded_after, loaded_until]; an unset bound is open.

    Both queries get the same bounds, so matches stored between them are in neither or both.
    """
    return counts_from_tables(
        source.hero_counts(patch, loaded_after, loaded_until),
        source.pair_counts(patch, loaded_after, loaded_until),
        hero_slots,
    )
