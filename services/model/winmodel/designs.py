"""Sparse design matrices of drafts: hero, same-team pair and cross-team pair indicator columns.

Pair columns are the unordered pairs {a < b} of hero ids, in the order of the upper triangle of
an (H, H) matrix, so a coefficient vector maps back onto the served model's matrices directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from services.common.dota import TEAM_SIZE
from services.model.winmodel.data import (
    EMPTY_SLOT,
    SLOT_FIRST,
    SLOT_SECOND,
    Design,
    Drafts,
    FloatArray,
)


@dataclass(frozen=True)
class PairIndex:
    """The unordered hero pairs of H hero slots: their (row, column) positions in an (H, H)
    matrix and, for each (low, high), its column in a pair design."""

    upper: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]
    column: npt.NDArray[np.int64]  # (H, H): column of pair (low, high), -1 elsewhere

    @property
    def count(self) -> int:
        """P: the number of unordered pairs."""
        return int(self.upper[0].size)


@cache
def pair_index(hero_slots: int) -> PairIndex:
    """The pair index of H hero slots (built once per H)."""
    upper = np.triu_indices(hero_slots, 1)
    column = np.full((hero_slots, hero_slots), -1, dtype=np.int64)
    column[upper] = np.arange(upper[0].size)
    return PairIndex(upper, column)


def hero_design(drafts: Drafts) -> Design:
    """(n, H) one-hot: +1 for a Radiant hero, -1 for a Dire hero; empty slots left out."""
    rows = np.repeat(np.arange(len(drafts)), TEAM_SIZE)
    heroes = np.concatenate([drafts.radiant.ravel(), drafts.dire.ravel()]).astype(np.int64)
    signs = np.concatenate([np.ones(rows.size), -np.ones(rows.size)])
    keep = heroes != EMPTY_SLOT
    return sp.csr_matrix(
        (signs[keep], (np.concatenate([rows, rows])[keep], heroes[keep])),
        shape=(len(drafts), drafts.hero_slots),
    )


def _pair_entries(
    first: npt.NDArray[np.int64],
    second: npt.NDArray[np.int64],
    rows: npt.NDArray[np.int64],
    pairs: PairIndex,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], FloatArray]:
    """(rows, column of the unordered pair, +1 if first < second else -1), empties dropped."""
    keep = (first != EMPTY_SLOT) & (second != EMPTY_SLOT) & (first != second)
    low = np.minimum(first, second)[keep]
    high = np.maximum(first, second)[keep]
    orientation = np.where(first[keep] < second[keep], 1.0, -1.0)
    return rows[keep], pairs.column[low, high], orientation


def synergy_design(drafts: Drafts) -> Design:
    """(n, P): +1 for each same-team pair in Radiant, -1 in Dire (column = unordered pair)."""
    pairs = pair_index(drafts.hero_slots)
    rows = np.repeat(np.arange(len(drafts)), SLOT_FIRST.size)
    all_rows, all_columns, all_values = [], [], []
    for team, sign in ((drafts.radiant, 1.0), (drafts.dire, -1.0)):
        first = team[:, SLOT_FIRST].ravel().astype(np.int64)
        second = team[:, SLOT_SECOND].ravel().astype(np.int64)
        kept_rows, columns, _ = _pair_entries(first, second, rows, pairs)
        all_rows.append(kept_rows)
        all_columns.append(columns)
        all_values.append(np.full(columns.size, sign))
    return sp.csr_matrix(
        (np.concatenate(all_values), (np.concatenate(all_rows), np.concatenate(all_columns))),
        shape=(len(drafts), pairs.count),
    )


def matchup_design(drafts: Drafts) -> Design:
    """(n, P): for each Radiant hero r and Dire hero d, +1 in column {r, d} if r < d else -1.

    With one coefficient m per unordered pair, M[low, high] = m and M[high, low] = -m, so the
    column sum equals sum_{r, d} M[r, d]: antisymmetry is built into the parametrisation.
    """
    pairs = pair_index(drafts.hero_slots)
    rows = np.repeat(np.arange(len(drafts)), TEAM_SIZE * TEAM_SIZE)
    radiant = np.repeat(drafts.radiant, TEAM_SIZE, axis=1).ravel().astype(np.int64)
    dire = np.tile(drafts.dire, (1, TEAM_SIZE)).ravel().astype(np.int64)
    kept_rows, columns, orientation = _pair_entries(radiant, dire, rows, pairs)
    return sp.csr_matrix((orientation, (kept_rows, columns)), shape=(len(drafts), pairs.count))
