"""The decomposable win models: one-hot and pairwise logistic regression, the additive statistics
model, and the calibrated blend of them that the service serves.

Every model shares one interface, `fit(drafts)` then `predict(radiant, dire)`, where `radiant`
and `dire` are (n, 5) arrays of Valve hero ids and 0 marks an empty slot of a partial draft; a
decomposable one also gives its fitted parameters as the served `DraftModel` (`decompose()`).

Everything a model learns comes from the drafts handed to `fit`: hyperparameters are chosen on
the newest time block of those drafts and calibration on their out-of-fold predictions, so a
caller that holds test matches out of `fit` can evaluate honestly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy import special

from services.model.statistics import Counts, fit_prior_weight
from services.model.winmodel.data import (
    EMPTY_SLOT,
    Design,
    Drafts,
    FloatArray,
    newest_block_split,
)
from services.model.winmodel.designs import (
    hero_design,
    matchup_design,
    pair_index,
    synergy_design,
)
from services.model.winmodel.fitting import fit_logistic, line_search_grid
from services.model.winmodel.metrics import log_loss
from services.model.winmodel.served import DraftModel, combine, pair_sums


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

    def decompose(self) -> DraftModel:
        """The fitted model as served parameters."""
        ...

    def fixed_copy(self) -> Self:
        """An unfitted copy that reuses the hyperparameters chosen by the last fit (so
        out-of-fold refits do not search again)."""
        ...


class _DecomposedPredictions:
    """predict() and logits() through decompose(), shared by the decomposable models."""

    def decompose(self) -> DraftModel:
        raise NotImplementedError

    def logits(self, radiant: npt.ArrayLike, dire: npt.ArrayLike) -> FloatArray:
        """Uncalibrated logits of (n, 5) drafts."""
        return self.decompose().logits(radiant, dire)

    def predict(self, radiant: npt.ArrayLike, dire: npt.ArrayLike) -> FloatArray:
        """P(Radiant wins) of (n, 5) drafts."""
        return self.decompose().predict(radiant, dire)


def _validation_loss(model: DraftModel, validation: Drafts) -> float:
    """Log-loss of the uncalibrated logits (exact sigmoid, not the interpolated map)."""
    logits = model.logits(validation.radiant, validation.dire)
    return log_loss(special.expit(logits), validation.radiant_win)


def _require(model: DraftModel | None, name: str) -> DraftModel:
    if model is None:
        raise RuntimeError(f"{name} is not fitted")
    return model


@dataclass
class OneHotLogistic(_DecomposedPredictions):
    """The baseline: L2 logistic regression on +1 Radiant / -1 Dire hero indicators.

    `precision` None chooses it on the newest time block of the training drafts.
    """

    precision: float | None = None
    name: str = "one-hot LR"
    model: DraftModel | None = field(default=None, repr=False)

    def fit(self, drafts: Drafts) -> None:
        """Choose the L2 precision (unless fixed), then fit on every match."""
        if self.precision is None:
            older, newest = newest_block_split(drafts)
            older_design = hero_design(older)

            def validation_loss(point: tuple[float, ...]) -> float:
                coefficients = fit_logistic(
                    older_design, older.radiant_win, np.full(drafts.hero_slots, point[0])
                )
                return _validation_loss(self._decomposed(coefficients), newest)

            self.precision = line_search_grid(validation_loss, (30.0,))[0]
        coefficients = fit_logistic(
            hero_design(drafts), drafts.radiant_win, np.full(drafts.hero_slots, self.precision)
        )
        self.model = self._decomposed(coefficients)

    @staticmethod
    def _decomposed(coefficients: FloatArray) -> DraftModel:
        # One coefficient per hero slot, then the intercept.
        hero_slots = coefficients.size - 1
        zeros = np.zeros((hero_slots, hero_slots))
        return DraftModel.build(coefficients[-1], coefficients[:hero_slots], zeros, zeros)

    def decompose(self) -> DraftModel:
        return _require(self.model, self.name)

    def fixed_copy(self) -> Self:
        return type(self)(precision=self.precision, name=self.name)


@dataclass(frozen=True)
class AdditiveTerms:
    """Empirical-Bayes shrunk hero, ally-pair and enemy-pair win rates on the log-odds scale: the
    three kinds of term the additive model weighs.

    The games and wins are the statistics' own `Counts`; what differs from the served statistics
    (services/model/statistics.py) is the expectation pairs are shrunk toward: it uses each
    hero's *shrunk* rate, and k is fitted over unordered pairs only. Each rate is shrunk toward
    its expectation with a beta prior whose weight k (pseudo-games) maximises the beta-binomial
    marginal likelihood of the observed counts: the data decide how far a small sample is
    trusted. Expectations: ally pair p_a + p_b - 0.5, enemy pair p_a - p_b + 0.5 (clamped to
    [0.01, 0.99]).
    """

    strength: FloatArray  # (H,) logit of the shrunk hero win rate
    synergy: FloatArray  # (H, H) logit(shrunk pair rate) - logit(expected)
    matchup: FloatArray  # (H, H) antisymmetric
    prior_weights: tuple[float, float, float]  # k of heroes, ally pairs, enemy pairs

    @classmethod
    def count(
        cls, drafts: Drafts, prior_weights: tuple[float, float, float] | None = None
    ) -> AdditiveTerms:
        """Count and shrink; `prior_weights` reuses the k of another (larger) sample."""
        counts = Counts.from_drafts(
            drafts.radiant, drafts.dire, drafts.radiant_win, drafts.hero_slots
        )
        hero_games = counts.hero_games.astype(np.float64)
        hero_wins = counts.hero_wins.astype(np.float64)
        hero_games[EMPTY_SLOT] = hero_wins[EMPTY_SLOT] = 0.0
        half = np.full(drafts.hero_slots, 0.5)
        hero_k = (
            fit_prior_weight(hero_wins, hero_games, half)
            if prior_weights is None
            else prior_weights[0]
        )
        rate = (hero_wins + hero_k * 0.5) / (hero_games + hero_k)

        ally_games = counts.with_games.astype(np.float64)
        ally_wins = counts.with_wins.astype(np.float64)
        enemy_games = counts.versus_games.astype(np.float64)
        enemy_wins = counts.versus_wins.astype(np.float64)
        for matrix in (ally_games, ally_wins, enemy_games, enemy_wins):
            matrix[EMPTY_SLOT, :] = matrix[:, EMPTY_SLOT] = 0.0

        ally_expected = np.clip(rate[:, None] + rate[None, :] - 0.5, 0.01, 0.99)
        enemy_expected = np.clip(rate[:, None] - rate[None, :] + 0.5, 0.01, 0.99)
        upper = pair_index(drafts.hero_slots).upper
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
        parts = DraftModel.build(
            0.0, self.strength, np.zeros_like(self.synergy), np.zeros_like(self.matchup)
        )
        hero = parts.logits(drafts.radiant, drafts.dire)
        r = drafts.radiant.astype(np.intp)
        d = drafts.dire.astype(np.intp)
        ally = pair_sums(self.synergy, r) - pair_sums(self.synergy, d)
        enemy = self.matchup[r[:, :, None], d[:, None, :]].sum(axis=(1, 2))
        return np.column_stack([hero, ally, enemy])


def out_of_fold_statistics_features(drafts: Drafts) -> FloatArray:
    """Additive features of every match from statistics that never saw it (time-block folds).

    In-sample features would let each match's own result leak into its pair statistics and
    inflate the fitted weights. The prior weights k are fitted once on all the drafts and reused
    in every fold: k is noisy on a fold and a fold-specific k changes the features' scale.
    """
    prior_weights = AdditiveTerms.count(drafts).prior_weights
    features = np.zeros((len(drafts), 3))
    for block in drafts.time_blocks():
        statistics = AdditiveTerms.count(drafts.without(block), prior_weights)
        features[block] = statistics.features(drafts.take(block))
    return features


@dataclass
class AdditiveModel(_DecomposedPredictions):
    """The statistics as a fitted model: shrunk hero strength + summed ally synergies + summed
    cross-team matchups, combined by four weights (bias and one per kind of term) fitted by
    logistic regression on out-of-fold features."""

    name: str = "additive"
    weights: FloatArray | None = field(default=None, repr=False)  # hero, ally, enemy, bias
    statistics: AdditiveTerms | None = field(default=None, repr=False)

    def fit(self, drafts: Drafts) -> None:
        """Weights from out-of-fold features, statistics from every match."""
        features = out_of_fold_statistics_features(drafts)
        # A weak ridge on the standardised scale (one pseudo-match per feature): when k is at its
        # upper bound a feature is nearly constant and its weight would otherwise run away.
        scale = features.std(axis=0) + 1e-12
        coefficients = fit_logistic(sp.csr_matrix(features / scale), drafts.radiant_win, np.ones(3))
        self.weights = np.append(coefficients[:3] / scale, coefficients[3])
        self.statistics = AdditiveTerms.count(drafts)

    def decompose(self) -> DraftModel:
        if self.weights is None or self.statistics is None:
            raise RuntimeError(f"{self.name} is not fitted")
        hero, ally, enemy, bias = (float(v) for v in self.weights)
        s = self.statistics
        return DraftModel.build(bias, hero * s.strength, ally * s.synergy, enemy * s.matchup)

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
    prior: DraftModel | None = field(default=None, repr=False)
    name: str = "pairwise LR"
    model: DraftModel | None = field(default=None, repr=False)

    @staticmethod
    def design(drafts: Drafts) -> Design:
        """[hero | same-team pair | cross-team pair] indicator columns."""
        return sp.csr_matrix(
            sp.hstack([hero_design(drafts), synergy_design(drafts), matchup_design(drafts)])
        )

    @staticmethod
    def _precision_vector(hero_slots: int, point: tuple[float, float, float]) -> FloatArray:
        pairs = pair_index(hero_slots).count
        return np.concatenate(
            [
                np.full(hero_slots, point[0]),
                np.full(pairs, point[1]),
                np.full(pairs, point[2]),
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
                coefficients = fit_logistic(
                    older_design,
                    older.radiant_win,
                    self._precision_vector(drafts.hero_slots, (hero, ally, enemy)),
                    prior_mean=self._prior_mean(),
                    start=warm.get("last"),
                )
                warm["last"] = coefficients
                return _validation_loss(self._decomposed(coefficients, drafts.hero_slots), newest)

            start = tuple(
                value if value is not None else default
                for value, default in zip(chosen, (30.0, 1000.0, 300.0), strict=True)
            )
            best = line_search_grid(validation_loss, start)
            self.hero_precision, self.synergy_precision, self.matchup_precision = best
        point = (
            float(self.hero_precision or 0.0),
            float(self.synergy_precision or 0.0),
            float(self.matchup_precision or 0.0),
        )
        coefficients = fit_logistic(
            self.design(drafts),
            drafts.radiant_win,
            self._precision_vector(drafts.hero_slots, point),
            prior_mean=self._prior_mean(),
        )
        self.model = self._decomposed(coefficients, drafts.hero_slots)

    @staticmethod
    def _decomposed(coefficients: FloatArray, hero_slots: int) -> DraftModel:
        pairs = pair_index(hero_slots)
        hero = coefficients[:hero_slots]
        ally_upper = coefficients[hero_slots : hero_slots + pairs.count]
        enemy_upper = coefficients[hero_slots + pairs.count : hero_slots + 2 * pairs.count]
        synergy = np.zeros((hero_slots, hero_slots))
        matchup = np.zeros((hero_slots, hero_slots))
        synergy[pairs.upper] = ally_upper
        matchup[pairs.upper] = enemy_upper
        # build() halves (S + S.T) and (M - M.T); doubling first keeps the fitted values.
        return DraftModel.build(coefficients[-1], hero, 2.0 * synergy, 2.0 * matchup)

    def decompose(self) -> DraftModel:
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
    previous_patch: DraftModel,
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
        coefficients = fit_logistic(
            sp.csr_matrix(logits),
            drafts.radiant_win,
            np.zeros(len(self.components)),
            lower_bounds=np.zeros(len(self.components)),
        )
        self.out_of_fold_logits = logits
        self.blend_weights = coefficients[:-1]
        self.intercept = float(coefficients[-1])

    def decompose(self) -> DraftModel:
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
