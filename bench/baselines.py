"""Win models the quality bench compares the served blend with, never served themselves: the
majority floor and gradient-boosted trees (xgboost, a dev dependency), plus a timing helper."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import xgboost as xgb

from services.model.winmodel.data import Design, Drafts, FloatArray, newest_block_split
from services.model.winmodel.designs import hero_design
from services.model.winmodel.models import AdditiveTerms, WinModel, out_of_fold_statistics_features


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
    statistics: AdditiveTerms | None = field(default=None, repr=False)
    hero_slots: int = 0  # of the fitted drafts: predict() builds its design that wide

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
        self.hero_slots = drafts.hero_slots
        older, newest = newest_block_split(drafts)
        older_features = newest_features = all_features = None
        if self.with_additive_features:
            older_features = out_of_fold_statistics_features(older)
            newest_features = AdditiveTerms.count(older).features(newest)
            all_features = out_of_fold_statistics_features(drafts)
            self.statistics = AdditiveTerms.count(drafts)
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
        if self.booster is None:
            raise RuntimeError(f"{self.name} is not fitted")
        r = np.atleast_2d(np.asarray(radiant, dtype=np.int16))
        d = np.atleast_2d(np.asarray(dire, dtype=np.int16))
        drafts = Drafts(
            r,
            d,
            np.zeros(r.shape[0], dtype=bool),
            np.zeros(r.shape[0], dtype=np.int64),
            self.hero_slots,
        )
        features = None if self.statistics is None else self.statistics.features(drafts)
        result: FloatArray = self.booster.predict(xgb.DMatrix(self._matrix(drafts, features)))
        return result.astype(np.float64)


def timed_fit(model: WinModel, drafts: Drafts) -> float:
    """Fit and return the wall-clock seconds it took."""
    started = time.perf_counter()
    model.fit(drafts)
    return time.perf_counter() - started
