"""Personal Advantage Score on plain data: shrinkage, intervals, recency."""

from __future__ import annotations

import pytest

from services.model.pas import SECONDS_PER_DAY, UNKNOWN_PATCH_RATE, PlayerMatch, hero_scores

NOW = 1_700_000_000


def _games(hero: int, wins: int, losses: int, *, age_days: float = 0.0) -> list[PlayerMatch]:
    start = int(NOW - age_days * SECONDS_PER_DAY)
    return [PlayerMatch(hero, True, start, 0.5)] * wins + [
        PlayerMatch(hero, False, start, 0.5)
    ] * losses


def test_interval_contains_pas_and_narrows_with_games() -> None:
    matches = _games(1, 6, 4) + _games(2, 60, 40) + _games(3, 600, 400)
    scores = {score.hero_id: score for score in hero_scores(matches, prior_weight=30.0)}
    widths = {}
    for hero, score in scores.items():
        low, high = score.interval
        assert low < score.pas < high
        widths[hero] = high - low
    assert widths[1] > widths[2] > widths[3]
    # Same 60 % win rate: more games, less shrinkage toward 0.
    assert 0 < scores[1].pas < scores[2].pas < scores[3].pas < 0.1
    assert scores[3].games == 1000
    assert scores[3].wins == 600
    assert scores[3].win_rate == pytest.approx(0.6)


def test_old_games_are_weak_evidence() -> None:
    # Hero 1: 200 games two years before the player's newest match; hero 2: 20 recent games.
    matches = _games(1, 140, 60, age_days=730) + _games(2, 14, 6)
    scores = {score.hero_id: score for score in hero_scores(matches, prior_weight=30.0)}
    old, recent = scores[1], scores[2]
    assert old.games == 200
    assert recent.games == 20
    assert old.interval[1] - old.interval[0] > recent.interval[1] - recent.interval[0]
    assert old.pas < recent.pas  # same 70 % win rate, but long ago
    assert old.last_played_at == NOW - 730 * SECONDS_PER_DAY
    assert recent.last_played_at == NOW


def test_unknown_patch_rate_is_a_coin_flip() -> None:
    assert UNKNOWN_PATCH_RATE == 0.5
    scores = hero_scores(_games(5, 3, 7), prior_weight=10.0)
    assert scores[0].expected_win_rate == pytest.approx(0.5)
    assert scores[0].pas < 0
    assert scores[0].interval[0] < scores[0].pas < scores[0].interval[1]


def test_undated_matches_have_no_last_played_at() -> None:
    matches = [PlayerMatch(7, True, None, 0.5), PlayerMatch(7, False, None, 0.5)]
    (score,) = hero_scores(matches, prior_weight=30.0)
    assert score.games == 2
    assert score.last_played_at is None
    assert score.pas == pytest.approx(0.0)


def test_undated_matches_never_count_as_recent() -> None:
    dated = _games(1, 5, 5) + _games(1, 5, 5, age_days=360)
    undated = [PlayerMatch(2, True, None, 0.5)] * 10
    scores = {score.hero_id: score for score in hero_scores(dated + undated, prior_weight=30.0)}
    # Hero 2's ten undated wins weigh as the oldest dated games (a quarter each).
    assert scores[2].pas == pytest.approx((2.5 + 15.0) / (2.5 + 30.0) - 0.5)
