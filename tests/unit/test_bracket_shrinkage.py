"""Bracket statistics shrunk toward ALL (services/model/statistics.py, shrink_toward_all): on
synthetic matches with planted bracket effects the shrunk rates recover them better than ALL,
are no worse than ALL where nothing is planted, and collapse onto ALL when no bracket differs."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from services.common.dota import SkillBracket
from services.model.recompute import additive_model
from services.model.snapshot import ModelSnapshot, PatchModel
from services.model.statistics import (
    FULL_POOLING,
    BracketStatistics,
    Counts,
    bracket_model,
    compute_statistics,
    fit_bracket_prior,
    shrink_brackets,
)
from services.model.winmodel.metrics import log_loss
from tests.synthetic import GroundTruth, SyntheticMatches, generate_matches, plant_truth

# Matches per ranked bracket: the smallest is about a Herald-Guardian day of a busy patch.
SIZES = {
    SkillBracket.HERALD_GUARDIAN: 8_000,
    SkillBracket.CRUSADER_ARCHON: 30_000,
    SkillBracket.LEGEND_ANCIENT: 30_000,
    SkillBracket.DIVINE_IMMORTAL: 12_000,
}
PLANTED_BRACKET = SkillBracket.HERALD_GUARDIAN
PLANTED_HEROES = 12
PLANTED_LOGIT = 0.35  # about 8.5 win-rate points: a hero that is a Herald stomper or a trap
HELD_OUT = 131_072  # two generator blocks: ~10k games a hero, the rates' "truth"
# (the planted bracket's truth, its planted heroes, raw statistics, shrunk statistics)
Planted = tuple[
    GroundTruth,
    np.ndarray,
    dict[SkillBracket, BracketStatistics],
    dict[SkillBracket, BracketStatistics],
]


def _planted(truth: GroundTruth, seed: int) -> tuple[GroundTruth, np.ndarray]:
    rng = np.random.default_rng(seed)
    heroes = rng.choice(truth.hero_ids, PLANTED_HEROES, replace=False)
    strength = truth.strength.copy()
    strength[heroes] += PLANTED_LOGIT * rng.choice([-1.0, 1.0], PLANTED_HEROES)
    return replace(truth, strength=strength), np.sort(heroes)


def _counts(matches: SyntheticMatches, slots: int) -> Counts:
    return Counts.from_drafts(matches.radiant, matches.dire, matches.radiant_win, slots)


def _statistics(
    truths: dict[SkillBracket, GroundTruth], seed: int
) -> tuple[dict[SkillBracket, BracketStatistics], dict[SkillBracket, BracketStatistics]]:
    """(raw, shrunk) statistics of one patch whose brackets are drawn from `truths`."""
    slots = next(iter(truths.values())).hero_slots
    overall = Counts.empty(slots)
    raw: dict[SkillBracket, BracketStatistics] = {}
    for index, (bracket, truth) in enumerate(truths.items()):
        counts = _counts(generate_matches(truth, SIZES[bracket], seed=seed + index), slots)
        overall.merge(counts)
        raw[bracket] = compute_statistics("7.41", bracket, counts)
    raw[SkillBracket.ALL] = compute_statistics("7.41", SkillBracket.ALL, overall)
    return raw, shrink_brackets(raw)


@pytest.fixture(scope="module")
def truth() -> GroundTruth:
    return plant_truth(5)


@pytest.fixture(scope="module")
def planted(
    truth: GroundTruth,
) -> Planted:
    herald, heroes = _planted(truth, seed=11)
    truths = {bracket: truth for bracket in SIZES} | {PLANTED_BRACKET: herald}
    raw, shrunk = _statistics(truths, seed=100)
    return herald, heroes, raw, shrunk


def test_strength_recovers_a_known_between_bracket_variance() -> None:
    rng = np.random.default_rng(3)
    cells, games, tau = 4_000, np.full(4_000, 1_000.0), 0.03
    centre = np.full(cells, 0.5)
    wins = rng.binomial(1_000, np.clip(0.5 + rng.normal(0.0, tau, cells), 0, 1)).astype(float)
    # A centre known exactly (weight 0 on the cell itself): k = v / tau^2 = 0.25 / 0.0009.
    prior = fit_bracket_prior(wins, games, centre, np.full(cells, 1e9), np.zeros(cells))
    assert 0.8 * 0.25 / tau**2 < prior.strength < 1.25 * 0.25 / tau**2
    assert prior.share > 0.8
    # A tenth of the cells differ (sd 0.05): the share is found and the rest stay near ALL.
    sparse = rng.random(cells) < 0.1
    differ = np.where(sparse, rng.normal(0.0, 0.05, cells), 0.0)
    wins = rng.binomial(1_000, 0.5 + differ).astype(float)
    prior = fit_bracket_prior(wins, games, centre, np.full(cells, 1e9), np.zeros(cells))
    assert 0.05 < prior.share < 0.2
    own_weight = games / (games + prior.cell_strength)  # how far a cell moves to its own rate
    assert own_weight[sparse].mean() > 3 * own_weight[~sparse].mean()
    noise = rng.binomial(1_000, 0.5, cells).astype(float)
    pooled = fit_bracket_prior(noise, games, centre, np.full(cells, 1e9), np.zeros(cells))
    assert pooled.strength == FULL_POOLING
    assert pooled.share == 0.0
    assert np.all(pooled.cell_strength == FULL_POOLING)


def test_no_bracket_differs_so_every_bracket_is_all(truth: GroundTruth) -> None:
    raw, shrunk = _statistics({bracket: truth for bracket in SIZES}, seed=200)
    overall = shrunk[SkillBracket.ALL]
    for bracket in SIZES:
        statistics = shrunk[bracket]
        assert statistics.shrinkage is not None
        assert statistics.shrinkage.pooled, bracket
        np.testing.assert_allclose(statistics.base_rate, overall.base_rate, atol=1e-9)
        played = statistics.matchups.games > 0
        np.testing.assert_allclose(
            statistics.matchups.score[played], overall.matchups.score[played], atol=1e-6
        )
        # The raw counts are still the bracket's own, and its record says so.
        assert statistics.matches == raw[bracket].matches
        np.testing.assert_array_equal(statistics.hero_games, raw[bracket].hero_games)


def test_shrinkage_recovers_planted_differences_and_leaves_the_rest_at_all(
    truth: GroundTruth,
    planted: Planted,
) -> None:
    herald, heroes, raw, shrunk = planted
    slots = truth.hero_slots
    held_out = compute_statistics(
        "7.41", PLANTED_BRACKET, _counts(generate_matches(herald, HELD_OUT, seed=999), slots)
    ).base_rate
    ids = truth.hero_ids
    others = np.setdiff1d(ids, heroes)
    overall, own = shrunk[SkillBracket.ALL].base_rate, shrunk[PLANTED_BRACKET].base_rate
    bracket_raw = raw[PLANTED_BRACKET].base_rate

    def error(estimate: np.ndarray, where: np.ndarray) -> float:
        return float(np.mean((estimate[where] - held_out[where]) ** 2))

    shrinkage = shrunk[PLANTED_BRACKET].shrinkage
    assert shrinkage is not None
    assert not shrinkage.pooled
    # Where the bracket really differs, the shrunk rates are far closer than ALL's ...
    assert error(own, heroes) < 0.4 * error(overall, heroes)
    # ... across all heroes they beat both ALL and the bracket's own raw (noisier) rates ...
    assert error(own, ids) < error(overall, ids)
    assert error(own, ids) < error(bracket_raw, ids)
    # ... at a bounded cost on the heroes without a planted effect of their own: no estimator
    # can tell them from the planted ones without some pull toward their own (noisy) rates; the
    # spike-and-slab prior keeps it small (one normal prior for all heroes doubled their error).
    assert error(own, others) < 1.6 * error(overall, others)
    assert error(own, others) < 0.5 * error(bracket_raw, others)
    # Brackets without a planted effect stay at ALL, pairs everywhere (none were planted).
    for bracket in SIZES:
        fitted = shrunk[bracket].shrinkage
        assert fitted is not None
        assert fitted.versus_share == fitted.with_share == 0.0
        if bracket is not PLANTED_BRACKET:
            assert fitted.hero_share == 0.0, bracket


def test_bracket_model_gains_where_the_bracket_differs(
    truth: GroundTruth,
    planted: Planted,
) -> None:
    herald, _heroes, _, shrunk = planted
    overall = shrunk[SkillBracket.ALL]
    served = additive_model("7.41", overall)
    moved = bracket_model(served, overall, shrunk[PLANTED_BRACKET])
    assert bracket_model(served, overall, shrunk[PLANTED_BRACKET]) is moved  # cached
    test = generate_matches(herald, 20_000, seed=4242)
    ours = log_loss(moved.predict(test.radiant, test.dire), test.radiant_win)
    theirs = log_loss(served.predict(test.radiant, test.dire), test.radiant_win)
    assert ours < theirs
    # A bracket pooled all the way to ALL predicts exactly as ALL does.
    pooled = bracket_model(served, overall, shrunk[SkillBracket.LEGEND_ANCIENT])
    np.testing.assert_allclose(pooled.hero_weight, served.hero_weight, atol=1e-9)


def test_snapshot_serves_the_shrunk_bracket_at_any_size(
    planted: Planted,
    truth: GroundTruth,
) -> None:
    _, _, _, shrunk = planted
    overall = shrunk[SkillBracket.ALL]
    served = additive_model("7.41", overall)
    without_divine: dict[SkillBracket, BracketStatistics] = {
        b: s for b, s in shrunk.items() if b is not SkillBracket.DIVINE_IMMORTAL
    }
    playable = np.zeros(truth.hero_slots, dtype=bool)
    playable[truth.hero_ids] = True
    snapshot = ModelSnapshot(
        version=1,
        computed_at=time.time(),
        patches={"7.41": PatchModel("7.41", without_divine, served)},
        current_patch="7.41",
        playable=playable,
        pas_prior_weight=20,
    )
    herald = snapshot.context("7.41", PLANTED_BRACKET)
    assert herald.statistics is shrunk[PLANTED_BRACKET]
    assert herald.notes == (
        f"herald_guardian: {SIZES[PLANTED_BRACKET]} matches, shrunk toward all brackets",
    )
    assert not np.array_equal(herald.model.hero_weight, served.hero_weight)
    legend = snapshot.context("7.41", SkillBracket.LEGEND_ANCIENT)
    assert "no difference from all brackets found" in legend.notes[0]
    assert snapshot.context("7.41", SkillBracket.ALL).notes == ()
    missing = snapshot.context("7.41", SkillBracket.DIVINE_IMMORTAL)
    assert missing.statistics is overall
    assert missing.model is served
    assert missing.notes == ("divine_immortal bracket has 0 matches in 7.41; used all brackets",)
