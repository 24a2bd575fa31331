"""Hero statistics of one patch and skill bracket: base win rates, matchups and synergies.

Pure numpy/scipy over counts that the warehouse aggregated (games and wins per hero and per hero
pair). Every matrix is dense and indexed by Valve hero id (row a, column b), so a suggestion is a
handful of vectorised lookups. The definitions are the ones documented on Matchup and Synergy in
proto/counterpick/model/v1/model_service.proto:

    matchup  E = p_a - p_b + 0.5        synergy  E = p_a + p_b - 0.5      (clamped to [0.01, 0.99])
    WR = (wins + k * E) / (games + k)   score = WR - E   log-odds score = logit(WR) - logit(E)

k is fitted per patch, bracket and relation by maximising the beta-binomial marginal likelihood of
every pair's (wins, games) with prior mean E: the data decide how much a small sample is trusted.

A skill bracket's statistics are shrunk toward ALL of the same patch (`shrink_toward_all`): each
bracket hero rate toward the ALL rate, each bracket pair toward its bracket expectation plus the
ALL pair's score, with a strength per bracket and statistic family fitted by the method of moments
(between-bracket variance beyond sampling noise). Where the brackets do not differ the bracket
statistics are ALL's; where they do, the bracket's own counts pull as far as the data justify.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from services.common.dota import TEAM_SIZE, SkillBracket
from services.model.winmodel.served import DraftModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

EXPECTED_BOUNDS = (0.01, 0.99)
CONFIDENCE_LEVEL = 0.95
# Index pairs of the 10 same-team pairs and the 25 cross-team pairs of a 5v5 draft.
_TEAM_I, _TEAM_J = np.triu_indices(TEAM_SIZE, k=1)
_CROSS_I, _CROSS_J = (axis.ravel() for axis in np.indices((TEAM_SIZE, TEAM_SIZE)))
# Bounds of the fitted prior weight, in pseudo-games. The upper bound is reached when the pairs
# show no spread beyond binomial noise: then every pair is (almost) its expectation.
PRIOR_WEIGHT_BOUNDS = (1.0, 100_000.0)


class Relation(StrEnum):
    """How two heroes of a pair relate in a match."""

    VERSUS = "vs"  # opposite teams
    WITH = "with"  # same team


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
    bracket: SkillBracket
    matches: int
    hero_games: IntArray  # (H,)
    hero_wins: IntArray
    base_rate: FloatArray  # wins / games; 0.5 where a hero has no games (shrunk in a bracket)
    matchups: PairTable
    synergies: PairTable
    # Set on a bracket's statistics once shrunk toward ALL (None for ALL and unshrunk ones).
    shrinkage: BracketShrinkage | None = None
    # Bracket-adjusted win models, one per served model: derived once, then reused per request.
    _models: dict[int, tuple[DraftModel, DraftModel]] = field(
        default_factory=dict, compare=False, repr=False
    )

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

    @classmethod
    def from_drafts(
        cls,
        radiant: npt.NDArray[np.integer],
        dire: npt.NDArray[np.integer],
        radiant_win: BoolArray,
        hero_slots: int,
    ) -> Counts:
        """Counts of (n, 5) drafts counted in numpy, with the warehouse's orientation (versus[a, b]
        = games of a against b, wins of a's team; with symmetric).

        bincount over flat pair indices, not np.add.at, which is ~20x slower. A 0 (empty slot of
        a partial draft) is counted like a hero in row and column 0; callers that care zero them.
        """
        h = hero_slots
        radiant_ids: IntArray = radiant.astype(np.int64)
        dire_ids: IntArray = dire.astype(np.int64)
        win: IntArray = radiant_win.astype(np.int64)
        counts = cls.empty(h)
        counts.matches = int(radiant_ids.shape[0])

        def tally(index: IntArray, weight: IntArray | None, size: int) -> IntArray:
            result: IntArray = np.bincount(index.ravel(), weights=weight, minlength=size).astype(
                np.int64
            )
            return result

        def per_row(values: IntArray, columns: int) -> IntArray:
            repeated: IntArray = np.repeat(values, columns)
            return repeated

        counts.hero_games = tally(radiant_ids, None, h) + tally(dire_ids, None, h)
        counts.hero_wins = tally(radiant_ids, per_row(win, TEAM_SIZE), h) + tally(
            dire_ids, per_row(1 - win, TEAM_SIZE), h
        )
        vs = radiant_ids[:, _CROSS_I] * h + dire_ids[:, _CROSS_J]
        vs_games = tally(vs, None, h * h).reshape(h, h)
        vs_wins = tally(vs, per_row(win, _CROSS_I.size), h * h).reshape(h, h)
        counts.versus_games = vs_games + vs_games.T
        counts.versus_wins = vs_wins + (vs_games - vs_wins).T
        # Same-team pairs in slot order, then mirrored: the sum is symmetric whatever the order.
        rw = radiant_ids[:, _TEAM_I] * h + radiant_ids[:, _TEAM_J]
        dw = dire_ids[:, _TEAM_I] * h + dire_ids[:, _TEAM_J]
        with_games = tally(rw, None, h * h) + tally(dw, None, h * h)
        with_wins = tally(rw, per_row(win, _TEAM_I.size), h * h) + tally(
            dw, per_row(1 - win, _TEAM_I.size), h * h
        )
        counts.with_games = with_games.reshape(h, h) + with_games.reshape(h, h).T
        counts.with_wins = with_wins.reshape(h, h) + with_wins.reshape(h, h).T
        return counts

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


def compute_statistics(patch: str, bracket: SkillBracket, counts: Counts) -> BracketStatistics:
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


def win_rate(wins: int, games: int) -> float:
    """wins / games, 0 without games."""
    return wins / games if games else 0.0


@dataclass(frozen=True)
class HeroRecord:
    """One hero's raw record in a patch and bracket, with a 95 % interval of its win rate."""

    games: int
    wins: int
    win_rate: float
    interval: tuple[float, float]


def hero_record(statistics: BracketStatistics, hero: int) -> HeroRecord:
    """The hero's games, wins and win rate; the interval is the equal-tailed 95 % interval of
    the Beta(wins + 1, losses + 1) posterior (a uniform prior: the raw rate, not the shrunk one)."""
    played = int(statistics.hero_games[hero])
    won = int(statistics.hero_wins[hero])
    lower, upper = special.betaincinv(won + 1, played - won + 1, [0.025, 0.975])
    return HeroRecord(played, won, win_rate(won, played), (float(lower), float(upper)))


@dataclass(frozen=True)
class PairRecord:
    """One pair (hero, other) of a relation, as the API reports it."""

    other: int
    games: int
    wins: int
    win_rate: float
    expected_win_rate: float
    shrunk_win_rate: float
    prior_weight: float
    shrinkage: float  # k / (games + k): how far the shrunk rate sits from the observed one
    score: float
    log_odds: float
    interval: tuple[float, float]  # of the score


def pair_record(table: PairTable, hero: int, other: int) -> PairRecord:
    """The statistics of the pair (hero, other)."""
    games = int(table.games[hero, other])
    wins = int(table.wins[hero, other])
    k = table.prior_weight
    return PairRecord(
        other=other,
        games=games,
        wins=wins,
        win_rate=win_rate(wins, games),
        expected_win_rate=float(table.expected[hero, other]),
        shrunk_win_rate=float(table.shrunk[hero, other]),
        prior_weight=k,
        shrinkage=float(k / (table.games[hero, other] + k)),
        score=float(table.score[hero, other]),
        log_odds=float(table.log_odds[hero, other]),
        interval=(float(table.lower[hero, other]), float(table.upper[hero, other])),
    )


class PairOrder(StrEnum):
    """How a hero's pairs are listed; ties are broken by the other hero's id."""

    SCORE_DESC = "score_desc"
    SCORE_ASC = "score_asc"
    GAMES_DESC = "games_desc"
    HERO_ID_ASC = "hero_id_asc"


def pair_partners(
    table: PairTable, hero: int, heroes: Iterable[int], min_games: int, order: PairOrder
) -> list[int]:
    """The other heroes of `heroes` that met `hero` in at least `min_games` games, in `order`."""
    others = [other for other in heroes if other != hero and table.games[hero, other] >= min_games]
    score = table.score[hero]
    games = table.games[hero]
    if order is PairOrder.SCORE_ASC:
        return sorted(others, key=lambda other: (score[other], other))
    if order is PairOrder.GAMES_DESC:
        return sorted(others, key=lambda other: (-games[other], other))
    if order is PairOrder.HERO_ID_ASC:
        return sorted(others)
    return sorted(others, key=lambda other: (-score[other], other))


# Strength (pseudo-games) that stands for "all the way to ALL": the bracket's own counts weigh
# nothing next to it. Finite, so every derived figure (shrinkage k / (games + k)) stays a number.
FULL_POOLING = 1e12
# Bracket cells (heroes or pairs) with fewer games are left out of the strength fit: their
# deviations are all noise and only widen the estimate's spread.
MIN_FIT_GAMES = 5
# The between-bracket variance is taken as zero unless the deviations' chi-square exceeds its
# no-difference mean by this many standard deviations: a pre-test that keeps pure noise from
# being served as a bracket effect (the estimate leans to ALL, never to noise).
SIGNIFICANCE_SDS = 2.0


@dataclass(frozen=True)
class BracketShrinkage:
    """How far a bracket's statistics were pulled toward ALL of the same patch, per statistic
    family: the prior strength k in pseudo-games of the cells that differ from ALL, and the share
    of cells that do (0 with k = FULL_POOLING: the bracket is ALL's)."""

    hero: float
    versus: float
    with_: float
    hero_share: float = 0.0
    versus_share: float = 0.0
    with_share: float = 0.0

    @property
    def pooled(self) -> bool:
        """True when every family sits all the way at ALL (the brackets showed no difference)."""
        return max(self.hero_share, self.versus_share, self.with_share) == 0.0


@dataclass(frozen=True)
class BracketPrior:
    """One family's fitted prior of bracket differences and each cell's resulting strength."""

    strength: float  # k of the differing cells (FULL_POOLING when none differ)
    share: float  # prior probability that a cell differs from ALL at all
    cell_strength: FloatArray  # per cell k_i: shrunk = (wins + k_i centre) / (games + k_i)


def fit_bracket_prior(
    wins: FloatArray,
    games: FloatArray,
    centre: FloatArray,
    total_games: FloatArray,
    centre_weight: FloatArray,
    *,
    typical: FloatArray | None = None,
    fit: BoolArray | None = None,
) -> BracketPrior:
    """Empirical Bayes prior of one bracket's deviations from ALL, cell by cell (heroes or pairs).

    Each cell's deviation d = wins / games - centre has, when the bracket does not differ, the
    sampling variance s^2 = v (1 - l f)^2 / n + v l^2 (1 - f)^2 / (N - n), with v = c (1 - c)
    for c = `typical` (default the centre), f = n / N (the bracket's share of ALL's games: the
    centre contains the cell itself) and l = `centre_weight` (1 for a raw ALL rate). A real
    difference of variance tau^2 adds (1 - l f)^2 tau^2.

    First a moment test: unless the deviations' chi-square sum(d^2 / s^2) exceeds its
    no-difference mean by SIGNIFICANCE_SDS standard deviations, nothing differs (k = FULL_POOLING).
    Otherwise a spike-and-slab prior is fitted by maximum marginal likelihood: a share pi of the
    cells differs with variance tau^2, the rest not at all. Each cell then shrinks by its
    posterior odds of differing: r_i n / (n + k) of the way to its own rate, k = v / tau^2. One
    normal prior for all cells would let a few large differences (a hero that stomps Heralds)
    widen it for every other hero; the spike keeps the others at ALL. `fit` selects the cells
    the prior is fitted on (e.g. one triangle of a symmetric pair matrix).
    """
    size = games.shape
    full = np.full(size, FULL_POOLING)
    none = BracketPrior(FULL_POOLING, 0.0, full)
    total = np.maximum(total_games, games)
    usable = (games > 0) & (total > 0)
    t = centre if typical is None else typical
    v = t * (1.0 - t)
    f = np.divide(games, total, out=np.zeros(size), where=usable)
    attenuation = (1.0 - centre_weight * f) ** 2
    noise = v * (
        np.divide(attenuation, games, out=np.zeros(size), where=usable)
        + np.divide(centre_weight**2 * (1.0 - f), total, out=np.zeros(size), where=usable)
    )
    deviation = np.divide(wins, games, out=np.array(centre, copy=True), where=usable) - centre
    chosen = usable & (games >= MIN_FIT_GAMES) & (noise > 0)
    if fit is not None:
        chosen &= fit
    if not chosen.any():
        return none
    d2, s2, a = deviation[chosen] ** 2, noise[chosen], attenuation[chosen]
    cells = int(d2.size)
    if float(np.sum(d2 / s2)) <= cells + SIGNIFICANCE_SDS * math.sqrt(2.0 * cells):
        return none

    def negative_log_likelihood(parameters: FloatArray) -> float:
        share = special.expit(parameters[0])
        slab = s2 + a * np.exp(2.0 * parameters[1])
        log_slab = np.log(share) - 0.5 * (np.log(slab) + d2 / slab)
        log_spike = np.log1p(-share) - 0.5 * (np.log(s2) + d2 / s2)
        return -float(np.sum(np.logaddexp(log_slab, log_spike)))

    moment = float(np.sum((d2 - s2) / s2) / np.sum(a / s2))
    start = np.asarray([0.0, 0.5 * math.log(max(moment, 1e-6))])
    result = optimize.minimize(negative_log_likelihood, start, method="Nelder-Mead")
    share = float(special.expit(result.x[0]))
    tau_sq = float(np.exp(2.0 * result.x[1]))
    k = float(np.average(v[chosen], weights=1.0 / s2) / tau_sq)
    # Each cell's posterior probability of differing, from its own deviation.
    safe_noise = np.where(noise > 0, noise, 1.0)
    slab = safe_noise + attenuation * tau_sq
    log_slab = math.log(share) - 0.5 * (np.log(slab) + deviation**2 / slab)
    log_spike = math.log1p(-share) - 0.5 * (np.log(safe_noise) + deviation**2 / safe_noise)
    odds = np.where(usable & (noise > 0), special.expit(log_slab - log_spike), 0.0)
    # n / (n + k_i) = r n / (n + k)  <=>  k_i = (n + k) / r - n.
    cell = np.divide(games + k, odds, out=np.full(size, np.inf), where=odds > 0) - games
    return BracketPrior(k, share, np.minimum(cell, FULL_POOLING))


def _shrunk_pairs(
    relation: Relation,
    own: PairTable,
    overall: PairTable,
    base_rate: FloatArray,
) -> tuple[PairTable, BracketPrior]:
    """A bracket's pair table shrunk toward its expectation plus ALL's score of the pair."""
    p_a, p_b = base_rate[:, None], base_rate[None, :]
    raw_expected = p_a - p_b + 0.5 if relation is Relation.VERSUS else p_a + p_b - 0.5
    expected = np.clip(raw_expected, *EXPECTED_BOUNDS)
    centre = np.clip(expected + overall.score, *EXPECTED_BOUNDS)
    games = own.games.astype(np.float64)
    wins = own.wins.astype(np.float64)
    total = overall.games.astype(np.float64)
    # The prior is fitted against ALL's raw pair rate (weight 1): against its shrunk one, the
    # real pair effects ALL's prior pulls in would pass for bracket differences.
    raw_deviation = (
        np.divide(overall.wins, total, out=np.array(overall.expected, copy=True), where=total > 0)
        - overall.expected
    )
    raw_centre = np.clip(expected + raw_deviation, *EXPECTED_BOUNDS)
    upper = np.triu(np.ones(games.shape, dtype=bool), k=1)
    prior = fit_bracket_prior(
        wins, games, raw_centre, total, np.ones(games.shape), typical=centre, fit=upper
    )
    k = prior.cell_strength
    shrunk = (wins + k * centre) / (games + k)
    # The interval: the bracket's games plus the prior's, whose strength is at most what ALL
    # knows of the pair beyond the bracket (its other games and its own prior).
    prior_games = 1.0 / (1.0 / k + 1.0 / (np.maximum(total - games, 0.0) + overall.prior_weight))
    concentration = games + prior_games
    alpha, beta = concentration * shrunk, concentration * (1.0 - shrunk)
    tail = (1.0 - CONFIDENCE_LEVEL) / 2.0
    table = PairTable(
        relation=relation,
        games=own.games,
        wins=own.wins,
        expected=expected,
        shrunk=shrunk,
        score=shrunk - expected,
        log_odds=logit(shrunk) - logit(expected),
        lower=special.betaincinv(alpha, beta, tail) - expected,
        upper=special.betaincinv(alpha, beta, 1.0 - tail) - expected,
        prior_weight=prior.strength,
    )
    return table, prior


def shrink_toward_all(own: BracketStatistics, overall: BracketStatistics) -> BracketStatistics:
    """A bracket's statistics shrunk toward ALL of the same patch (empirical Bayes).

    Hero rates: (wins + k_i * p_ALL) / (games + k_i). Pairs: toward the bracket's expectation
    plus ALL's score of the pair. Each family's prior is fitted on this bracket's cells by
    `fit_bracket_prior`; raw games and wins are kept as they were counted.
    """
    games = own.hero_games.astype(np.float64)
    wins = own.hero_wins.astype(np.float64)
    total = overall.hero_games.astype(np.float64)
    hero = fit_bracket_prior(wins, games, overall.base_rate, total, np.ones_like(total))
    k = hero.cell_strength
    rates: FloatArray = (wins + k * overall.base_rate) / (games + k)
    matchups, versus = _shrunk_pairs(Relation.VERSUS, own.matchups, overall.matchups, rates)
    synergies, with_ = _shrunk_pairs(Relation.WITH, own.synergies, overall.synergies, rates)
    return replace(
        own,
        base_rate=rates,
        matchups=matchups,
        synergies=synergies,
        shrinkage=BracketShrinkage(
            hero.strength, versus.strength, with_.strength, hero.share, versus.share, with_.share
        ),
        _models={},
    )


def shrink_brackets(
    statistics: Mapping[SkillBracket, BracketStatistics],
) -> dict[SkillBracket, BracketStatistics]:
    """Every bracket of one patch shrunk toward its ALL (which is kept as it is)."""
    overall = statistics.get(SkillBracket.ALL)
    if overall is None:
        return dict(statistics)
    return {
        bracket: stats if bracket is SkillBracket.ALL else shrink_toward_all(stats, overall)
        for bracket, stats in statistics.items()
    }


def shrinkage_note(statistics: BracketStatistics) -> str:
    """What a user is told about a bracket's statistics, e.g. "herald_guardian: 812 matches,
    shrunk toward all brackets"."""
    shrinkage = statistics.shrinkage
    head = f"{statistics.bracket.value}: {statistics.matches} matches"
    if shrinkage is None:
        return head
    if shrinkage.pooled:
        return f"{head}, no difference from all brackets found; all brackets' statistics used"
    return f"{head}, shrunk toward all brackets"


def bracket_model(
    model: DraftModel, overall: BracketStatistics, own: BracketStatistics, *, pairs: bool = False
) -> DraftModel:
    """The served model moved to a bracket: each hero's weight plus the logit difference of its
    shrunk bracket rate from its ALL rate. With `pairs` the pairs' log-odds differences are added
    too; served without them (bench.quality measures both). Cached per (statistics, model)."""
    if own.bracket is SkillBracket.ALL or own.shrinkage is None:
        return model
    cached = None if pairs else own._models.get(id(model))
    if cached is not None and cached[0] is model:
        return cached[1]
    offset = logit(np.clip(own.base_rate, *EXPECTED_BOUNDS)) - logit(
        np.clip(overall.base_rate, *EXPECTED_BOUNDS)
    )
    offset[0] = 0.0
    slots = min(offset.size, model.hero_slots)
    weight = model.hero_weight.copy()
    weight[:slots] += offset[:slots]
    moved = replace(model, hero_weight=weight)
    if pairs:
        synergy = model.synergy.copy()
        matchup = model.matchup.copy()
        same = own.synergies.log_odds - overall.synergies.log_odds
        cross = own.matchups.log_odds - overall.matchups.log_odds
        np.fill_diagonal(same, 0.0)
        synergy[:slots, :slots] += same[:slots, :slots]
        matchup[:slots, :slots] += ((cross - cross.T) / 2.0)[:slots, :slots]
        synergy[0, :] = synergy[:, 0] = matchup[0, :] = matchup[:, 0] = 0.0
        return replace(moved, synergy=synergy, matchup=matchup)
    own._models[id(model)] = (model, moved)
    return moved
