"""How well predicted probabilities matched outcomes: log-loss, accuracy, ROC AUC, ECE, Brier."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from services.model.winmodel.data import BoolArray, FloatArray

ECE_BINS = 10
PROBABILITY_FLOOR = 1e-15


@dataclass(frozen=True)
class Quality:
    """How well a win model's probabilities predicted outcomes, and on what.

    `evaluated_on` and `evaluation_matches` say which held-out matches the figures come from;
    the served model's quality carries them, a bench's own table does not need them.
    """

    log_loss: float
    accuracy: float
    roc_auc: float
    ece: float
    brier: float
    evaluated_on: str = ""
    evaluation_matches: int = 0


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
