"""Draft win models: P(Radiant wins) from a full or partial draft, their metrics and calibration.

Pure domain code (numpy, scipy, xgboost): no gRPC, no storage. Every model shares one interface,
`fit(drafts)` then `predict(radiant, dire)`, where `radiant` and `dire` are (n, 5) arrays of
Valve hero ids and 0 marks an empty slot of a partial draft.

Why several models: the served model has to be *decomposable*,

    logit P(Radiant) = bias + sum_R w[h] - sum_D w[h]
                       + sum_{pairs in R} S[a, b] - sum_{pairs in D} S[a, b]
                       + sum_{r in R, d in D} M[r, d]               (then a monotone map)

because that is what lets the service score all ~125 candidate picks with one vectorised numpy
expression (`DecomposedModel.candidate_logits`) in microseconds. The baselines (majority,
one-hot logistic regression, the additive statistics model) and a non-decomposable challenger
(xgboost) are here so that the quality bench can show what the served model gains or gives up.

Everything a model learns comes from the drafts handed to `fit`: hyperparameters are chosen on
the newest time block of those drafts and calibration on their out-of-fold predictions, so a
caller that holds test matches out of `fit` can evaluate honestly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy import optimize, special, stats
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from services.model.statistics import fit_prior_weight

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
HeroArray = npt.NDArray[np.int16]
BoolArray = npt.NDArray[np.bool_]
Design = sp.csr_matrix

TEAM_SIZE = 5
# Valve hero ids run up to 155 today; index 0 is the empty slot of a partial draft.
HERO_SLOTS = 156
EMPTY_SLOT = 0
ECE_BINS = 10
# Contiguous time blocks of the training drafts: the newest one validates hyperparameters, and all
# of them give the out-of-fold predictions that blend weights and calibration are fitted on.
TIME_BLOCKS = 5
# Log-spaced grid of L2 precisions (prior precision = 1 / prior variance of a logit weight).
PRECISION_GRID: tuple[float, ...] = tuple(float(10.0 ** (e / 2)) for e in range(0, 12))
# Knots of a Platt map stored as a piecewise linear curve: linear interpolation of the sigmoid on
# a 0.05 grid is off by less than 1e-4 in probability, and the served map stays one np.interp.
CALIBRATION_GRID: FloatArray = np.linspace(-8.0, 8.0, 321)
PROBABILITY_FLOOR = 1e-15

PickingSide = Literal["radiant", "dire"]

# Index pairs (i < j) of the five slots of a team: the ten same-team pairs.
_SLOT_FIRST, _SLOT_SECOND = np.triu_indices(TEAM_SIZE, 1)
# The same for a team of n = 0..5 listed heroes (one gather instead of a loop over pairs).
_TEAM_PAIRS = tuple(np.triu_indices(n, 1) for n in range(TEAM_SIZE + 1))


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Drafts:
    """Matches as numpy arrays: who played on each side, who won, and what orders them in time.

    `order_key` is whatever time-orders the matches (start_time, else match_id, else a row id);
    it is only ever compared, never used as a feature.
    """

    radiant: HeroArray  # (n, 5) hero ids, 0 = empty slot
    dire: HeroArray  # (n, 5)
    radiant_win: BoolArray  # (n,)
    order_key: IntArray  # (n,)

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
            or max(self.radiant.max(), self.dire.max()) >= HERO_SLOTS
        ):
            raise ValueError(f"hero ids must be in 0..{HERO_SLOTS - 1} (0 = empty slot)")

    @classmethod
    def from_arrays(
        cls,
        radiant: npt.ArrayLike,
        dire: npt.ArrayLike,
        radiant_win: npt.ArrayLike,
        order_key: npt.ArrayLike | None = None,
    ) -> Drafts:
        """Cast to the canonical dtypes; without an order key the row order is the time order."""
        wins = np.asarray(radiant_win, dtype=np.bool_)
        key = np.arange(wins.shape[0]) if order_key is None else order_key
        return cls(
            radiant=np.asarray(radiant, dtype=np.int16),
            dire=np.asarray(dire, dtype=np.int16),
            radiant_win=wins,
            order_key=np.asarray(key, dtype=np.int64),
        )

    def __len__(self) -> int:
        return int(self.radiant_win.shape[0])

    def take(self, index: npt.NDArray[np.intp] | slice) -> Drafts:
        """The matches at `index` (positions or a slice), in that order."""
        return Drafts(
            self.radiant[index], self.dire[index], self.radiant_win[index], self.order_key[index]
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


# --------------------------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True)
class Quality:
    """How well probabilities predicted outcomes."""

    log_loss: float
    accuracy: float
    roc_auc: float
    ece: float
    brier: float


def _clipped(probabilities: FloatArray) -> FloatArray:
    return np.clip(probabilities, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)


def log_loss(probabilities: FloatArray, outcomes: BoolArray) -> float:
    """Mean negative log-likelihood in nats (probabilities clipped away from 0 and 1)."""
    p = _clipped(np.asarray(probabilities, dtype=np.float64))
    y = np.asarray(outcomes, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def accuracy(probabilities: FloatArray, outcomes: BoolArray) -> float:
    """Share of matches whose winner is the side given >= 50 % (a tie calls Radiant)."""
    return float(np.mean((np.asarray(probabilities) >= 0.5) == np.asarray(outcomes, dtype=bool)))


def roc_auc(probabilities: FloatArray, outcomes: BoolArray) -> float:
    """Area under the ROC curve via the rank-sum statistic (ties count half); NaN for one class."""
    y = np.asarray(outcomes, dtype=bool)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = stats.rankdata(probabilities)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def expected_calibration_error(
    probabilities: FloatArray, outcomes: BoolArray, bins: int = ECE_BINS
) -> float:
    """sum over equal-width probability bins of (share of matches) * |mean p - win rate|."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    counts = np.bincount(which, minlength=bins)
    gap = np.abs(
        np.bincount(which, weights=p, minlength=bins)
        - np.bincount(which, weights=y, minlength=bins)
    )
    return float(gap.sum() / max(int(counts.sum()), 1))


def ece_noise_floor(probabilities: FloatArray, draws: int = 200, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model with these predictions would still show on average,
    outcomes being drawn from the predictions themselves: the sampling noise of ECE.

    On a few thousand matches this floor is near 0.01 by itself, so an ECE target has to be read
    against it.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    generator = np.random.default_rng(seed)
    return float(
        np.mean([expected_calibration_error(p, generator.random(p.size) < p) for _ in range(draws)])
    )


def brier_score(probabilities: FloatArray, outcomes: BoolArray) -> float:
    """Mean squared error of the probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    return float(np.mean((p - np.asarray(outcomes, dtype=np.float64)) ** 2))


def evaluate(probabilities: FloatArray, outcomes: BoolArray) -> Quality:
    """All five metrics at once."""
    return Quality(
        log_loss=log_loss(probabilities, outcomes),
        accuracy=accuracy(probabilities, outcomes),
        roc_auc=roc_auc(probabilities, outcomes),
        ece=expected_calibration_error(probabilities, outcomes),
        brier=brier_score(probabilities, outcomes),
    )


# --------------------------------------------------------------------------------------------
# Calibration


@dataclass(frozen=True)
class CalibrationMap:
    """A monotone map from logit to probability, stored as knots of a piecewise linear curve.

    One representation for Platt (sampled sigmoid) and isotonic (step means) maps, so the served
    model applies either with a single np.interp; beyond the outer knots the end values hold.
    """

    logits: FloatArray  # strictly increasing
    probabilities: FloatArray  # non-decreasing, in [0, 1]

    def __post_init__(self) -> None:
        if self.logits.shape != self.probabilities.shape or self.logits.size < 2:
            raise ValueError("a calibration map needs at least two matching knots")
        if np.any(np.diff(self.logits) <= 0) or np.any(np.diff(self.probabilities) < 0):
            raise ValueError("calibration knots must increase (logits) and not decrease (p)")

    def __call__(self, logits: FloatArray) -> FloatArray:
        result: FloatArray = np.interp(logits, self.logits, self.probabilities)
        return result


def sigmoid_map(slope: float = 1.0, intercept: float = 0.0) -> CalibrationMap:
    """The Platt map p = sigmoid(slope * z + intercept) as knots (slope must be >= 0)."""
    if slope < 0:
        raise ValueError("a negative Platt slope would reverse the ranking")
    return CalibrationMap(
        CALIBRATION_GRID.copy(), special.expit(slope * CALIBRATION_GRID + intercept)
    )


def fit_platt(logits: FloatArray, outcomes: BoolArray) -> tuple[float, float]:
    """(slope, intercept) of the logistic regression of outcomes on out-of-fold logits.

    Two parameters fitted on thousands of matches: unlike isotonic regression it cannot overfit
    the bins, and it keeps the map strictly increasing, so the ranking of picks never changes.
    """
    design = sp.csr_matrix(np.asarray(logits, dtype=np.float64).reshape(-1, 1))
    coefficients = _fit_logistic(design, outcomes, np.zeros(1), lower_bounds=np.zeros(1))
    return float(coefficients[0]), float(coefficients[1])


def fit_isotonic(logits: FloatArray, outcomes: BoolArray) -> CalibrationMap:
    """Isotonic regression (pool adjacent violators) of outcomes on logits, as knots.

    Each pooled block becomes one knot at its mean logit, so between blocks the map is linear
    rather than stepped and stays usable by np.interp.
    """
    order = np.argsort(logits, kind="stable")
    x = np.asarray(logits, dtype=np.float64)[order]
    y = np.asarray(outcomes, dtype=np.float64)[order]
    block_sum_y: list[float] = []
    block_sum_x: list[float] = []
    block_size: list[int] = []
    for xi, yi in zip(x, y, strict=True):
        block_sum_y.append(float(yi))
        block_sum_x.append(float(xi))
        block_size.append(1)
        while len(block_size) > 1 and (
            block_sum_y[-2] / block_size[-2] >= block_sum_y[-1] / block_size[-1]
        ):
            # Pop first: `a[-2] += a.pop()` would write to the shortened list's [-2].
            last_y, last_x, last_size = block_sum_y.pop(), block_sum_x.pop(), block_size.pop()
            block_sum_y[-1] += last_y
            block_sum_x[-1] += last_x
            block_size[-1] += last_size
    sizes = np.asarray(block_size, dtype=np.float64)
    knots_x = np.asarray(block_sum_x) / sizes
    knots_y = np.asarray(block_sum_y) / sizes
    # Blocks that ended up at the same mean logit (ties) are merged by keeping the last value.
    unique_x, last = np.unique(knots_x[::-1], return_index=True)
    unique_y = knots_y[::-1][last]
    if unique_x.size == 1:
        unique_x = np.asarray([unique_x[0] - 1.0, unique_x[0] + 1.0])
        unique_y = np.repeat(unique_y, 2)
    return CalibrationMap(unique_x, np.maximum.accumulate(unique_y))


# --------------------------------------------------------------------------------------------
# The served, decomposed form


def _pair_sums(matrix: FloatArray, team: npt.NDArray[np.intp]) -> FloatArray:
    """Sum of matrix[a, b] over the ten same-team slot pairs of each row of `team` (n, 5)."""
    result: FloatArray = matrix[team[:, _SLOT_FIRST], team[:, _SLOT_SECOND]].sum(axis=1)
    return result


@dataclass(frozen=True)
class DecomposedModel:
    """The served win model: hero, same-team pair and cross-team pair terms on the logit scale.

    logit = bias + sum_R w[h] - sum_D w[h] + sum_{pairs in R} S - sum_{pairs in D} S
            + sum_{r in R, d in D} M[r, d], then P(Radiant) = calibration(logit).

    The fields match services.model.drafts.DraftModel (hero_weight = w, synergy = S, matchup = M,
    calibration knots), so a DraftModel can be built from one field by field. Row and column 0
    (the empty slot) are zero, so the empty slots of a partial draft contribute no terms.
    """

    bias: float
    hero_weight: FloatArray  # w, (H,)
    synergy: FloatArray  # S, (H, H) symmetric, zero diagonal
    matchup: FloatArray  # M, (H, H) antisymmetric: M[a, b] = -M[b, a]
    calibration_logits: FloatArray  # knots of the monotone calibration map
    calibration_probabilities: FloatArray

    @classmethod
    def build(
        cls,
        bias: float,
        hero_weight: FloatArray,
        synergy: FloatArray,
        matchup: FloatArray,
        calibration: CalibrationMap | None = None,
    ) -> DecomposedModel:
        """Symmetrise S, antisymmetrise M, zero the diagonals and the empty slot's row/column."""
        weight = np.array(hero_weight, dtype=np.float64)
        pair_same = (np.asarray(synergy, dtype=np.float64) + synergy.T) / 2.0
        pair_cross = (np.asarray(matchup, dtype=np.float64) - matchup.T) / 2.0
        np.fill_diagonal(pair_same, 0.0)
        for matrix in (pair_same, pair_cross):
            matrix[EMPTY_SLOT, :] = 0.0
            matrix[:, EMPTY_SLOT] = 0.0
        weight[EMPTY_SLOT] = 0.0
        knots = calibration or sigmoid_map()
        return cls(float(bias), weight, pair_same, pair_cross, knots.logits, knots.probabilities)

    @property
    def hero_slots(self) -> int:
        """H: one more than the highest hero id the arrays hold."""
        return int(self.hero_weight.shape[0])

    def calibration(self) -> CalibrationMap:
        """The calibration map as an object."""
        return CalibrationMap(self.calibration_logits, self.calibration_probabilities)

    def logits(self, radiant: npt.ArrayLike, dire: npt.ArrayLike) -> FloatArray:
        """Uncalibrated logits of (n, 5) drafts (0 = empty slot); a single draft may be (5,)."""
        r = np.atleast_2d(np.asarray(radiant, dtype=np.intp))
        d = np.atleast_2d(np.asarray(dire, dtype=np.intp))
        w = self.hero_weight
        result: FloatArray = (
            self.bias
            + w[r].sum(axis=1)
            - w[d].sum(axis=1)
            + _pair_sums(self.synergy, r)
            - _pair_sums(self.synergy, d)
            + self.matchup[r[:, :, None], d[:, None, :]].sum(axis=(1, 2))
        )
        return result

    def predict(self, radiant: npt.ArrayLike, dire: npt.ArrayLike) -> FloatArray:
        """Calibrated P(Radiant wins) of (n, 5) drafts."""
        return self.calibration()(self.logits(radiant, dire))

    def draft_logit(self, radiant_ids: npt.ArrayLike, dire_ids: npt.ArrayLike) -> float:
        """The uncalibrated logit of one (partial) draft given as two lists of up to five ids."""
        r = np.asarray(radiant_ids, dtype=np.intp).ravel()
        d = np.asarray(dire_ids, dtype=np.intp).ravel()
        ally_r, ally_d = _TEAM_PAIRS[r.size], _TEAM_PAIRS[d.size]
        return float(
            self.bias
            + self.hero_weight[r].sum()
            - self.hero_weight[d].sum()
            + self.synergy[r[ally_r[0]], r[ally_r[1]]].sum()
            - self.synergy[d[ally_d[0]], d[ally_d[1]]].sum()
            + self.matchup[r[:, None], d[None, :]].sum()
        )

    def candidate_logits(
        self, radiant_ids: npt.ArrayLike, dire_ids: npt.ArrayLike, side: PickingSide
    ) -> FloatArray:
        """For every hero id c (index c of the result), the uncalibrated Radiant logit after
        `side` picks c next: the draft's logit plus c's own terms, one vectorised expression
        over all H heroes. Heroes already taken or that do not exist get meaningless values;
        callers mask them. Empty slots (0) in the id lists contribute nothing.

        Only row gathers: S is symmetric and M antisymmetric, so S[:, r] sums as S[r] and
        M[:, d] as -M[d], which reads contiguous memory.
        """
        r = np.asarray(radiant_ids, dtype=np.intp).ravel()
        d = np.asarray(dire_ids, dtype=np.intp).ravel()
        base = self.draft_logit(r, d)
        if side == "radiant":
            gain = self.hero_weight + self.synergy[r].sum(axis=0) - self.matchup[d].sum(axis=0)
        else:
            gain = -self.hero_weight - self.synergy[d].sum(axis=0) + self.matchup[r].sum(axis=0)
        result: FloatArray = gain + base
        return result

    def candidate_probabilities(
        self, radiant_ids: npt.ArrayLike, dire_ids: npt.ArrayLike, side: PickingSide
    ) -> FloatArray:
        """Calibrated P(Radiant wins) after `side` picks each hero id next."""
        result: FloatArray = np.interp(
            self.candidate_logits(radiant_ids, dire_ids, side),
            self.calibration_logits,
            self.calibration_probabilities,
        )
        return result

    def parameter_vector(self) -> FloatArray:
        """(w, upper triangle of S, upper triangle of M): the pairwise model's coefficients."""
        upper = np.triu_indices(self.hero_slots, 1)
        return np.concatenate([self.hero_weight, self.synergy[upper], self.matchup[upper]])


def combine(
    parts: Sequence[tuple[float, DecomposedModel]],
    bias: float = 0.0,
    calibration: CalibrationMap | None = None,
) -> DecomposedModel:
    """sum_k weight_k * part_k (+ bias): a weighted sum of decomposed logits is decomposed too."""
    first = parts[0][1]
    total_bias = bias + sum(weight * part.bias for weight, part in parts)
    hero_weight = sum(
        (weight * part.hero_weight for weight, part in parts), np.zeros_like(first.hero_weight)
    )
    synergy = sum((weight * part.synergy for weight, part in parts), np.zeros_like(first.synergy))
    matchup = sum((weight * part.matchup for weight, part in parts), np.zeros_like(first.matchup))
    return DecomposedModel.build(total_bias, hero_weight, synergy, matchup, calibration)


# --------------------------------------------------------------------------------------------
# Design matrices and the L2 logistic regression they share

_UPPER = np.triu_indices(HERO_SLOTS, 1)
PAIR_COUNT = int(_UPPER[0].size)
_PAIR_COLUMN = np.full((HERO_SLOTS, HERO_SLOTS), -1, dtype=np.int64)
_PAIR_COLUMN[_UPPER] = np.arange(PAIR_COUNT)


def hero_design(drafts: Drafts) -> Design:
    """(n, H) one-hot: +1 for a Radiant hero, -1 for a Dire hero; empty slots left out."""
    rows = np.repeat(np.arange(len(drafts)), TEAM_SIZE)
    heroes = np.concatenate([drafts.radiant.ravel(), drafts.dire.ravel()]).astype(np.int64)
    signs = np.concatenate([np.ones(rows.size), -np.ones(rows.size)])
    keep = heroes != EMPTY_SLOT
    return sp.csr_matrix(
        (signs[keep], (np.concatenate([rows, rows])[keep], heroes[keep])),
        shape=(len(drafts), HERO_SLOTS),
    )


def _pair_entries(
    first: npt.NDArray[np.int64], second: npt.NDArray[np.int64], rows: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], FloatArray]:
    """(rows, column of the unordered pair, +1 if first < second else -1), empties dropped."""
    keep = (first != EMPTY_SLOT) & (second != EMPTY_SLOT) & (first != second)
    low = np.minimum(first, second)[keep]
    high = np.maximum(first, second)[keep]
    orientation = np.where(first[keep] < second[keep], 1.0, -1.0)
    return rows[keep], _PAIR_COLUMN[low, high], orientation


def synergy_design(drafts: Drafts) -> Design:
    """(n, P): +1 for each same-team pair in Radiant, -1 in Dire (column = unordered pair)."""
    rows = np.repeat(np.arange(len(drafts)), _SLOT_FIRST.size)
    all_rows, all_columns, all_values = [], [], []
    for team, sign in ((drafts.radiant, 1.0), (drafts.dire, -1.0)):
        first = team[:, _SLOT_FIRST].ravel().astype(np.int64)
        second = team[:, _SLOT_SECOND].ravel().astype(np.int64)
        kept_rows, columns, _ = _pair_entries(first, second, rows)
        all_rows.append(kept_rows)
        all_columns.append(columns)
        all_values.append(np.full(columns.size, sign))
    return sp.csr_matrix(
        (np.concatenate(all_values), (np.concatenate(all_rows), np.concatenate(all_columns))),
        shape=(len(drafts), PAIR_COUNT),
    )


def matchup_design(drafts: Drafts) -> Design:
    """(n, P): for each Radiant hero r and Dire hero d, +1 in column {r, d} if r < d else -1.

    With one coefficient m per unordered pair, M[low, high] = m and M[high, low] = -m, so the
    column sum equals sum_{r, d} M[r, d]: antisymmetry is built into the parametrisation.
    """
    rows = np.repeat(np.arange(len(drafts)), TEAM_SIZE * TEAM_SIZE)
    radiant = np.repeat(drafts.radiant, TEAM_SIZE, axis=1).ravel().astype(np.int64)
    dire = np.tile(drafts.dire, (1, TEAM_SIZE)).ravel().astype(np.int64)
    kept_rows, columns, orientation = _pair_entries(radiant, dire, rows)
    return sp.csr_matrix((orientation, (kept_rows, columns)), shape=(len(drafts), PAIR_COUNT))


def _fit_logistic(
    design: Design,
    outcomes: BoolArray,
    precision: FloatArray,
    *,
    prior_mean: FloatArray | None = None,
    start: FloatArray | None = None,
    lower_bounds: FloatArray | None = None,
) -> FloatArray:
    """MAP logistic regression: sum of log-losses + 0.5 * sum precision * (beta - prior)^2.

    Returns the coefficients with the (unpenalised) intercept last. L-BFGS on a sparse design:
    tens of thousands of coefficients fit in seconds on one core.
    """
    columns = design.shape[1]
    target = np.asarray(outcomes, dtype=np.float64)
    centre = np.zeros(columns) if prior_mean is None else prior_mean
    transposed = design.T.tocsr()

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        beta = theta[:columns]
        z = design @ beta + theta[columns]
        deviation = beta - centre
        loss = float(np.sum(np.logaddexp(0.0, z) - target * z))
        loss += 0.5 * float(np.sum(precision * deviation * deviation))
        residual = special.expit(z) - target
        gradient = np.empty(columns + 1)
        gradient[:columns] = transposed @ residual + precision * deviation
        gradient[columns] = residual.sum()
        return loss, gradient

    initial = np.zeros(columns + 1) if start is None else start
    bounds = None
    if lower_bounds is not None:
        bounds = [(float(low), None) for low in lower_bounds] + [(None, None)]
    # L-BFGS's own vector updates are BLAS calls on a few thousand numbers: a multithreaded
    # BLAS spends far more waking threads than computing (25x slower measured on 2 busy cores).
    with threadpool_limits(limits=1, user_api="blas"):
        result = optimize.minimize(
            objective,
            initial,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 5_000, "maxcor": 20},
        )
    coefficients: FloatArray = result.x
    return coefficients


def _line_search_grid(
    score: Callable[[tuple[float, ...]], float], start: tuple[float, ...]
) -> tuple[float, ...]:
    """Coordinate descent over PRECISION_GRID: move one precision at a time to a better grid
    neighbour until none improves. Each point is scored once (cached)."""
    grid = PRECISION_GRID
    cache: dict[tuple[float, ...], float] = {}

    def cost(point: tuple[float, ...]) -> float:
        if point not in cache:
            cache[point] = score(point)
        return cache[point]

    current = tuple(min(grid, key=lambda g: abs(math.log(g / value))) for value in start)
    improved = True
    while improved:
        improved = False
        for axis in range(len(current)):
            for step in (1, -1):
                while True:
                    position = grid.index(current[axis]) + step
                    if not 0 <= position < len(grid):
                        break
                    candidate = (*current[:axis], grid[position], *current[axis + 1 :])
                    if cost(candidate) < cost(current) - 1e-7:
                        current, improved = candidate, True
                    else:
                        break
    return current


# --------------------------------------------------------------------------------------------
# Models


@runtime_checkable
class WinModel(Protocol):
    """Anything that learns P(Radiant wins) from drafts."""

    name: str

    def fit(self, drafts: Drafts) -> None:
        """Learn from these matches only."""
        ...

    def predict(self, radiant: npt.ArrayLike, dire: npt.ArrayLike) -> FloatArray:
        """P(Radiant wins) of (n, 5) drafts, 0 = empty slot."""
        ...


@runtime_checkable
class DecomposableWinModel(WinModel, Protocol):
    """A win model whose logit is hero + pair terms (and so can be served)."""

    def decompose(self) -> DecomposedModel:
        """The fitted model as served parameters."""
        ...

    def fixed_copy(self) -> Self:
        """An unfitted copy that reuses the hyperparameters chosen by the last fit (so
        out-of-fold refits do not search again)."""
        ...


class _DecomposedPredictions:
    """predict() and logits() through decompose(), shared by the decomposable models."""

    def decompose(self) -> DecomposedModel:
        raise NotImplementedError

    def logits(self, radiant: npt.ArrayLike, dire: npt.ArrayLike) -> FloatArray:
        """Uncalibrated logits of (n, 5) drafts."""
        return self.decompose().logits(radiant, dire)

    def predict(self, radiant: npt.ArrayLike, dire: npt.ArrayLike) -> FloatArray:
        """P(Radiant wins) of (n, 5) drafts."""
        return self.decompose().predict(radiant, dire)


def _validation_loss(model: DecomposedModel, validation: Drafts) -> float:
    """Log-loss of the uncalibrated logits (exact sigmoid, not the interpolated map)."""
    logits = model.logits(validation.radiant, validation.dire)
    return log_loss(special.expit(logits), validation.radiant_win)


def _require(model: DecomposedModel | None, name: str) -> DecomposedModel:
    if model is None:
        raise RuntimeError(f"{name} is not fitted")
    return model


@dataclass
class MajorityModel:
    """Always the training Radiant win rate: the floor every other model must clear."""

    name: str = "majority"
    rate: float = 0.5

    def fit(self, drafts: Drafts) -> None:
        """Remember the Radiant win rate."""
        self.rate = float(np.mean(drafts.radiant_win)) if len(drafts) else 0.5

    def predict(self, radiant: npt.ArrayLike, dire: npt.ArrayLike) -> FloatArray:
        """The same rate for every draft."""
        return np.full(np.atleast_2d(np.asarray(radiant)).shape[0], self.rate)


@dataclass
class OneHotLogistic(_DecomposedPredictions):
    """The baseline: L2 logistic regression on +1 Radiant / -1 Dire hero indicators.

    `precision` None chooses it on the newest time block of the training drafts.
    """

    precision: float | None = None
    name: str = "one-hot LR"
    model: DecomposedModel | None = field(default=None, repr=False)

    def fit(self, drafts: Drafts) -> None:
        """Choose the L2 precision (unless fixed), then fit on every match."""
        if self.precision is None:
            older, newest = newest_block_split(drafts)
            older_design = hero_design(older)

            def validation_loss(point: tuple[float, ...]) -> float:
                coefficients = _fit_logistic(
                    older_design, older.radiant_win, np.full(HERO_SLOTS, point[0])
                )
                return _validation_loss(self._decomposed(coefficients), newest)

            self.precision = _line_search_grid(validation_loss, (30.0,))[0]
        coefficients = _fit_logistic(
            hero_design(drafts), drafts.radiant_win, np.full(HERO_SLOTS, self.precision)
        )
        self.model = self._decomposed(coefficients)

    @staticmethod
    def _decomposed(coefficients: FloatArray) -> DecomposedModel:
        zeros = np.zeros((HERO_SLOTS, HERO_SLOTS))
        return DecomposedModel.build(coefficients[-1], coefficients[:HERO_SLOTS], zeros, zeros)

    def decompose(self) -> DecomposedModel:
        return _require(self.model, self.name)

    def fixed_copy(self) -> Self:
        return type(self)(precision=self.precision, name=self.name)


@dataclass(frozen=True)
class HeroStatistics:
    """Empirical-Bayes shrunk hero, ally-pair and enemy-pair win rates on the log-odds scale.

    Each rate is shrunk toward its expectation with a beta prior whose weight k (pseudo-games)
    maximises the beta-binomial marginal likelihood of the observed counts: the data decide how
    far a small sample is trusted. The expectations are those of services/model/statistics.py:
    ally pair p_a + p_b - 0.5, enemy pair p_a - p_b + 0.5 (clamped to [0.01, 0.99]).
    """

    strength: FloatArray  # (H,) logit of the shrunk hero win rate
    synergy: FloatArray  # (H, H) logit(shrunk pair rate) - logit(expected)
    matchup: FloatArray  # (H, H) antisymmetric
    prior_weights: tuple[float, float, float]  # k of heroes, ally pairs, enemy pairs

    @classmethod
    def count(
        cls, drafts: Drafts, prior_weights: tuple[float, float, float] | None = None
    ) -> HeroStatistics:
        """Count and shrink; `prior_weights` reuses the k of another (larger) sample."""
        won = drafts.radiant_win.astype(np.float64)
        hero_games = np.zeros(HERO_SLOTS)
        hero_wins = np.zeros(HERO_SLOTS)
        for team, team_won in ((drafts.radiant, won), (drafts.dire, 1.0 - won)):
            np.add.at(hero_games, team.ravel(), 1.0)
            np.add.at(hero_wins, team.ravel(), np.repeat(team_won, TEAM_SIZE))
        hero_games[EMPTY_SLOT] = hero_wins[EMPTY_SLOT] = 0.0
        half = np.full(HERO_SLOTS, 0.5)
        hero_k = (
            fit_prior_weight(hero_wins, hero_games, half)
            if prior_weights is None
            else prior_weights[0]
        )
        rate = (hero_wins + hero_k * 0.5) / (hero_games + hero_k)

        ally_games = np.zeros((HERO_SLOTS, HERO_SLOTS))
        ally_wins = np.zeros((HERO_SLOTS, HERO_SLOTS))
        for team, team_won in ((drafts.radiant, won), (drafts.dire, 1.0 - won)):
            first = team[:, _SLOT_FIRST].ravel()
            second = team[:, _SLOT_SECOND].ravel()
            result = np.repeat(team_won, _SLOT_FIRST.size)
            for a, b in ((first, second), (second, first)):
                np.add.at(ally_games, (a, b), 1.0)
                np.add.at(ally_wins, (a, b), result)
        enemy_games = np.zeros((HERO_SLOTS, HERO_SLOTS))
        enemy_wins = np.zeros((HERO_SLOTS, HERO_SLOTS))
        radiant = np.repeat(drafts.radiant, TEAM_SIZE, axis=1).ravel()
        dire = np.tile(drafts.dire, (1, TEAM_SIZE)).ravel()
        result = np.repeat(won, TEAM_SIZE * TEAM_SIZE)
        np.add.at(enemy_games, (radiant, dire), 1.0)
        np.add.at(enemy_wins, (radiant, dire), result)
        np.add.at(enemy_games, (dire, radiant), 1.0)
        np.add.at(enemy_wins, (dire, radiant), 1.0 - result)
        for matrix in (ally_games, ally_wins, enemy_games, enemy_wins):
            matrix[EMPTY_SLOT, :] = matrix[:, EMPTY_SLOT] = 0.0

        ally_expected = np.clip(rate[:, None] + rate[None, :] - 0.5, 0.01, 0.99)
        enemy_expected = np.clip(rate[:, None] - rate[None, :] + 0.5, 0.01, 0.99)
        upper = _UPPER
        if prior_weights is None:
            ally_k = fit_prior_weight(ally_wins[upper], ally_games[upper], ally_expected[upper])
            enemy_k = fit_prior_weight(enemy_wins[upper], enemy_games[upper], enemy_expected[upper])
        else:
            ally_k, enemy_k = prior_weights[1], prior_weights[2]

        def shrunk_log_odds(
            wins: FloatArray, games: FloatArray, expected: FloatArray, k: float
        ) -> FloatArray:
            shrunk = (wins + k * expected) / (games + k)
            score: FloatArray = special.logit(shrunk) - special.logit(expected)
            np.fill_diagonal(score, 0.0)
            return score

        synergy = shrunk_log_odds(ally_wins, ally_games, ally_expected, ally_k)
        matchup = shrunk_log_odds(enemy_wins, enemy_games, enemy_expected, enemy_k)
        strength: FloatArray = special.logit(rate)
        strength[EMPTY_SLOT] = 0.0
        return cls(
            strength,
            (synergy + synergy.T) / 2.0,
            (matchup - matchup.T) / 2.0,
            (hero_k, ally_k, enemy_k),
        )

    def features(self, drafts: Drafts) -> FloatArray:
        """(n, 3): summed hero strength, summed ally synergy and summed matchup, Radiant minus
        Dire. Each is the statistics model's own logit of one kind of term."""
        parts = DecomposedModel.build(
            0.0, self.strength, np.zeros_like(self.synergy), np.zeros_like(self.matchup)
        )
        hero = parts.logits(drafts.radiant, drafts.dire)
        r = drafts.radiant.astype(np.intp)
        d = drafts.dire.astype(np.intp)
        ally = _pair_sums(self.synergy, r) - _pair_sums(self.synergy, d)
        enemy = self.matchup[r[:, :, None], d[:, None, :]].sum(axis=(1, 2))
        return np.column_stack([hero, ally, enemy])


def out_of_fold_statistics_features(drafts: Drafts) -> FloatArray:
    """Additive features of every match from statistics that never saw it (time-block folds).

    In-sample features would let each match's own result leak into its pair statistics and
    inflate the fitted weights. The prior weights k are fitted once on all the drafts and reused
    in every fold: k is noisy on a fold and a fold-specific k changes the features' scale.
    """
    prior_weights = HeroStatistics.count(drafts).prior_weights
    features = np.zeros((len(drafts), 3))
    for block in drafts.time_blocks():
        statistics = HeroStatistics.count(drafts.without(block), prior_weights)
        features[block] = statistics.features(drafts.take(block))
    return features


@dataclass
class AdditiveModel(_DecomposedPredictions):
    """The issue's reference baseline: shrunk hero strength + summed ally synergies + summed
    cross-team matchups, combined by four weights (bias and one per kind of term) fitted by
    logistic regression on out-of-fold features."""

    name: str = "additive"
    weights: FloatArray | None = field(default=None, repr=False)  # hero, ally, enemy, bias
    statistics: HeroStatistics | None = field(default=None, repr=False)

    def fit(self, drafts: Drafts) -> None:
        """Weights from out-of-fold features, statistics from every match."""
        features = out_of_fold_statistics_features(drafts)
        # A weak ridge on the standardised scale (one pseudo-match per feature): when k is at its
        # upper bound a feature is nearly constant and its weight would otherwise run away.
        scale = features.std(axis=0) + 1e-12
        coefficients = _fit_logistic(
            sp.csr_matrix(features / scale), drafts.radiant_win, np.ones(3)
        )
        self.weights = np.append(coefficients[:3] / scale, coefficients[3])
        self.statistics = HeroStatistics.count(drafts)

    def decompose(self) -> DecomposedModel:
        if self.weights is None or self.statistics is None:
            raise RuntimeError(f"{self.name} is not fitted")
        hero, ally, enemy, bias = (float(v) for v in self.weights)
        s = self.statistics
        return DecomposedModel.build(bias, hero * s.strength, ally * s.synergy, enemy * s.matchup)

    def fixed_copy(self) -> Self:
        return type(self)(name=self.name)


@dataclass
class PairwiseLogistic(_DecomposedPredictions):
    """Logistic regression on hero, same-team pair and cross-team pair indicators, with a
    separate L2 precision for each group (pair effects need far stronger shrinkage than hero
    effects: each pair is seen ~100x less often).

    Precisions None are chosen by coordinate descent on a log grid, scored on the newest time
    block. `prior` centres the L2 penalty on another model's parameters instead of zero: that is
    how a new patch's model borrows from the previous patch (see fit_with_patch_prior).
    """

    hero_precision: float | None = None
    synergy_precision: float | None = None
    matchup_precision: float | None = None
    prior: DecomposedModel | None = field(default=None, repr=False)
    name: str = "pairwise LR"
    model: DecomposedModel | None = field(default=None, repr=False)

    @staticmethod
    def design(drafts: Drafts) -> Design:
        """[hero | same-team pair | cross-team pair] indicator columns."""
        return sp.csr_matrix(
            sp.hstack([hero_design(drafts), synergy_design(drafts), matchup_design(drafts)])
        )

    def _precision_vector(self, point: tuple[float, float, float]) -> FloatArray:
        return np.concatenate(
            [
                np.full(HERO_SLOTS, point[0]),
                np.full(PAIR_COUNT, point[1]),
                np.full(PAIR_COUNT, point[2]),
            ]
        )

    def _prior_mean(self) -> FloatArray | None:
        return None if self.prior is None else self.prior.parameter_vector()

    def fit(self, drafts: Drafts) -> None:
        """Choose the three precisions (unless all fixed), then fit on every match."""
        chosen = (self.hero_precision, self.synergy_precision, self.matchup_precision)
        if any(value is None for value in chosen):
            older, newest = newest_block_split(drafts)
            older_design = self.design(older)
            warm: dict[str, FloatArray] = {}

            def validation_loss(point: tuple[float, ...]) -> float:
                hero, ally, enemy = point
                coefficients = _fit_logistic(
                    older_design,
                    older.radiant_win,
                    self._precision_vector((hero, ally, enemy)),
                    prior_mean=self._prior_mean(),
                    start=warm.get("last"),
                )
                warm["last"] = coefficients
                return _validation_loss(self._decomposed(coefficients), newest)

            start = tuple(
                value if value is not None else default
                for value, default in zip(chosen, (30.0, 1000.0, 300.0), strict=True)
            )
            best = _line_search_grid(validation_loss, start)
            self.hero_precision, self.synergy_precision, self.matchup_precision = best
        point = (
            float(self.hero_precision or 0.0),
            float(self.synergy_precision or 0.0),
            float(self.matchup_precision or 0.0),
        )
        coefficients = _fit_logistic(
            self.design(drafts),
            drafts.radiant_win,
            self._precision_vector(point),
            prior_mean=self._prior_mean(),
        )
        self.model = self._decomposed(coefficients)

    @staticmethod
    def _decomposed(coefficients: FloatArray) -> DecomposedModel:
        hero = coefficients[:HERO_SLOTS]
        ally_upper = coefficients[HERO_SLOTS : HERO_SLOTS + PAIR_COUNT]
        enemy_upper = coefficients[HERO_SLOTS + PAIR_COUNT : HERO_SLOTS + 2 * PAIR_COUNT]
        synergy = np.zeros((HERO_SLOTS, HERO_SLOTS))
        matchup = np.zeros((HERO_SLOTS, HERO_SLOTS))
        synergy[_UPPER] = ally_upper
        matchup[_UPPER] = enemy_upper
        # build() halves (S + S.T) and (M - M.T); doubling first keeps the fitted values.
        return DecomposedModel.build(coefficients[-1], hero, 2.0 * synergy, 2.0 * matchup)

    def decompose(self) -> DecomposedModel:
        return _require(self.model, self.name)

    def fixed_copy(self) -> Self:
        return type(self)(
            self.hero_precision,
            self.synergy_precision,
            self.matchup_precision,
            self.prior,
            self.name,
        )


def fit_with_patch_prior(
    drafts: Drafts,
    previous_patch: DecomposedModel,
    *,
    hero_precision: float | None = None,
    synergy_precision: float | None = None,
    matchup_precision: float | None = None,
) -> PairwiseLogistic:
    """A pairwise model of a new patch, shrunk toward the previous patch's model.

    The L2 penalty is centred on the previous patch's (calibrated-scale) parameters, so a
    parameter the new patch's few matches say little about stays near its old value instead of
    collapsing to zero; its precision (the strength of that pull) is chosen on the newest block
    of the new patch's matches unless given.
    """
    model = PairwiseLogistic(
        hero_precision, synergy_precision, matchup_precision, prior=previous_patch
    )
    model.fit(drafts)
    return model


@dataclass
class XGBoostModel:
    """Gradient-boosted trees on the one-hot draft (optionally plus the additive model's three
    out-of-fold features). Not decomposable, so never served: it measures how much the linear
    logit leaves on the table. Rounds are chosen by early stopping on the newest time block."""

    with_additive_features: bool = False
    max_depth: int = 2
    learning_rate: float = 0.1
    threads: int = 2
    name: str = "xgboost one-hot"
    rounds: int | None = None
    booster: Any = field(default=None, repr=False)
    statistics: HeroStatistics | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.with_additive_features and self.name == "xgboost one-hot":
            self.name = "xgboost one-hot+additive"

    def _parameters(self) -> dict[str, Any]:
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "eta": self.learning_rate,
            "max_depth": self.max_depth,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
            "min_child_weight": 5.0,
            "nthread": self.threads,
            "seed": 7,
        }

    def _matrix(self, drafts: Drafts, additive: FloatArray | None) -> Design:
        design = hero_design(drafts)
        if additive is None:
            return design
        return sp.csr_matrix(sp.hstack([design, sp.csr_matrix(additive)]))

    def fit(self, drafts: Drafts) -> None:
        """Early-stop on the newest block, then refit on everything with that many rounds."""
        # Imported here: xgboost takes a while to load and the served (decomposable) models,
        # which the model service imports this module for, never need it.
        import xgboost as xgb

        older, newest = newest_block_split(drafts)
        older_features = newest_features = all_features = None
        if self.with_additive_features:
            older_features = out_of_fold_statistics_features(older)
            newest_features = HeroStatistics.count(older).features(newest)
            all_features = out_of_fold_statistics_features(drafts)
            self.statistics = HeroStatistics.count(drafts)
        if self.rounds is None:
            train = xgb.DMatrix(self._matrix(older, older_features), label=older.radiant_win)
            valid = xgb.DMatrix(self._matrix(newest, newest_features), label=newest.radiant_win)
            probe = xgb.train(
                self._parameters(),
                train,
                num_boost_round=3_000,
                evals=[(valid, "validation")],
                early_stopping_rounds=100,
                verbose_eval=False,
            )
            self.rounds = int(probe.best_iteration) + 1
        everything = xgb.DMatrix(self._matrix(drafts, all_features), label=drafts.radiant_win)
        self.booster = xgb.train(self._parameters(), everything, num_boost_round=self.rounds)

    def predict(self, radiant: npt.ArrayLike, dire: npt.ArrayLike) -> FloatArray:
        """P(Radiant wins) from the trees."""
        import xgboost as xgb

        if self.booster is None:
            raise RuntimeError(f"{self.name} is not fitted")
        r = np.atleast_2d(np.asarray(radiant, dtype=np.int16))
        d = np.atleast_2d(np.asarray(dire, dtype=np.int16))
        drafts = Drafts(
            r, d, np.zeros(r.shape[0], dtype=bool), np.zeros(r.shape[0], dtype=np.int64)
        )
        features = None if self.statistics is None else self.statistics.features(drafts)
        result: FloatArray = self.booster.predict(xgb.DMatrix(self._matrix(drafts, features)))
        return result.astype(np.float64)


@dataclass
class CalibratedBlend(_DecomposedPredictions):
    """The served model: a non-negative weighted sum of decomposable models' logits plus an
    intercept, fitted by logistic regression on their out-of-fold logits.

    That regression is Platt scaling over several inputs at once: the blend weights set the
    direction and their sum sets the scale, so the result is calibrated on out-of-fold
    predictions and stays decomposable (a weighted sum of decompositions is a decomposition).
    The Platt scale and offset are folded into the parameters, so the served calibration map
    is the plain sigmoid and the parameters live on the calibrated logit scale (what a next
    patch's prior needs). Weights are kept >= 0 so no component is used backwards.
    """

    components: list[DecomposableWinModel]
    name: str = "chosen: calibrated blend"
    blend_weights: FloatArray | None = field(default=None, repr=False)
    intercept: float = 0.0
    out_of_fold_logits: FloatArray | None = field(default=None, repr=False)

    def fit(self, drafts: Drafts) -> None:
        """Fit every component on all drafts, then the blend (see fit_blend)."""
        for component in self.components:
            component.fit(drafts)
        self.fit_blend(drafts)

    def fit_blend(self, drafts: Drafts) -> None:
        """Out-of-fold logits of every (already fitted) component over time blocks, then the
        non-negative logistic regression of outcomes on them."""
        logits = np.zeros((len(drafts), len(self.components)))
        for block in drafts.time_blocks():
            held_out = drafts.take(block)
            rest = drafts.without(block)
            for column, component in enumerate(self.components):
                refit = component.fixed_copy()
                refit.fit(rest)
                logits[block, column] = refit.decompose().logits(held_out.radiant, held_out.dire)
        coefficients = _fit_logistic(
            sp.csr_matrix(logits),
            drafts.radiant_win,
            np.zeros(len(self.components)),
            lower_bounds=np.zeros(len(self.components)),
        )
        self.out_of_fold_logits = logits
        self.blend_weights = coefficients[:-1]
        self.intercept = float(coefficients[-1])

    def decompose(self) -> DecomposedModel:
        """The served parameters (built anew on each call: call once, then serve the result)."""
        if self.blend_weights is None:
            raise RuntimeError(f"{self.name} is not fitted")
        parts = [
            (float(weight), component.decompose())
            for weight, component in zip(self.blend_weights, self.components, strict=True)
        ]
        return combine(parts, bias=self.intercept)

    def fixed_copy(self) -> Self:
        return type(self)([component.fixed_copy() for component in self.components], self.name)

    def out_of_fold_probabilities(self) -> FloatArray:
        """The blend's own out-of-fold probabilities (for calibration diagnostics)."""
        if self.blend_weights is None or self.out_of_fold_logits is None:
            raise RuntimeError(f"{self.name} is not fitted")
        result: FloatArray = special.expit(
            self.out_of_fold_logits @ self.blend_weights + self.intercept
        )
        return result


def default_blend() -> CalibratedBlend:
    """The blend the service serves: one-hot LR, the additive model and the pairwise model."""
    return CalibratedBlend([OneHotLogistic(), AdditiveModel(), PairwiseLogistic()])


def timed_fit(model: WinModel, drafts: Drafts) -> float:
    """Fit and return the wall-clock seconds it took."""
    started = time.perf_counter()
    model.fit(drafts)
    return time.perf_counter() - started
