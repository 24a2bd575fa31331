"""The model's pure domain: draft validation, the decomposed win model, suggestions, PAS,
snapshot resolution and page tokens, on small hand-made inputs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from services.common import paging
from services.common.dota import Side, SkillBracket
from services.common.errors import InvalidArgument
from services.model.drafts import (
    Draft,
    DraftAction,
    DraftContext,
    PersonalScore,
    build_draft,
    predict,
    suggest,
)
from services.model.pas import PlayerMatch, hero_scores
from services.model.recompute import additive_model
from services.model.snapshot import ModelSnapshot, PatchModel
from services.model.statistics import (
    Counts,
    compute_statistics,
    fit_prior_weight,
    shrink_toward_all,
)
from services.model.winmodel.served import DraftModel

HEROES = list(range(1, 31))
SLOTS = 31


def random_counts(matches: int, seed: int = 1) -> Counts:
    rng = np.random.default_rng(seed)
    counts = Counts.empty(SLOTS)
    for _ in range(matches):
        picked = rng.choice(HEROES, 10, replace=False)
        radiant, dire = picked[:5], picked[5:]
        win = int(rng.random() < 0.5 + 0.02 * (1 in radiant) - 0.02 * (1 in dire))
        one = np.ones(1, dtype=np.int64)
        for r in radiant:
            counts.add_heroes(np.asarray([r]), one, one * win)
            for d in dire:
                counts.add_versus(np.asarray([r]), np.asarray([d]), one, one * win)
        for d in dire:
            counts.add_heroes(np.asarray([d]), one, one * (1 - win))
        for team, won in ((radiant, win), (dire, 1 - win)):
            for i, a in enumerate(sorted(team)):
                for b in sorted(team)[i + 1 :]:
                    counts.add_with(np.asarray([a]), np.asarray([b]), one, one * won)
    counts.matches = matches
    return counts


@pytest.fixture(scope="module")
def context() -> DraftContext:
    statistics = compute_statistics("7.41", SkillBracket.ALL, random_counts(3_000))
    playable = np.zeros(SLOTS, dtype=bool)
    playable[HEROES] = True
    return DraftContext(statistics, additive_model("7.41", statistics), playable)


def test_build_draft_names_the_offending_field() -> None:
    def act(order: int, hero: int, *, pick: bool = True, side: Side = Side.RADIANT) -> DraftAction:
        return DraftAction(order, pick, side, hero)

    draft = build_draft([act(0, 1, pick=False), act(1, 2), act(2, 3, side=Side.DIRE)], HEROES)
    assert draft == Draft(radiant=(2,), dire=(3,), bans=(1,))
    cases = [
        ([act(0, 99)], "ERROR_REASON_UNKNOWN_HERO", "draft.actions[0].hero_id"),
        (
            [act(0, 1), act(1, 1, side=Side.DIRE)],
            "ERROR_REASON_DUPLICATE_HERO",
            "draft.actions[1].hero_id",
        ),
        ([act(i, i + 1) for i in range(6)], "ERROR_REASON_TOO_MANY_PICKS", "draft.actions[5]"),
        ([act(1, 1)], "ERROR_REASON_INVALID_ARGUMENT", "draft.actions[0].order"),
        (
            [DraftAction(0, None, Side.RADIANT, 1)],
            "ERROR_REASON_INVALID_ARGUMENT",
            "draft.actions[0].kind",
        ),
        ([DraftAction(0, True, None, 1)], "ERROR_REASON_INVALID_ARGUMENT", "draft.actions[0].side"),
    ]
    for actions, reason, field in cases:
        with pytest.raises(InvalidArgument) as raised:
            build_draft(actions, HEROES)
        assert raised.value.reason == reason
        assert raised.value.metadata["field"] == field


def test_candidate_logits_equal_the_logit_of_the_draft_with_the_pick(
    context: DraftContext,
) -> None:
    model: DraftModel = context.model
    draft = Draft(radiant=(4, 5), dire=(6, 7, 8))
    for side in (Side.RADIANT, Side.DIRE):
        logits = model.candidate_logits(draft.radiant, draft.dire, side)
        for hero in (1, 2, 9, 30):
            radiant = (*draft.radiant, hero) if side is Side.RADIANT else draft.radiant
            dire = (*draft.dire, hero) if side is Side.DIRE else draft.dire
            assert logits[hero] == pytest.approx(model.radiant_logit(radiant, dire))


def test_suggestions_skip_taken_heroes_and_follow_the_probability(
    context: DraftContext,
) -> None:
    draft = Draft(radiant=(4,), dire=(6, 7), bans=(1, 2))
    result = suggest(context, draft, Side.RADIANT, limit=50)
    heroes = [s.hero_id for s in result.suggestions]
    assert len(heroes) == len(HEROES) - 5
    assert not {1, 2, 4, 6, 7} & set(heroes)
    for item in result.suggestions:
        assert item.interval[0] <= item.win_probability <= item.interval[1]
        assert item.win_probability_delta == pytest.approx(
            item.win_probability - result.base_win_probability
        )
    personal = {30: PersonalScore(pas=0.5, games=40)}
    boosted = suggest(context, draft, Side.RADIANT, limit=1, personal=personal)
    assert boosted.suggestions[0].hero_id == 30
    assert boosted.personalized
    enemy = suggest(context, draft, Side.DIRE, limit=5)
    assert enemy.base_win_probability == pytest.approx(1 - result.base_win_probability)
    full = Draft(radiant=(3, 4, 5, 8, 9), dire=(10, 11, 12, 13, 14))
    assert suggest(context, full, Side.RADIANT, limit=5).suggestions == []


def test_prediction_of_mirrored_drafts_mirrors(context: DraftContext) -> None:
    draft = Draft(radiant=(1, 3, 5), dire=(2, 4))
    mirrored = Draft(radiant=(2, 4), dire=(1, 3, 5))
    a, b = predict(context, draft), predict(context, mirrored)
    assert a.radiant_win_probability == pytest.approx(1 - b.radiant_win_probability, abs=1e-6)
    assert a.interval[0] < a.radiant_win_probability < a.interval[1]


def test_prior_weight_is_large_without_spread_and_finite_with_it() -> None:
    rng = np.random.default_rng(3)
    games = np.full(400, 200.0)
    expected = np.full(400, 0.5)
    noise_only = rng.binomial(200, 0.5, 400).astype(float)
    assert fit_prior_weight(noise_only, games, expected) > 2_000
    true_rates = np.clip(rng.normal(0.5, 0.08, 400), 0.05, 0.95)
    spread = rng.binomial(200, true_rates).astype(float)
    k = fit_prior_weight(spread, games, expected)
    # Beta prior with sd 0.08 around 0.5: k = p(1-p)/sd^2 - 1, about 38.
    assert 15 < k < 90


def test_personal_score_shrinks_toward_zero_and_weights_recent_play() -> None:
    day = 86_400

    def matches(wins: int, losses: int, start: int = 0) -> list[PlayerMatch]:
        return [PlayerMatch(7, True, start + i * 60, 0.5) for i in range(wins)] + [
            PlayerMatch(7, False, start + (wins + i) * 60, 0.5) for i in range(losses)
        ]

    few = hero_scores(matches(4, 0), prior_weight=20)[0]
    many = hero_scores(matches(80, 20), prior_weight=20)[0]
    assert 0 < few.pas < many.pas < 0.3
    assert few.interval[0] < few.pas < few.interval[1]
    old_losses = [PlayerMatch(7, False, 0, 0.5) for _ in range(50)]
    recent_wins = [PlayerMatch(7, True, 720 * day, 0.5) for _ in range(50)]
    recent = hero_scores(old_losses + recent_wins, prior_weight=20)[0]
    assert recent.pas > 0.2  # a year-old slump weighs a sixteenth of recent form
    assert recent.win_rate == 0.5


def test_snapshot_resolution_falls_back_and_says_so(context: DraftContext) -> None:
    # A 50-match bracket is served shrunk toward ALL, not replaced by ALL (the hard switch at
    # 2,000 matches is gone): here its heroes show no difference, so it is ALL's statistics.
    small = shrink_toward_all(
        compute_statistics("7.41", SkillBracket.HERALD_GUARDIAN, random_counts(50, seed=2)),
        context.statistics,
    )
    snapshot = ModelSnapshot(
        version=3,
        computed_at=time.time(),
        patches={
            "7.41": PatchModel(
                "7.41",
                {SkillBracket.ALL: context.statistics, SkillBracket.HERALD_GUARDIAN: small},
                context.model,
                shrunk_toward="7.40",
            )
        },
        current_patch="7.41",
        playable=context.playable,
        pas_prior_weight=20,
    )
    resolved = snapshot.context("", SkillBracket.HERALD_GUARDIAN)
    assert resolved.statistics.bracket is SkillBracket.HERALD_GUARDIAN
    np.testing.assert_allclose(resolved.statistics.base_rate, context.statistics.base_rate)
    assert any("shrunk toward 7.40" in note for note in resolved.notes)
    assert any("herald_guardian: 50 matches" in note for note in resolved.notes)
    missing = snapshot.context("", SkillBracket.DIVINE_IMMORTAL)
    assert missing.statistics.bracket is SkillBracket.ALL
    assert any("divine_immortal bracket has 0 matches" in note for note in missing.notes)
    # A known patch without statistics is answered from the nearest one with statistics: the
    # newest before it, else (older than all the data) the oldest after it, and says which.
    older = snapshot.context("7.30", SkillBracket.ALL)
    assert older.patch == "7.41"
    assert "no statistics for patch 7.30; used 7.41, the oldest patch with statistics" in (
        older.notes
    )
    newer = snapshot.context("7.42", SkillBracket.ALL)
    assert newer.patch == "7.41"
    assert "no statistics for patch 7.42 yet; used 7.41" in newer.notes


def test_page_tokens_continue_only_their_own_query() -> None:
    items = list(range(120))
    query = paging.fingerprint("matchups", 1)
    first, token = paging.slice_page(items, 50, "", query, 150)
    second, token2 = paging.slice_page(items, 50, token, query, 150)
    third, end = paging.slice_page(items, 50, token2, query, 150)
    assert [*first, *second, *third] == items
    assert end == ""
    with pytest.raises(InvalidArgument):
        paging.slice_page(items, 50, token, paging.fingerprint("matchups", 2), 150)
    with pytest.raises(InvalidArgument):
        paging.slice_page(items, 50, "not-a-token", query, 150)
    with pytest.raises(InvalidArgument):
        paging.slice_page(items, -1, "", query, 150)
    assert len(paging.slice_page(items, 0, "", query, 100)[0]) == 100
