"""The statistics pipeline recovers planted effects: synthetic matches -> chdb warehouse -> SQL
counts -> compute_statistics, compared with the hidden truth that generated the matches.

1,000,000 matches, the size the target is stated for (rank correlation with the truth above 0.9
at 1M matches).
End to end (generate, insert, SQL counts, statistics) that is about 8 s on 2 cores, so the test
uses the full million rather than a smaller stand-in.

Units: rank correlations are taken against the planted log-odds effects themselves (strength,
synergy S(a, b), matchup M(a, b)); a rank correlation does not care that the pipeline reports
win-rate points. The scale is checked separately: the recovered log-odds effect is a fixed
fraction of the planted one (shrinkage, and the other eight heroes blurring a conditional effect
into a smaller marginal one), the same fraction for synergies and matchups.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy import stats

from services.common.dota import SkillBracket
from services.etl.repo import Warehouse
from services.model.statistics import PairTable, compute_statistics
from services.model.warehouse_counts import read_counts
from tests.synthetic import GroundTruth, count_matches, generate_matches, plant_truth
from tests.warehouse_drafts import insert_draft_table

MATCHES = 1_000_000
PATCH = "7.41"
# A pair "has enough games" from 5,000: its win rate's sampling sd is then 0.5 / sqrt(5000) = 0.7
# win-rate points against a planted spread of about 2 points. At 1M matches with realistic pick
# rates that is some 900 synergy and 1,300 matchup pairs (the popular ones).
ENOUGH_GAMES = 5_000
MIN_PAIRS = 500
THRESHOLD = 0.9


def pair_recovery(
    truth: GroundTruth, table: PairTable, planted: np.ndarray
) -> tuple[float, float, int]:
    """(Spearman rho, slope of recovered on planted log-odds, pairs) over unordered pairs of
    real heroes with enough games."""
    ids = truth.hero_ids
    first, second = np.triu_indices(ids.size, 1)
    a, b = ids[first], ids[second]
    enough = table.games[a, b] >= ENOUGH_GAMES
    recovered, true = table.log_odds[a, b][enough], planted[a, b][enough]
    rho = float(stats.spearmanr(recovered, true).statistic)
    slope = float(np.polyfit(true, recovered, 1)[0])
    return rho, slope, int(enough.sum())


def test_the_pipeline_recovers_planted_strengths_matchups_and_synergies(tmp_path: Path) -> None:
    started = time.perf_counter()
    truth = plant_truth(2026)
    matches = generate_matches(truth, MATCHES, patch=PATCH, seed=7)
    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'warehouse'}")
    try:
        warehouse.migrate()
        insert_draft_table(warehouse, matches.to_arrow())
        counts = read_counts(warehouse, truth.hero_slots)
    finally:
        warehouse.close()
    statistics = compute_statistics(PATCH, SkillBracket.ALL, counts[(PATCH, SkillBracket.ALL)])
    elapsed = time.perf_counter() - started

    # The SQL counted exactly what was generated, in every bracket.
    expected = count_matches([matches], truth.hero_slots)
    assert set(counts) == set(expected)
    for key, want in expected.items():
        got = counts[key]
        assert got.matches == want.matches, key
        for field in ("hero_games", "hero_wins", "versus_games", "versus_wins", "with_games"):
            assert np.array_equal(getattr(got, field), getattr(want, field)), (key, field)
        assert np.array_equal(got.with_wins, want.with_wins), key

    ids = truth.hero_ids
    strength_rho = float(stats.spearmanr(statistics.base_rate[ids], truth.strength[ids]).statistic)
    matchup_rho, matchup_slope, matchup_pairs = pair_recovery(
        truth, statistics.matchups, truth.matchup
    )
    synergy_rho, synergy_slope, synergy_pairs = pair_recovery(
        truth, statistics.synergies, truth.synergy
    )
    report = (
        f"{MATCHES:,} matches in {elapsed:.1f} s; Spearman: strength {strength_rho:.3f}, "
        f"matchup {matchup_rho:.3f} ({matchup_pairs} pairs), "
        f"synergy {synergy_rho:.3f} ({synergy_pairs} pairs); log-odds slope matchup "
        f"{matchup_slope:.2f}, synergy {synergy_slope:.2f}; k vs "
        f"{statistics.matchups.prior_weight:.0f}, with {statistics.synergies.prior_weight:.0f}"
    )
    print(report)
    assert strength_rho > THRESHOLD, report
    assert matchup_pairs >= MIN_PAIRS, report
    assert synergy_pairs >= MIN_PAIRS, report
    assert matchup_rho > THRESHOLD, report
    assert synergy_rho > THRESHOLD, report
    # Same units: recovered log-odds track planted log-odds at a common, sub-unit scale.
    assert 0.6 < matchup_slope < 1.0, report
    assert 0.6 < synergy_slope < 1.0, report
    assert abs(matchup_slope - synergy_slope) < 0.1, report
