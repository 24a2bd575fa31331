"""The MAP logistic regression every fitted win model and calibration shares, and the grid search
over its L2 precisions."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import optimize, special
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from services.model.winmodel.data import BoolArray, Design, FloatArray

# Log-spaced grid of L2 precisions (prior precision = 1 / prior variance of a logit weight).
PRECISION_GRID: tuple[float, ...] = tuple(float(10.0 ** (e / 2)) for e in range(0, 12))


def fit_logistic(
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


def line_search_grid(
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
