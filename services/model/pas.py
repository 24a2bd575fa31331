"""Personal Advantage Score: how much better a player does on a hero than the average player would.

For one account and hero, over every stored match of the player on it, each weighted toward
recent play (a player's current form is what a draft needs, not their record of years ago):

    w_i = 0.5 ** (age_i / half_life)   age: days before the player's newest match (any hero);
                                       an undated match is as old as the oldest dated one
    E   = sum w_i * p_i / sum w_i      p_i: the hero's base win rate in match i's patch and bracket
    n   = sum w_i, W = sum w_i * win_i (effective games and wins)
    pas = (W + k * E) / (n + k) - E    shrunk toward 0 while n is small

The interval is the equal-tailed 95 % interval of Beta(W + k*E, n - W + k*(1 - E)) minus E: the
posterior of the player's current win rate on the hero, where an old game is weaker evidence
than a recent one, so a hero not played for years has a wide interval however many games it
once had. It treats E as known (the base rates come from far more matches than the player's).
`games` and `wins` stay the raw counts; `last_played_at` says how recent they are.

k is one number per snapshot, fitted by empirical Bayes (beta-binomial likelihood) over every
(player, hero) of every patch whose statistics the snapshot has (services/model/recompute.py),
on raw counts. One k per patch is not fitted: a patch has few players with several games on a
hero (the stored player-level data are pro and single-player sets), and the spread of player
skill around the hero's rate is not a property of a patch.

p_i for a match in a patch the snapshot has no statistics for (the 2012-2018 history of a
player, or the undated trackdota pro matches) is UNKNOWN_PATCH_RATE = 0.5: the hero's balance in
that patch is unknown, and another patch's rate would claim knowledge we do not have. Such a
match still counts, so `games` is every stored match of the player on the hero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from services.model.statistics import CONFIDENCE_LEVEL, fit_prior_weight

HALF_LIFE_DAYS = 180.0
# The expected win rate of a match in a patch without statistics (see above).
UNKNOWN_PATCH_RATE = 0.5
SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class PlayerMatch:
    """One stored match of the player."""

    hero_id: int
    won: bool
    start_time: int | None  # unix seconds
    expected: float  # the hero's base win rate in that match's patch and bracket


@dataclass(frozen=True)
class HeroScore:
    """The player's PAS on one hero."""

    hero_id: int
    games: int
    wins: int
    win_rate: float
    expected_win_rate: float
    pas: float
    interval: tuple[float, float]
    last_played_at: int | None


def recency_weights(start_times: Sequence[int | None], half_life_days: float) -> np.ndarray:
    """Weights halving every half-life before the newest match. An undated match (the
    trackdota pro set) weighs as the player's oldest dated one: its age is unknown, so it never
    counts as more recent than a dated game; with no dated match at all, every match weighs 1."""
    known = [t for t in start_times if t is not None]
    newest = max(known) if known else 0
    oldest = min(known) if known else 0
    ages = np.asarray(
        [(newest - (oldest if t is None else t)) / SECONDS_PER_DAY for t in start_times]
    )
    weights: np.ndarray = np.power(0.5, ages / half_life_days)
    return weights


def hero_scores(
    matches: Sequence[PlayerMatch],
    prior_weight: float,
    half_life_days: float = HALF_LIFE_DAYS,
) -> list[HeroScore]:
    """The player's PAS per hero, sorted by pas descending (ties by hero id)."""
    if not matches:
        return []
    weights = recency_weights([m.start_time for m in matches], half_life_days)
    by_hero: dict[int, list[int]] = {}
    for index, match in enumerate(matches):
        by_hero.setdefault(match.hero_id, []).append(index)
    tail = (1.0 - CONFIDENCE_LEVEL) / 2.0
    scores = []
    for hero, indices in by_hero.items():
        w = weights[indices]
        won = np.asarray([matches[i].won for i in indices], dtype=np.float64)
        expected_each = np.asarray([matches[i].expected for i in indices])
        n, wins_weighted = float(w.sum()), float((w * won).sum())
        expected = float((w * expected_each).sum() / n)
        alpha = wins_weighted + prior_weight * expected
        beta = n - wins_weighted + prior_weight * (1.0 - expected)
        shrunk = alpha / (alpha + beta)
        times = [t for i in indices if (t := matches[i].start_time) is not None]
        scores.append(
            HeroScore(
                hero_id=hero,
                games=len(indices),
                wins=int(won.sum()),
                win_rate=float(won.mean()),
                expected_win_rate=expected,
                pas=shrunk - expected,
                interval=(
                    float(special.betaincinv(alpha, beta, tail)) - expected,
                    float(special.betaincinv(alpha, beta, 1.0 - tail)) - expected,
                ),
                last_played_at=max(times) if times else None,
            )
        )
    scores.sort(key=lambda score: (-score.pas, score.hero_id))
    return scores


def fit_pas_prior_weight(
    groups: Sequence[tuple[float, float, float]],
) -> float:
    """k from every (player, hero) group's (wins, games, expected win rate)."""
    if not groups:
        return fit_prior_weight(np.zeros(0), np.zeros(0), np.zeros(0))
    data = np.asarray(groups, dtype=np.float64)
    return fit_prior_weight(data[:, 0], data[:, 1], data[:, 2])
