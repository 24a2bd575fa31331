"""The synthetic generator keeps its promises, and the prior-weight fit reads spread correctly.

The warehouse end of the recovery proof is tests/contract/test_statistics_recovery.py; these are
the fast checks that need no engine: the planted truth has the advertised shape and size, drafts
are legal and unbiased, the numpy reference counter agrees with Counts' own methods, and
statistics.fit_prior_weight tells "no pair effects" from "planted pair effects".
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from services.common.dota import SkillBracket
from services.common.warehouse.schema import MATCH_SCHEMA
from services.model.statistics import (
    PRIOR_WEIGHT_BOUNDS,
    Counts,
    compute_statistics,
    fit_prior_weight,
)
from tests.synthetic import (
    BLOCK,
    BRACKET_NAMES,
    GroundTruth,
    count_matches,
    generate_matches,
    plant_truth,
    shift_truth,
)

PATCH = "7.41"


def upper_pairs(truth: GroundTruth, matrix: np.ndarray) -> np.ndarray:
    """The values of an (H, H) matrix over unordered pairs of real heroes."""
    ids = truth.hero_ids
    first, second = np.triu_indices(ids.size, 1)
    values: np.ndarray = matrix[ids[first], ids[second]]
    return values


def test_the_truth_has_realistic_sizes_and_identifiable_effects() -> None:
    truth = plant_truth(5)
    ids = truth.hero_ids
    assert ids.size == 127
    assert 0.1 < truth.strength[ids].std() < 0.2
    for matrix in (truth.synergy, truth.matchup):
        pairs = upper_pairs(truth, matrix)
        assert 0.08 < pairs.std() < 0.12
        # Sparse-ish: most effects are small (Laplace), a few are real counters.
        assert np.mean(np.abs(pairs) < 0.05) > 0.45
        assert np.abs(pairs).max() > 0.4
    np.testing.assert_allclose(truth.matchup, -truth.matchup.T, atol=1e-12)
    np.testing.assert_allclose(truth.synergy, truth.synergy.T, atol=1e-12)
    # Centred by pick rate, so strength is not confounded with a hero's mean pair effect.
    rates = truth.pick_rates()
    assert np.abs(truth.matchup @ rates).max() < 1e-9
    assert np.abs(truth.synergy @ rates).max() < 2e-3  # only the zeroed diagonal is off
    weights = truth.pick_weight[ids]
    assert weights.max() / weights.min() > 10
    non_heroes = np.setdiff1d(np.arange(truth.hero_slots), ids)
    assert not truth.strength[non_heroes].any()
    assert not truth.matchup[non_heroes].any()


def test_generation_is_deterministic_and_a_smaller_count_is_a_prefix() -> None:
    truth = plant_truth(1)
    large = generate_matches(truth, BLOCK + 500, seed=9)
    small = generate_matches(truth, BLOCK, seed=9)
    again = generate_matches(truth, BLOCK + 500, seed=9)
    other = generate_matches(truth, BLOCK, seed=10)
    assert np.array_equal(large.radiant, again.radiant)
    assert np.array_equal(large.radiant_win, again.radiant_win)
    assert np.array_equal(small.radiant, large.radiant[:BLOCK])
    assert np.array_equal(small.dire, large.dire[:BLOCK])
    assert np.array_equal(small.radiant_win, large.radiant_win[:BLOCK])
    assert not np.array_equal(small.radiant, other.radiant)
    # Another patch name is another stream, even with the same seed.
    assert not np.array_equal(
        small.radiant, generate_matches(truth, BLOCK, seed=9, patch="7.40").radiant
    )


def test_drafts_are_legal_and_sides_unbiased() -> None:
    truth = plant_truth(2)
    matches = generate_matches(truth, 100_000, seed=3, first_match_id=5)
    drafted = np.concatenate([matches.radiant, matches.dire], axis=1)
    assert np.isin(drafted, truth.hero_ids).all()
    assert (np.diff(np.sort(drafted, axis=1), axis=1) > 0).all()  # 10 distinct heroes
    assert (np.diff(matches.radiant, axis=1) > 0).all()  # ascending, as the warehouse stores
    assert (np.diff(matches.dire, axis=1) > 0).all()
    assert np.array_equal(matches.match_id, np.arange(5, 100_005, dtype=np.uint64))
    assert (np.diff(matches.start_time.astype(np.int64)) >= 0).all()
    # Each hero is on Radiant half the time: the side dealing does not favour popular heroes.
    radiant = np.bincount(matches.radiant.ravel(), minlength=truth.hero_slots)[truth.hero_ids]
    dire = np.bincount(matches.dire.ravel(), minlength=truth.hero_slots)[truth.hero_ids]
    share = radiant / (radiant + dire)
    noise = 0.5 / np.sqrt(radiant + dire)
    assert (np.abs(share - 0.5) < 5 * noise).all()
    # The outcome follows the model: mean predicted = observed Radiant win rate.
    predicted = 1 / (1 + np.exp(-truth.radiant_logit(matches.radiant, matches.dire)))
    assert abs(predicted.mean() - matches.radiant_win.mean()) < 0.005
    assert matches.radiant_win.mean() > 0.51  # the planted Radiant bias


def test_the_arrow_table_is_what_the_warehouse_stores() -> None:
    matches = generate_matches(plant_truth(1), 1_000, seed=1)
    table = matches.to_arrow()
    assert table.schema == MATCH_SCHEMA
    assert table.num_rows == 1_000
    rows = table.slice(0, 200).to_pylist()
    for row, radiant, dire in zip(rows, matches.radiant, matches.dire, strict=False):
        assert row["radiant_heroes"] == radiant.tolist()
        assert row["dire_heroes"] == dire.tolist()
        assert row["skill_bracket"] == SkillBracket.from_rank_tier(row["avg_rank_tier"])
        assert row["patch"] == PATCH
    brackets = set(table.column("skill_bracket").to_pylist())
    assert brackets == set(BRACKET_NAMES)
    assert pa.compute.sum(table.column("avg_rank_tier").is_null()).as_py() > 0


def test_the_reference_counter_agrees_with_the_counts_methods() -> None:
    """count_matches (bincount) is what the warehouse SQL is checked against, so it is itself
    checked against Counts.add_* (np.add.at), the code path read_counts uses."""
    truth = plant_truth(3)
    matches = generate_matches(truth, 3_000, seed=4)
    fast = count_matches([matches], truth.hero_slots)
    for code, name in enumerate(BRACKET_NAMES):
        chosen = matches.bracket == code
        radiant, dire = matches.radiant[chosen], matches.dire[chosen]
        win = matches.radiant_win[chosen].astype(np.int64)
        slow = Counts.empty(truth.hero_slots)
        ones = np.ones(win.size, dtype=np.int64)
        for i in range(5):
            slow.add_heroes(radiant[:, i], ones, win)
            slow.add_heroes(dire[:, i], ones, 1 - win)
            for j in range(5):
                slow.add_versus(radiant[:, i], dire[:, j], ones, win)
            for j in range(i + 1, 5):
                slow.add_with(radiant[:, i], radiant[:, j], ones, win)
                slow.add_with(dire[:, i], dire[:, j], ones, 1 - win)
        got = fast[(PATCH, SkillBracket(name))]
        assert got.matches == win.size
        for field in ("hero_games", "hero_wins", "versus_games", "versus_wins"):
            assert np.array_equal(getattr(got, field), getattr(slow, field)), (name, field)
        assert np.array_equal(got.with_games, slow.with_games), name
        assert np.array_equal(got.with_wins, slow.with_wins), name
    assert fast[(PATCH, SkillBracket.ALL)].matches == 3_000


def test_a_shifted_patch_changes_some_heroes_and_keeps_the_structure() -> None:
    truth = plant_truth(4)
    shifted = shift_truth(truth, 1)
    ids = truth.hero_ids
    change = shifted.strength[ids] - truth.strength[ids]
    assert (np.abs(change) > 0.1).sum() >= 4  # a handful of real buffs and nerfs
    assert np.median(np.abs(change)) < 0.05  # most heroes barely move
    np.testing.assert_allclose(shifted.matchup, -shifted.matchup.T, atol=1e-12)
    assert np.abs(shifted.matchup @ shifted.pick_rates()).max() < 1e-9
    same = np.isclose(upper_pairs(truth, truth.matchup), upper_pairs(shifted, shifted.matchup))
    moved = np.abs(upper_pairs(truth, truth.matchup) - upper_pairs(shifted, shifted.matchup))
    assert same.mean() < 0.5  # re-centring moves every pair a little ...
    assert np.mean(moved > 0.05) < 0.2  # ... but only the redrawn tenth moves a lot
    # Buffed heroes get picked more.
    pick_change = np.log(shifted.pick_weight[ids] / truth.pick_weight[ids])
    assert np.corrcoef(change, pick_change)[0, 1] > 0.99


# -- statistics.fit_prior_weight ---------------------------------------------------------------


def test_fit_prior_weight_recovers_a_known_beta_binomial_weight() -> None:
    rng = np.random.default_rng(0)
    pairs = 5_000
    games = rng.integers(200, 5_000, pairs).astype(np.float64)
    expected = rng.uniform(0.4, 0.6, pairs)
    for planted in (50.0, 300.0, 1_000.0):
        rates = rng.beta(planted * expected, planted * (1 - expected))
        wins = rng.binomial(games.astype(np.int64), rates).astype(np.float64)
        assert fit_prior_weight(wins, games, expected) == pytest.approx(planted, rel=0.2)


def test_no_planted_pair_effects_give_a_prior_weight_at_the_upper_bound() -> None:
    """With no spread beyond binomial noise, every pair should be shrunk to its expectation."""
    truth = plant_truth(0, pair_effects=False)
    counts = count_matches([generate_matches(truth, 100_000, seed=1)], truth.hero_slots)
    statistics = compute_statistics(PATCH, SkillBracket.ALL, counts[(PATCH, SkillBracket.ALL)])
    for table in (statistics.matchups, statistics.synergies):
        assert table.prior_weight > 0.9 * PRIOR_WEIGHT_BOUNDS[1], table.relation


def test_planted_pair_effects_give_a_finite_plausible_prior_weight() -> None:
    """k of a beta prior is E(1-E) / var(true rate) - 1. At even odds a log-odds effect x moves
    the win rate by about x / 4, so planted effects of variance v imply k near 0.25 / (v / 16)
    = 4 / v (about 400 for sd 0.1). The marginal effect a pair shows is smaller than the
    conditional one planted (the other eight heroes blur it), which pushes k up, so accept a
    window of 0.5x to 3x that."""
    truth = plant_truth(0)
    counts = count_matches([generate_matches(truth, 100_000, seed=1)], truth.hero_slots)
    statistics = compute_statistics(PATCH, SkillBracket.ALL, counts[(PATCH, SkillBracket.ALL)])
    for table, planted in (
        (statistics.matchups, truth.matchup),
        (statistics.synergies, truth.synergy),
    ):
        implied = 4.0 / upper_pairs(truth, planted).var()
        assert 0.5 * implied < table.prior_weight < 3.0 * implied, (
            table.relation,
            table.prior_weight,
            implied,
        )
