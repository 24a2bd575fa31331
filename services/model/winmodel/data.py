"""Matches as the win models see them: (n, 5) hero-id arrays per side, outcomes and a time order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from services.common.dota import TEAM_SIZE

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
HeroArray = npt.NDArray[np.int16]
BoolArray = npt.NDArray[np.bool_]
Design = sp.csr_matrix

# Index 0 of every hero-indexed array is the empty slot of a partial draft (no hero has id 0).
EMPTY_SLOT = 0
# Contiguous time blocks of the training drafts: the newest one validates hyperparameters, and all
# of them give the out-of-fold predictions that blend weights and calibration are fitted on.
TIME_BLOCKS = 5

# Index pairs (i < j) of the five slots of a team: the ten same-team pairs.
SLOT_FIRST, SLOT_SECOND = np.triu_indices(TEAM_SIZE, 1)


@dataclass(frozen=True)
class Drafts:
    """Matches as numpy arrays: who played on each side, who won, and what orders them in time.

    `order_key` is whatever time-orders the matches (start_time, else match_id, else a row id);
    it is only ever compared, never used as a feature. `hero_slots` (H, one more than the highest
    hero id) sizes every array a model builds from these matches.
    """

    radiant: HeroArray  # (n, 5) hero ids, 0 = empty slot
    dire: HeroArray  # (n, 5)
    radiant_win: BoolArray  # (n,)
    order_key: IntArray  # (n,)
    hero_slots: int

    def __post_init__(self) -> None:
        count = self.radiant_win.shape[0]
        if self.radiant.shape != (count, TEAM_SIZE) or self.dire.shape != (count, TEAM_SIZE):
            raise ValueError(
                f"radiant {self.radiant.shape} and dire {self.dire.shape} must be ({count}, 5)"
            )
        if self.order_key.shape != (count,):
            raise ValueError(f"order_key has shape {self.order_key.shape}, expected ({count},)")
        if count and (
            min(self.radiant.min(), self.dire.min()) < 0
            or max(self.radiant.max(), self.dire.max()) >= self.hero_slots
        ):
            raise ValueError(f"hero ids must be in 0..{self.hero_slots - 1} (0 = empty slot)")

    @classmethod
    def from_arrays(
        cls,
        radiant: npt.ArrayLike,
        dire: npt.ArrayLike,
        radiant_win: npt.ArrayLike,
        order_key: npt.ArrayLike | None = None,
        *,
        hero_slots: int,
    ) -> Drafts:
        """Cast to the canonical dtypes; without an order key the row order is the time order."""
        wins = np.asarray(radiant_win, dtype=np.bool_)
        key = np.arange(wins.shape[0]) if order_key is None else order_key
        return cls(
            radiant=np.asarray(radiant, dtype=np.int16),
            dire=np.asarray(dire, dtype=np.int16),
            radiant_win=wins,
            order_key=np.asarray(key, dtype=np.int64),
            hero_slots=hero_slots,
        )

    def __len__(self) -> int:
        return int(self.radiant_win.shape[0])

    def take(self, index: npt.NDArray[np.intp] | slice) -> Drafts:
        """The matches at `index` (positions or a slice), in that order."""
        return Drafts(
            self.radiant[index],
            self.dire[index],
            self.radiant_win[index],
            self.order_key[index],
            self.hero_slots,
        )

    def time_ordered(self) -> Drafts:
        """Oldest first (a stable sort, so equal keys keep their row order)."""
        return self.take(np.argsort(self.order_key, kind="stable"))

    def split_by_time(self, older_fraction: float) -> tuple[Drafts, Drafts]:
        """(the oldest `older_fraction` of the matches, the newest rest)."""
        ordered = self.time_ordered()
        cut = round(len(ordered) * older_fraction)
        return ordered.take(slice(0, cut)), ordered.take(slice(cut, None))

    def time_blocks(self, blocks: int = TIME_BLOCKS) -> list[npt.NDArray[np.intp]]:
        """Positions of `blocks` contiguous, equally sized time blocks, oldest first."""
        order = np.argsort(self.order_key, kind="stable")
        return [np.sort(block) for block in np.array_split(order, blocks)]

    def without(self, index: npt.NDArray[np.intp]) -> Drafts:
        """Every match except those at `index`."""
        keep = np.ones(len(self), dtype=bool)
        keep[index] = False
        return self.take(np.flatnonzero(keep))


def newest_block_split(drafts: Drafts) -> tuple[Drafts, Drafts]:
    """(older blocks, newest block): validation that looks forward in time, as serving does."""
    newest = drafts.time_blocks()[-1]
    return drafts.without(newest), drafts.take(newest)
