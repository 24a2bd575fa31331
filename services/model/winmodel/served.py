"""The served win model: a decomposed logit (hero, same-team pair and cross-team pair terms) and a
monotone calibration map, plus what the service reports about it (version, quality).

Every decomposable model's fit ends in this type, so the recompute serves exactly what it fitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.common.dota import TEAM_SIZE, Side
from services.model.winmodel.calibration import CalibrationMap, sigmoid_map
from services.model.winmodel.data import EMPTY_SLOT, SLOT_FIRST, SLOT_SECOND, FloatArray
from services.model.winmodel.metrics import Quality

# Index pairs (i < j) of a team of n listed heroes, for n = 0..5: summing a pair matrix over a
# team is then one fancy-indexing gather, several times cheaper than np.ix_ plus np.triu.
_TEAM_PAIRS = tuple(np.triu_indices(n, 1) for n in range(TEAM_SIZE + 1))


def pair_sums(matrix: FloatArray, team: npt.NDArray[np.intp]) -> FloatArray:
    """Sum of matrix[a, b] over the ten same-team slot pairs of each row of `team` (n, 5)."""
    result: FloatArray = matrix[team[:, SLOT_FIRST], team[:, SLOT_SECOND]].sum(axis=1)
    return result


def _within(matrix: FloatArray, heroes: npt.NDArray[np.intp]) -> float:
    if heroes.size < 2:
        return 0.0
    first, second = _TEAM_PAIRS[heroes.size]
    return float(matrix[heroes[first], heroes[second]].sum())


@dataclass(frozen=True)
class DraftModel:
    """The served win model of one patch, on the logit scale:

        logit = bias + sum_R w[h] - sum_D w[h] + sum_{pairs in R} S - sum_{pairs in D} S
                + sum_{r in R, d in D} M[r, d],     then P(Radiant wins) = calibration(logit).

    The decomposition is what lets the service score all ~125 candidate picks with one
    vectorised expression (`candidate_logits`) in microseconds. Arrays are indexed by hero id;
    row and column 0 (the empty slot) are zero, so the empty slots of a partial draft contribute
    nothing. A fit leaves the descriptive fields at their defaults; the recompute fills them in.
    """

    bias: float
    hero_weight: FloatArray  # w, (H,)
    synergy: FloatArray  # S, (H, H) symmetric, zero diagonal
    matchup: FloatArray  # M, (H, H) antisymmetric: M[a, b] = -M[b, a]
    calibration_logits: FloatArray  # knots of the monotone calibration map, increasing
    calibration_probabilities: FloatArray  # non-decreasing
    version: str = ""
    trained_at: float = 0.0
    matches_used: int = 0
    quality: Quality | None = None
    # Prior precisions of the weights, for the approximate (Laplace, diagonal) uncertainty.
    hero_prior_precision: float = 1.0
    pair_prior_precision: float = 25.0

    @classmethod
    def build(
        cls,
        bias: float,
        hero_weight: FloatArray,
        synergy: FloatArray,
        matchup: FloatArray,
        calibration: CalibrationMap | None = None,
    ) -> DraftModel:
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

    def probability(self, logits: FloatArray) -> FloatArray:
        """Calibrated P(Radiant wins) of uncalibrated logits."""
        result: FloatArray = np.interp(
            logits, self.calibration_logits, self.calibration_probabilities
        )
        return result

    def logits(self, radiant: npt.ArrayLike, dire: npt.ArrayLike) -> FloatArray:
        """Uncalibrated logits of (n, 5) drafts (0 = empty slot); a single draft may be (5,)."""
        r = np.atleast_2d(np.asarray(radiant, dtype=np.intp))
        d = np.atleast_2d(np.asarray(dire, dtype=np.intp))
        w = self.hero_weight
        result: FloatArray = (
            self.bias
            + w[r].sum(axis=1)
            - w[d].sum(axis=1)
            + pair_sums(self.synergy, r)
            - pair_sums(self.synergy, d)
            + self.matchup[r[:, :, None], d[:, None, :]].sum(axis=(1, 2))
        )
        return result

    def predict(self, radiant: npt.ArrayLike, dire: npt.ArrayLike) -> FloatArray:
        """Calibrated P(Radiant wins) of (n, 5) drafts."""
        return self.probability(self.logits(radiant, dire))

    def radiant_logit(self, radiant: Sequence[int] | npt.ArrayLike, dire: npt.ArrayLike) -> float:
        """The uncalibrated logit of one (partial) draft given as two lists of up to five ids."""
        r = np.asarray(radiant, dtype=np.intp).ravel()
        d = np.asarray(dire, dtype=np.intp).ravel()
        value = self.bias + self.hero_weight[r].sum() - self.hero_weight[d].sum()
        value += _within(self.synergy, r) - _within(self.synergy, d)
        if r.size and d.size:
            value += self.matchup[r][:, d].sum()
        return float(value)

    def candidate_logits(
        self,
        radiant: npt.ArrayLike,
        dire: npt.ArrayLike,
        side: Side,
        base: float | None = None,
    ) -> FloatArray:
        """For every hero id c (index c of the result), the uncalibrated Radiant logit after
        `side` picks c next: the draft's logit plus c's own terms, one vectorised expression
        over all H heroes. Heroes already taken or that do not exist get meaningless values;
        callers mask them. `base` is the draft's own logit, if the caller has it already.
        """
        r = np.asarray(radiant, dtype=np.intp).ravel()
        d = np.asarray(dire, dtype=np.intp).ravel()
        if base is None:
            base = self.radiant_logit(r, d)
        if side is Side.RADIANT:
            gain = (
                self.hero_weight + self.synergy[:, r].sum(axis=1) + self.matchup[:, d].sum(axis=1)
            )
        else:
            gain = -(self.hero_weight + self.synergy[:, d].sum(axis=1)) + self.matchup[r, :].sum(
                axis=0
            )
        result: FloatArray = base + gain
        return result

    def parameter_vector(self) -> FloatArray:
        """(w, upper triangle of S, upper triangle of M): the pairwise model's coefficients."""
        upper = np.triu_indices(self.hero_slots, 1)
        return np.concatenate([self.hero_weight, self.synergy[upper], self.matchup[upper]])


def combine(
    parts: Sequence[tuple[float, DraftModel]],
    bias: float = 0.0,
    calibration: CalibrationMap | None = None,
) -> DraftModel:
    """sum_k weight_k * part_k (+ bias): a weighted sum of decomposed logits is decomposed too."""
    first = parts[0][1]
    total_bias = bias + sum(weight * part.bias for weight, part in parts)
    hero_weight = sum(
        (weight * part.hero_weight for weight, part in parts), np.zeros_like(first.hero_weight)
    )
    synergy = sum((weight * part.synergy for weight, part in parts), np.zeros_like(first.synergy))
    matchup = sum((weight * part.matchup for weight, part in parts), np.zeros_like(first.matchup))
    return DraftModel.build(total_bias, hero_weight, synergy, matchup, calibration)
