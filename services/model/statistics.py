"""Hero statistics of one patch and skill bracket: base win rates, matchups and synergies.

Pure numpy/scipy over counts that the warehouse aggregated (games and wins per hero and per hero
pair). Every matrix is dense and indexed by Valve hero id (row a, column b), so a suggestion is a
handful of vectorised lookups. The definitions are the ones documented on Matchup and Synergy in
proto/counterpick/model/v1/model_service.proto:

    matchup  E = p_a - p_b + 0.5        synergy  E = p_a + p_b - 0.5      (clamped to [0.01, 0.99])
    WR = (wins + k * E) / (games + k)   score = WR - E   log-odds score = logit(WR) - logit(E)

k is fitted per patch, bracket and relation by maximising the beta-binomial marginal likelihood of
every pair's (wins, games) with prior mean E: the data decide how much a small sample is trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from services.common.dota import SkillBracket

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

EXPECTED_BOUNDS = (0.01, 0.99)
CONFIDENCE_LEVEL = 0.95
# Bounds of the fitted prior weight, in pseudo-games. The upper bound is reached when the pairs
# show no spread beyond binomial noise: then every pair is (almost) its expectation.
PRIOR_WEIGHT_BOUNDS = (1.0, 100_000.0)


class Relation(StrEnum):
    """How two heroes of a pair relate in a match."""

    VERSUS = "vs"  # opposite teams
    WITH = "with"  # same team


# The shared vocabulary's bracket, under the name the model's modules still use.
Bracket = SkillBracket


@dataclass(frozen=True)
class PairTable:
    """One relation's statistics for every ordered pair (a, b): arrays of shape (H, H)."""

    relation: Relation
    games: IntArray
    wins: IntArray
    expected: FloatArray
    shrunk: FloatArray
    score: FloatArray  # shrunk - expected, win-rate points
    log_odds: FloatArray
    lower: FloatArray  # credible interval of score
    upper: FloatArray
    prior_weight: float


@dataclass(frozen=True)
class BracketStatistics:
    """Everything known about the heroes of one patch and bracket."""

    patch: str
    bracket: Bracket
    matches: int
    hero_games: IntArray  # (H,)
    hero_wins: IntArray
    base_rate: FloatArray  # wins / games; 0.5 where a hero has no games
    matchups: PairTable
    synergies: PairTable

    @property
    def hero_slots(self) -> int:
        """H: one more than the highest hero id the arrays can hold."""
        return int(self.hero_games.shape[0])


def logit(p: FloatArray) -> FloatArray:
    """Natural log-odds."""
    result: FloatArray = np.log(p) - np.log1p(-p)
    return result


def fit_prior_weight(wins: FloatArray, games: FloatArray, expected: FloatArray) -> float:
    """The k maximising the beta-binomial marginal likelihood of (wins, games) with means E.

    Only pairs with games contribute. With no spread beyond binomial noise the likelihood keeps
    rising with k and the upper bound is returned.
    """
    mask = games > 0
    if not mask.any():
        return PRIOR_WEIGHT_BOUNDS[1]
    w, n, e = wins[mask], games[mask], expected[mask]

    def negative_log_likelihood(log_k: float) -> float:
        k = float(np.exp(log_k))
        alpha, beta = k * e, k * (1.0 - e)
        return -float(np.sum(special.betaln(w + alpha, n - w + beta) - special.betaln(alpha, beta)))

    low, high = np.log(PRIOR_WEIGHT_BOUNDS[0]), np.log(PRIOR_WEIGHT_BOUNDS[1])
    result = optimize.minimize_scalar(
        negative_log_likelihood, bounds=(low, high), method="bounded", options={"xatol": 1e-3}
    )
    return float(np.exp(result.x))


def pair_table(
    relation: Relation,
    games: IntArray,
    wins: IntArray,
    base_rate: FloatArray,
    prior_weight: float | None = None,
) -> PairTable:
    """Shrunk scores and intervals of every pair, from raw counts and base win rates."""
    p_a = base_rate[:, None]
    p_b = base_rate[None, :]
    raw_expected = p_a - p_b + 0.5 if relation is Relation.VERSUS else p_a + p_b - 0.5
    expected = np.clip(raw_expected, *EXPECTED_BOUNDS)
    games_f, wins_f = games.astype(np.float64), wins.astype(np.float64)
    k = prior_weight if prior_weight is not None else fit_prior_weight(wins_f, games_f, expected)
    alpha = wins_f + k * expected
    beta = games_f - wins_f + k * (1.0 - expected)
    shrunk = alpha / (alpha + beta)
    tail = (1.0 - CONFIDENCE_LEVEL) / 2.0
    lower = special.betaincinv(alpha, beta, tail) - expected
    upper = special.betaincinv(alpha, beta, 1.0 - tail) - expected
    return PairTable(
        relation=relation,
        games=games,
        wins=wins,
        expected=expected,
        shrunk=shrunk,
        score=shrunk - expected,
        log_odds=logit(shrunk) - logit(expected),
        lower=lower,
        upper=upper,
        prior_weight=k,
    )


@dataclass
class Counts:
    """Raw counts of one patch and bracket, accumulated from warehouse rows."""

    hero_games: IntArray
    hero_wins: IntArray
    versus_games: IntArray  # [a, b]: a against b
    versus_wins: IntArray  # matches a's team won
    with_games: IntArray  # symmetric
    with_wins: IntArray
    matches: int = 0

    @classmethod
    def empty(cls, hero_slots: int) -> Counts:
        """All zero, for heroes 0..hero_slots-1."""

        def square() -> IntArray:
            return np.zeros((hero_slots, hero_slots), dtype=np.int64)

        return cls(
            hero_games=np.zeros(hero_slots, dtype=np.int64),
            hero_wins=np.zeros(hero_slots, dtype=np.int64),
            versus_games=square(),
            versus_wins=square(),
            with_games=square(),
            with_wins=square(),
        )

    def add_heroes(self, hero_ids: IntArray, games: IntArray, wins: IntArray) -> None:
        """Add per-hero rows."""
        np.add.at(self.hero_games, hero_ids, games)
        np.add.at(self.hero_wins, hero_ids, wins)

    def add_versus(
        self, radiant: IntArray, dire: IntArray, games: IntArray, wins: IntArray
    ) -> None:
        """Add rows of (Radiant hero, Dire hero, games, Radiant wins), mirrored for Dire."""
        np.add.at(self.versus_games, (radiant, dire), games)
        np.add.at(self.versus_wins, (radiant, dire), wins)
        np.add.at(self.versus_games, (dire, radiant), games)
        np.add.at(self.versus_wins, (dire, radiant), games - wins)

    def add_with(self, first: IntArray, second: IntArray, games: IntArray, wins: IntArray) -> None:
        """Add rows of same-team pairs (first < second), mirrored."""
        np.add.at(self.with_games, (first, second), games)
        np.add.at(self.with_wins, (first, second), wins)
        np.add.at(self.with_games, (second, first), games)
        np.add.at(self.with_wins, (second, first), wins)

    def merge(self, other: Counts) -> None:
        """Add another set of counts (an incremental update, or a bracket into ALL)."""
        self.hero_games += other.hero_games
        self.hero_wins += other.hero_wins
        self.versus_games += other.versus_games
        self.versus_wins += other.versus_wins
        self.with_games += other.with_games
        self.with_wins += other.with_wins
        self.matches += other.matches

    def copy(self) -> Counts:
        """An independent copy."""
        return Counts(
            self.hero_games.copy(),
            self.hero_wins.copy(),
            self.versus_games.copy(),
            self.versus_wins.copy(),
            self.with_games.copy(),
            self.with_wins.copy(),
            self.matches,
        )


def base_rates(games: IntArray, wins: IntArray) -> FloatArray:
    """Unshrunk wins / games per hero; 0.5 for a hero without games (no evidence either way)."""
    rates: FloatArray = np.full(games.shape, 0.5)
    played = games > 0
    rates[played] = wins[played] / games[played]
    return rates


def compute_statistics(patch: str, bracket: Bracket, counts: Counts) -> BracketStatistics:
    """Base rates, matchups and synergies of one patch and bracket."""
    rates = base_rates(counts.hero_games, counts.hero_wins)
    return BracketStatistics(
        patch=patch,
        bracket=bracket,
        matches=counts.matches,
        hero_games=counts.hero_games,
        hero_wins=counts.hero_wins,
        base_rate=rates,
        matchups=pair_table(Relation.VERSUS, counts.versus_games, counts.versus_wins, rates),
        synergies=pair_table(Relation.WITH, counts.with_games, counts.with_wins, rates),
    )
