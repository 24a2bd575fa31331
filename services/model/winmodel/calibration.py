"""Monotone maps from a win model's logit to a calibrated probability (Platt and isotonic)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import special

from services.model.winmodel.data import BoolArray, FloatArray
from services.model.winmodel.fitting import fit_logistic

# Knots of a Platt map stored as a piecewise linear curve: linear interpolation of the sigmoid on
# a 0.05 grid is off by less than 1e-4 in probability, and the served map stays one np.interp.
CALIBRATION_GRID: FloatArray = np.linspace(-8.0, 8.0, 321)


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
    coefficients = fit_logistic(design, outcomes, np.zeros(1), lower_bounds=np.zeros(1))
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
