"""Positions: the etl's lane rule on recorded parsed OpenDota matches, hero x position frequencies
recovered from planted counts, the roles prior, assignment inference on partial drafts and
position-fit ranking, on hand-made inputs (no I/O but the recorded samples)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from services.common.dota import Side, SkillBracket
from services.common.dota_constants import load_constants
from services.etl.lanes import Laner, team_positions
from services.etl.transform import from_opendota_match
from services.model.drafts import Draft, DraftContext, TermKind, suggest
from services.model.positions import (
    NEVER_FREQUENCY,
    HeroPositions,
    assign,
    hero_positions,
    open_positions,
    position_counts,
    role_prior,
)
from services.model.recompute import additive_model
from services.model.repo import decode_positions, encode_positions
from services.model.statistics import compute_statistics
from tests.unit.test_model_domain import HEROES, SLOTS, random_counts


def _match(data_dir: Path, name: str) -> dict[int, int | None]:
    raw = json.loads((data_dir / "api-samples" / name).read_text())
    return {p.player_slot: p.position for p in from_opendota_match(raw).players}


def test_parsed_opendota_matches_get_positions(data_dir: Path) -> None:
    # 2018 pro match: Radiant's safe lane Terrorblade (338 last hits) is 1 and Crystal Maiden
    # with it 5; Tiny roamed from mid: 4; Dire's roaming Nature's Prophet (safe lane, 15
    # sentries) is 5, the roaming Rubick off lane is 4, Slark the off lane core is 3.
    pro = _match(data_dir, "odota-web/matches_4080856812.json")
    assert pro == {0: 1, 1: 2, 2: 5, 3: 4, 4: 3, 128: 5, 129: 1, 130: 4, 131: 3, 132: 2}
    # 2016 ranked match: Juggernaut (safe, 202 last hits) 1, Vengeful Spirit roaming with him 5,
    # the off lane pair Ogre Magi (121) 3 and Slardar (52) 4.
    ranked = _match(data_dir, "odota-web/matches_2472899185.json")
    assert (ranked[1], ranked[4], ranked[0], ranked[3], ranked[2]) == (1, 5, 3, 4, 2)
    # 2015: Anti-Mage (safe, 197) 1 and Riki beside him 5; Legion Commander in the jungle with
    # more farm than the lone off laner Tusk takes 3 and leaves Tusk 4.
    old = _match(data_dir, "odota-core/1781962623_output.json")
    assert (old[132], old[131], old[2], old[0]) == (1, 5, 3, 4)
    # Every team is a permutation of 1..5.
    for match in (pro, ranked, old):
        for side in (range(5), range(128, 133)):
            assert sorted(match[slot] or 0 for slot in side) == [1, 2, 3, 4, 5]
    # An unparsed match (no lane_role) keeps NULL positions.
    unparsed = _match(data_dir, "odota-core/3254426673_output.json")
    assert set(unparsed.values()) == {None}


def test_lane_rule_needs_five_parsed_players() -> None:
    team = [Laner(1, last_hits=300), Laner(2), Laner(3, last_hits=200), Laner(3), Laner(1)]
    assert team_positions(team) == (1, 2, 3, 4, 5)
    assert team_positions(team[:4]) is None
    assert team_positions([*team[:4], Laner(None)]) is None


PLANTED = {
    1: (0.90, 0.10, 0.0, 0.0, 0.0),  # a carry that sometimes mids
    2: (0.0, 0.0, 0.30, 0.70, 0.0),  # a soft support that sometimes offlanes
    3: (0.0, 0.0, 0.0, 0.0, 1.0),  # a hard support
    4: (0.2, 0.2, 0.2, 0.2, 0.2),  # plays anywhere
}


def _planted_rows(games: int, seed: int = 3) -> pa.Table:
    """The warehouse's position count rows of `games` player-games per planted hero, with
    positions drawn from its planted frequencies, for patch 7.41; 7.40 has one row only."""
    rng = np.random.default_rng(seed)
    patch, hero, position, count = [], [], [], []
    for hero_id, frequency in PLANTED.items():
        drawn = np.bincount(rng.choice(5, games, p=frequency), minlength=5)
        for column, n in enumerate(drawn.tolist()):
            if n:
                patch.append("7.41")
                hero.append(hero_id)
                position.append(column + 1)
                count.append(n)
    patch.append("7.40")
    hero.append(1)
    position.append(2)
    count.append(7)
    return pa.table({"patch": patch, "hero_id": hero, "position": position, "games": count})


def test_planted_frequencies_are_recovered_and_shrunk_toward_the_prior() -> None:
    counts = position_counts(_planted_rows(2_000), SLOTS)
    assert set(counts) == {"7.41", "7.40"}
    assert counts["7.40"][1].tolist() == [0, 7, 0, 0, 0]
    prior = np.full((SLOTS, 5), 0.2)
    positions = hero_positions(prior, counts["7.41"])
    for hero_id, frequency in PLANTED.items():
        assert positions.frequency[hero_id] == pytest.approx(frequency, abs=0.03), hero_id
        assert positions.frequency[hero_id].sum() == pytest.approx(1.0)
    # A hero without games is its prior; one with few games lies between prior and data.
    assert positions.frequency[9] == pytest.approx(prior[9])
    few = hero_positions(prior, counts["7.40"])
    assert few.frequency[1, 1] == pytest.approx((7 + 20 * 0.2) / (7 + 20))
    assert 0.2 < few.frequency[1, 1] < 1.0
    assert hero_positions(prior).games == 0


def test_roles_prior_puts_carries_at_1_and_supports_at_4_or_5() -> None:
    constants = load_constants()
    prior = role_prior(constants)
    assert prior[sorted(constants.heroes)].sum(axis=1) == pytest.approx(1.0)
    anti_mage, crystal_maiden, axe = 1, 5, 2
    assert int(prior[anti_mage].argmax()) + 1 == 1
    assert int(prior[crystal_maiden].argmax()) + 1 in (4, 5)
    assert int(prior[axe].argmax()) + 1 == 3
    assert prior[crystal_maiden, 0] < NEVER_FREQUENCY  # a support's prior never carries


def _planted_positions() -> HeroPositions:
    counts = np.zeros((SLOTS, 5), dtype=np.int64)
    for hero_id, frequency in PLANTED.items():
        counts[hero_id] = np.rint(np.asarray(frequency) * 1_000).astype(np.int64)
    counts[5] = (700, 0, 300, 0, 0)  # carries or offlanes
    return hero_positions(np.full((SLOTS, 5), 0.2), counts)


def test_assignment_of_a_partial_draft() -> None:
    positions = _planted_positions()
    # Hero 1 takes 1, so hero 5 (1 or 3) moves to 3; hero 3 is the 5; hero 2 takes 4.
    assignment = assign(positions, [5, 3, 1])
    assert [(a.hero_id, a.position) for a in assignment] == [(5, 3), (3, 5), (1, 1)]
    assert assignment[0].frequency == pytest.approx(positions.frequency[5, 2])
    assert open_positions(assignment) == [2, 4]
    full = assign(positions, [5, 3, 1, 2, 4])
    assert [a.position for a in full] == [3, 5, 1, 4, 2]
    assert open_positions(full) == []
    assert assign(positions, []) == []
    assert open_positions([]) == [1, 2, 3, 4, 5]


def test_position_fit_ranks_heroes_that_play_the_position_first() -> None:
    statistics = compute_statistics("7.41", SkillBracket.ALL, random_counts(3_000))
    playable = np.zeros(SLOTS, dtype=bool)
    playable[HEROES] = True
    context = DraftContext(
        statistics,
        additive_model("7.41", statistics),
        playable,
        positions=_planted_positions(),
    )
    draft = Draft(radiant=(4,), dire=(7,))
    carry = suggest(context, draft, Side.RADIANT, limit=30, candidates=[1, 2, 3, 5], position=1)
    order = [s.hero_id for s in carry.suggestions]
    # 1 and 5 play position 1; 3 and 2 essentially never do, whatever their win gain.
    assert set(order[:2]) == {1, 5}
    assert set(order[2:]) == {2, 3}
    for item in carry.suggestions:
        fits = [t for t in item.terms if t.kind is TermKind.POSITION_FIT]
        assert len(fits) == 1
        assert fits[0].games == int(context.positions.counts[item.hero_id, 0])  # type: ignore[union-attr]
    best = {s.hero_id: s for s in carry.suggestions}
    assert next(t.value for t in best[1].terms if t.kind is TermKind.POSITION_FIT) == 0.0
    # Hard support asked: 3 first, 1 (never 5) last among them.
    support = suggest(context, draft, Side.RADIANT, limit=30, candidates=[1, 3], position=5)
    assert [s.hero_id for s in support.suggestions] == [3, 1]
    # Without a position: no fit terms, and the side's pick is assigned.
    plain = suggest(context, draft, Side.RADIANT, limit=30)
    assert all(t.kind is not TermKind.POSITION_FIT for s in plain.suggestions for t in s.terms)
    assert [(a.hero_id, a.position) for a in plain.assignment] == [(4, 1)]


def test_positions_survive_the_snapshot_encoding() -> None:
    positions = _planted_positions()
    again = decode_positions(encode_positions(positions))
    assert np.array_equal(again.counts, positions.counts)
    assert np.allclose(again.frequency, positions.frequency)
    assert again.prior_weight == positions.prior_weight
