"""The draft win models (and the bench's baselines) on synthetic drafts with planted hero
strengths and pair effects.

Every draft is drawn from 30 heroes and its outcome from a known decomposed model, so a model
that learns the right thing can be checked against the truth. Precisions are fixed wherever the
hyperparameter search is not itself under test, to keep the file fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.baselines import MajorityModel, XGBoostModel
from services.common.dota import Side
from services.common.dota_constants import load_constants
from services.model.winmodel.calibration import (
    CalibrationMap,
    fit_isotonic,
    fit_platt,
    sigmoid_map,
)
from services.model.winmodel.data import Drafts
from services.model.winmodel.metrics import (
    accuracy,
    brier_score,
    ece_noise_floor,
    evaluate,
    expected_calibration_error,
    log_loss,
    roc_auc,
)
from services.model.winmodel.models import (
    AdditiveModel,
    CalibratedBlend,
    OneHotLogistic,
    PairwiseLogistic,
    fit_with_patch_prior,
)
from services.model.winmodel.served import DraftModel, combine

HERO_SLOTS = load_constants().hero_slots
HEROES = np.arange(1, 31)
STRONG, WEAK = 1, 2
ALLY_PAIR = (3, 4)  # planted synergy
COUNTER = (5, 6)  # hero 5 beats hero 6 across the teams
PLANTED = 0.6


def planted_model(
    strong: float = PLANTED,
    ally: float = PLANTED,
    counter: float = PLANTED,
    background: float = 0.2,
) -> DraftModel:
    """The truth: one strong and one weak hero, one good ally pair, one counter pick, over
    small random effects of every other pair (sd `background`, fixed seed), which is what
    makes pair terms worth their many parameters."""
    generator = np.random.default_rng(0)
    block = np.ix_(HEROES, HEROES)
    weight = np.zeros(HERO_SLOTS)
    weight[STRONG], weight[WEAK] = strong, -strong
    noise = generator.normal(0.0, background, (2, HEROES.size, HEROES.size))
    synergy = np.zeros((HERO_SLOTS, HERO_SLOTS))
    synergy[block] = np.triu(noise[0], 1) + np.triu(noise[0], 1).T
    synergy[ALLY_PAIR] = synergy[ALLY_PAIR[::-1]] = ally
    matchup = np.zeros((HERO_SLOTS, HERO_SLOTS))
    matchup[block] = np.triu(noise[1], 1) - np.triu(noise[1], 1).T
    matchup[COUNTER] = counter
    matchup[COUNTER[::-1]] = -counter
    return DraftModel.build(0.1, weight, synergy, matchup)


def synthetic_drafts(count: int, seed: int, truth: DraftModel | None = None) -> Drafts:
    """`count` random 5v5 drafts over HEROES, outcomes drawn from `truth`."""
    generator = np.random.default_rng(seed)
    picks = np.argsort(generator.random((count, HEROES.size)), axis=1)[:, :10]
    heroes = HEROES[picks]
    radiant, dire = heroes[:, :5], heroes[:, 5:]
    probability = (truth or planted_model()).predict(radiant, dire)
    wins = generator.random(count) < probability
    return Drafts.from_arrays(radiant, dire, wins, np.arange(count), hero_slots=HERO_SLOTS)


@pytest.fixture(scope="module")
def drafts() -> Drafts:
    return synthetic_drafts(12_000, seed=1)


@pytest.fixture(scope="module")
def pairwise(drafts: Drafts) -> PairwiseLogistic:
    model = PairwiseLogistic(hero_precision=10.0, synergy_precision=30.0, matchup_precision=30.0)
    model.fit(drafts)
    return model


def test_pairwise_model_recovers_the_planted_directions(pairwise: PairwiseLogistic) -> None:
    fitted = pairwise.decompose()
    # Main effects share credit with the random pair effects, so only their signs are sure.
    assert fitted.hero_weight[STRONG] > 0.1
    assert fitted.hero_weight[WEAK] < -0.1
    assert fitted.synergy[ALLY_PAIR] > 0.3
    assert np.argmax(fitted.synergy[ALLY_PAIR[0]]) == ALLY_PAIR[1]
    assert fitted.matchup[COUNTER] > 0.3
    assert fitted.matchup[COUNTER[::-1]] == -fitted.matchup[COUNTER]
    truth = planted_model()
    assert (
        np.corrcoef(fitted.synergy[1:31, 1:31].ravel(), truth.synergy[1:31, 1:31].ravel())[0, 1]
        > 0.5
    )
    assert np.argmax(fitted.matchup[COUNTER[0]]) == COUNTER[1]


def test_pairwise_model_beats_one_hot_on_pair_effects(
    drafts: Drafts, pairwise: PairwiseLogistic
) -> None:
    test = synthetic_drafts(6_000, seed=2)
    one_hot = OneHotLogistic(precision=10.0)
    one_hot.fit(drafts)
    pair_loss = log_loss(pairwise.predict(test.radiant, test.dire), test.radiant_win)
    hero_loss = log_loss(one_hot.predict(test.radiant, test.dire), test.radiant_win)
    assert pair_loss < hero_loss


def test_decomposition_has_the_served_symmetries(pairwise: PairwiseLogistic) -> None:
    fitted = pairwise.decompose()
    np.testing.assert_allclose(fitted.synergy, fitted.synergy.T)
    np.testing.assert_allclose(fitted.matchup, -fitted.matchup.T)
    assert not fitted.synergy.diagonal().any()
    assert not fitted.hero_weight[0]
    assert not fitted.synergy[0].any()
    assert not fitted.matchup[0].any()


@pytest.mark.parametrize("side", ["radiant", "dire"])
def test_candidate_logits_equal_predict_on_the_drafts_they_describe(
    pairwise: PairwiseLogistic, side: str
) -> None:
    served = pairwise.decompose()
    radiant_ids, dire_ids = np.array([1, 3, 7]), np.array([5, 9])
    free = np.setdiff1d(HEROES, np.concatenate([radiant_ids, dire_ids]))
    radiant = np.zeros((free.size, 5), dtype=np.int16)
    dire = np.zeros((free.size, 5), dtype=np.int16)
    radiant[:, :3], dire[:, :2] = radiant_ids, dire_ids
    if side == "radiant":
        radiant[:, 3] = free
    else:
        dire[:, 2] = free
    picking = Side(side)
    candidates = served.candidate_logits(radiant_ids, dire_ids, picking)
    assert candidates.shape == (HERO_SLOTS,)
    np.testing.assert_allclose(candidates[free], served.logits(radiant, dire), atol=1e-12)
    np.testing.assert_allclose(
        served.probability(served.candidate_logits(radiant_ids, dire_ids, picking))[free],
        served.predict(radiant, dire),
        atol=1e-12,
    )


def test_partial_drafts_with_empty_slots() -> None:
    truth = planted_model()
    empty = np.zeros((1, 5), dtype=np.int16)
    assert truth.logits(empty, empty)[0] == pytest.approx(truth.bias)
    partial_radiant = np.array([[STRONG, 3, 0, 0, 0]])
    partial_dire = np.array([[6, 0, 0, 0, 0]])
    assert truth.logits(partial_radiant, partial_dire)[0] == pytest.approx(
        truth.radiant_logit([STRONG, 3], [6])
    )
    by_hand = (
        truth.bias
        + truth.hero_weight[STRONG]
        + truth.synergy[STRONG, 3]
        + truth.matchup[STRONG, 6]
        + truth.matchup[3, 6]
    )
    assert truth.logits(partial_radiant, partial_dire)[0] == pytest.approx(by_hand)
    # Models also fit on drafts with empty slots: empties add no indicator columns.
    drafts = synthetic_drafts(3_000, seed=3)
    radiant = drafts.radiant.copy()
    radiant[::2, 4] = 0
    partial = Drafts(radiant, drafts.dire, drafts.radiant_win, drafts.order_key, HERO_SLOTS)
    for model in (
        MajorityModel(),
        OneHotLogistic(precision=10.0),
        AdditiveModel(),
        PairwiseLogistic(hero_precision=10.0, synergy_precision=30.0, matchup_precision=30.0),
    ):
        model.fit(partial)
        probabilities = model.predict(partial_radiant, partial_dire)
        assert probabilities.shape == (1,)
        assert 0.0 < probabilities[0] < 1.0


def test_majority_model_predicts_the_training_rate(drafts: Drafts) -> None:
    model = MajorityModel()
    model.fit(drafts)
    assert model.rate == pytest.approx(drafts.radiant_win.mean())
    predicted = model.predict(drafts.radiant[:7], drafts.dire[:7])
    np.testing.assert_array_equal(predicted, np.full(7, drafts.radiant_win.mean()))
    everything = model.predict(drafts.radiant, drafts.dire)
    assert roc_auc(everything, drafts.radiant_win) == pytest.approx(0.5)


def test_metric_functions_match_hand_computed_values() -> None:
    outcomes = np.array([False, True, False, True])
    probabilities = np.array([0.05, 0.15, 0.15, 0.95])
    # Bins [0, .1): |0.05 - 0| * 1; [.1, .2): |0.15 - 0.5| * 2; [.9, 1]: |0.95 - 1| * 1.
    assert expected_calibration_error(probabilities, outcomes) == pytest.approx(0.8 / 4)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([True, False])) == 0.0
    assert log_loss(np.array([0.8, 0.4]), np.array([True, False])) == pytest.approx(
        -(math.log(0.8) + math.log(0.6)) / 2
    )
    assert accuracy(probabilities, outcomes) == pytest.approx(0.75)  # misses only the 0.15 win
    assert brier_score(probabilities, outcomes) == pytest.approx(
        (0.05**2 + 0.85**2 + 0.15**2 + 0.05**2) / 4
    )
    # Positive 0.35 beats the negative 0.1 but not 0.4; positive 0.8 beats both: 3 of 4 pairs.
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), outcomes[[0, 2, 1, 3]]) == pytest.approx(0.75)
    quality = evaluate(probabilities, outcomes)
    assert quality.ece == pytest.approx(0.2)


def test_ece_noise_floor_shrinks_with_more_matches() -> None:
    generator = np.random.default_rng(4)
    small = ece_noise_floor(generator.uniform(0.3, 0.7, 500), draws=50)
    large = ece_noise_floor(generator.uniform(0.3, 0.7, 50_000), draws=50)
    assert 0.0 < large < small


def test_calibration_maps_are_monotone() -> None:
    generator = np.random.default_rng(5)
    logits = generator.normal(0.0, 1.0, 4_000)
    outcomes = generator.random(logits.size) < 1 / (1 + np.exp(-(0.5 * logits + 0.2)))
    isotonic = fit_isotonic(logits, outcomes)
    assert np.all(np.diff(isotonic.logits) > 0)
    assert np.all(np.diff(isotonic.probabilities) >= 0)
    grid = np.linspace(-5, 5, 1001)
    assert np.all(np.diff(isotonic(grid)) >= 0)
    slope, intercept = fit_platt(logits, outcomes)
    assert slope == pytest.approx(0.5, abs=0.1)
    assert intercept == pytest.approx(0.2, abs=0.1)
    assert np.all(np.diff(sigmoid_map(slope, intercept)(grid)) > 0)
    with pytest.raises(ValueError, match="knots"):
        CalibrationMap(np.array([0.0, 1.0]), np.array([0.6, 0.4]))


def test_blend_is_decomposable_and_calibrated_out_of_fold(drafts: Drafts) -> None:
    blend = CalibratedBlend(
        [
            OneHotLogistic(precision=10.0),
            AdditiveModel(),
            PairwiseLogistic(hero_precision=10.0, synergy_precision=30.0, matchup_precision=30.0),
        ]
    )
    blend.fit(drafts)
    assert blend.blend_weights is not None
    assert np.all(blend.blend_weights >= 0)
    served = blend.decompose()
    expected_logits = blend.intercept + sum(
        weight * component.decompose().logits(drafts.radiant[:50], drafts.dire[:50])
        for weight, component in zip(blend.blend_weights, blend.components, strict=True)
    )
    np.testing.assert_allclose(
        served.logits(drafts.radiant[:50], drafts.dire[:50]), expected_logits
    )
    out_of_fold = blend.out_of_fold_probabilities()
    assert expected_calibration_error(out_of_fold, drafts.radiant_win) < 0.03


def test_combine_weights_every_term() -> None:
    truth = planted_model()
    doubled = combine([(1.5, truth), (0.5, truth)], bias=0.25)
    radiant, dire = np.array([[1, 3, 4, 5, 7]]), np.array([[2, 6, 8, 9, 10]])
    assert doubled.logits(radiant, dire)[0] == pytest.approx(
        2 * truth.logits(radiant, dire)[0] + 0.25
    )


def test_patch_prior_pulls_toward_the_previous_patch() -> None:
    previous = PairwiseLogistic(hero_precision=10.0, synergy_precision=30.0, matchup_precision=30.0)
    previous.fit(synthetic_drafts(8_000, seed=6))
    previous_model = previous.decompose()
    # The new patch flips the counter pick and has only a few hundred matches.
    new_truth = planted_model(counter=-PLANTED)
    new_patch = synthetic_drafts(400, seed=7, truth=new_truth)
    alone = PairwiseLogistic(hero_precision=10.0, synergy_precision=30.0, matchup_precision=30.0)
    alone.fit(new_patch)
    shrunk = fit_with_patch_prior(
        new_patch,
        previous_model,
        hero_precision=10.0,
        synergy_precision=30.0,
        matchup_precision=30.0,
    )
    target = previous_model.parameter_vector()
    distance_alone = np.linalg.norm(alone.decompose().parameter_vector() - target)
    distance_shrunk = np.linalg.norm(shrunk.decompose().parameter_vector() - target)
    assert distance_shrunk < 0.5 * distance_alone
    # The strong hero the previous patch knew stays strong; with no prior it is a 400-match guess.
    assert shrunk.decompose().hero_weight[STRONG] > alone.decompose().hero_weight[STRONG] - 0.3
    assert shrunk.decompose().hero_weight[STRONG] == pytest.approx(
        previous_model.hero_weight[STRONG], abs=0.2
    )


def test_hyperparameter_search_prefers_strong_shrinkage_without_signal() -> None:
    noise = synthetic_drafts(3_000, seed=8, truth=planted_model(0.0, 0.0, 0.0, background=0.0))
    model = OneHotLogistic()
    model.fit(noise)
    assert model.precision is not None
    assert model.precision >= 100.0


def test_xgboost_model_fits_and_predicts_probabilities(drafts: Drafts) -> None:
    model = XGBoostModel(rounds=30, threads=1)
    model.fit(drafts.take(slice(0, 3_000)))
    probabilities = model.predict(drafts.radiant[:20], drafts.dire[:20])
    assert probabilities.shape == (20,)
    assert np.all((probabilities > 0) & (probabilities < 1))


def test_drafts_validate_and_split_by_time() -> None:
    with pytest.raises(ValueError, match="must be"):
        Drafts.from_arrays(np.zeros((3, 4)), np.zeros((3, 5)), np.zeros(3), hero_slots=HERO_SLOTS)
    with pytest.raises(ValueError, match="hero ids"):
        Drafts.from_arrays(
            np.full((1, 5), HERO_SLOTS), np.ones((1, 5)), np.zeros(1), hero_slots=HERO_SLOTS
        )
    drafts = synthetic_drafts(10, seed=9)
    shuffled = Drafts(
        drafts.radiant,
        drafts.dire,
        drafts.radiant_win,
        np.array([9, 0, 8, 1, 7, 2, 6, 3, 5, 4]),
        HERO_SLOTS,
    )
    older, newer = shuffled.split_by_time(0.8)
    assert (len(older), len(newer)) == (8, 2)
    assert older.order_key.max() < newer.order_key.min()
