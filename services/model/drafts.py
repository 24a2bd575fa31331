"""Drafts and pick/ban suggestions with their explanations, from the served win model.

Pure domain code: numpy arrays indexed by Valve hero id; no protobuf, no storage. The served model
is decomposable (hero weights, same-team pair weights, cross-team pair weights on the logit scale,
then a monotone calibration map), which is what lets one numpy expression score every candidate
pick at once: a suggestion costs tens of microseconds, not one model call per hero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from services.common.dota import TEAM_SIZE, Side
from services.common.errors import InvalidArgument
from services.model.positions import Assignment, HeroPositions, assign
from services.model.statistics import BracketStatistics, FloatArray
from services.model.winmodel.served import DraftModel

MAX_SUGGESTIONS = 50
DEFAULT_SUGGESTIONS = 10
Z_95 = 1.959963984540054
# Ranking penalty per unit of the win-probability interval's half width: between two heroes with
# the same expected gain, the one we know more about ranks first.
SMALL_SAMPLE_PENALTY = 0.25


class TermKind(StrEnum):
    """What one explanation term measures (mirrors counterpick.model.v1.TermKind)."""

    HERO_STRENGTH = "hero_strength"
    MATCHUP = "matchup"
    SYNERGY = "synergy"
    PERSONAL = "personal"
    POSITION_FIT = "position_fit"


class DraftProblem(StrEnum):
    """Why a draft is rejected (each maps to an ErrorReason of the API)."""

    UNKNOWN_HERO = "ERROR_REASON_UNKNOWN_HERO"
    DUPLICATE_HERO = "ERROR_REASON_DUPLICATE_HERO"
    TOO_MANY_PICKS = "ERROR_REASON_TOO_MANY_PICKS"
    INVALID = "ERROR_REASON_INVALID_ARGUMENT"


def draft_error(
    problem: DraftProblem, message: str, field_name: str, **metadata: str
) -> InvalidArgument:
    """The INVALID_ARGUMENT a bad draft answers with."""
    return InvalidArgument(message, field=field_name, reason=problem.value, metadata=metadata)


@dataclass(frozen=True)
class Draft:
    """Picks per side and bans, validated: known heroes, each at most once, <= 5 picks a side."""

    radiant: tuple[int, ...] = ()
    dire: tuple[int, ...] = ()
    bans: tuple[int, ...] = ()

    def picks(self, side: Side) -> tuple[int, ...]:
        """The heroes `side` picked."""
        return self.radiant if side is Side.RADIANT else self.dire

    def taken(self) -> set[int]:
        """Every hero no longer available."""
        return {*self.radiant, *self.dire, *self.bans}


@dataclass(frozen=True)
class DraftAction:
    """One pick or ban as a request states it (already decoded from the API)."""

    order: int
    is_pick: bool | None  # None: kind unspecified
    side: Side | None  # None: side unspecified
    hero_id: int


def build_draft(actions: Sequence[DraftAction], known_heroes: Iterable[int]) -> Draft:
    """Validate a request's actions into a Draft, naming the first offending field."""
    known = set(known_heroes)
    radiant: list[int] = []
    dire: list[int] = []
    bans: list[int] = []
    seen: set[int] = set()
    for index, action in enumerate(actions):
        where = f"draft.actions[{index}]"
        if action.order != index:
            raise draft_error(
                DraftProblem.INVALID,
                f"{where}.order is {action.order}; actions must be numbered 0, 1, 2, ... in order",
                f"{where}.order",
            )
        if action.is_pick is None:
            raise draft_error(DraftProblem.INVALID, f"{where}.kind is unspecified", f"{where}.kind")
        if action.side is None:
            raise draft_error(DraftProblem.INVALID, f"{where}.side is unspecified", f"{where}.side")
        hero = action.hero_id
        if hero not in known:
            raise draft_error(
                DraftProblem.UNKNOWN_HERO,
                f"{where}.hero_id {hero} is not a known hero",
                f"{where}.hero_id",
                hero_id=str(hero),
            )
        if hero in seen:
            raise draft_error(
                DraftProblem.DUPLICATE_HERO,
                f"{where}.hero_id {hero} is already picked or banned in this draft",
                f"{where}.hero_id",
                hero_id=str(hero),
            )
        seen.add(hero)
        if not action.is_pick:
            bans.append(hero)
            continue
        team = radiant if action.side is Side.RADIANT else dire
        if len(team) == TEAM_SIZE:
            raise draft_error(
                DraftProblem.TOO_MANY_PICKS,
                f"{where} would be pick number {TEAM_SIZE + 1} of {action.side.name.lower()}",
                where,
            )
        team.append(hero)
    return Draft(tuple(radiant), tuple(dire), tuple(bans))


# Not frozen: frozen dataclasses pay object.__setattr__ per field, and a suggestion builds about
# a hundred terms. Treat them as immutable all the same.
@dataclass(slots=True)
class Term:
    """One explanation term, from the perspective of the side it is about."""

    kind: TermKind
    value: float  # win-rate points
    games: int
    other_hero_id: int | None = None


@dataclass(slots=True)
class Suggestion:
    """A hero ranked for a pick (our side) or a ban (the enemy's would-be pick)."""

    hero_id: int
    win_probability: float
    win_probability_delta: float
    score: float
    interval: tuple[float, float]
    games: int
    terms: tuple[Term, ...]


@dataclass(frozen=True)
class PersonalScore:
    """A player's PAS on one hero (see pas.py), as suggestions use it."""

    pas: float
    games: int


@dataclass(frozen=True)
class SuggestionResult:
    """Suggestions and the picking side's win probability before the pick."""

    base_win_probability: float
    suggestions: list[Suggestion]
    personalized: bool = False
    # The side's picks assigned to positions (empty when the snapshot has no positions).
    assignment: tuple[Assignment, ...] = ()


@dataclass(frozen=True)
class DraftContext:
    """What a suggestion needs besides the draft: one patch and bracket's statistics and model."""

    statistics: BracketStatistics
    model: DraftModel
    playable: npt.NDArray[np.bool_]  # (H,) heroes that exist in the patch
    notes: tuple[str, ...] = field(default=())
    # The patch whose statistics these are (an older one when the asked patch has none yet).
    patch: str = ""
    # Where the patch's heroes play; None in snapshots published before positions were kept.
    positions: HeroPositions | None = None


def clamp_limit(limit: int) -> int:
    """The API's limit rule: 0 means the default; above the maximum means the maximum."""
    if limit < 0:
        raise draft_error(DraftProblem.INVALID, f"limit {limit} is negative", "limit")
    return DEFAULT_SUGGESTIONS if limit == 0 else min(limit, MAX_SUGGESTIONS)


def _side_probability(model: DraftModel, logits: FloatArray, side: Side) -> FloatArray:
    radiant = model.probability(logits)
    return radiant if side is Side.RADIANT else 1.0 - radiant


def _logit_variance(context: DraftContext, draft: Draft, side: Side) -> FloatArray:
    """Approximate variance of every candidate's logit: a diagonal Laplace approximation in
    which each weight's precision is its prior precision plus a quarter of its games."""
    stats, model = context.statistics, context.model
    hero_var = 1.0 / (model.hero_prior_precision + 0.25 * stats.hero_games)
    pair_prec = model.pair_prior_precision
    allies = np.asarray(draft.picks(side), dtype=np.intp)
    enemies = np.asarray(draft.picks(side.other), dtype=np.intp)
    drafted = np.asarray([*draft.radiant, *draft.dire], dtype=np.intp)
    fixed = float(hero_var[drafted].sum()) if drafted.size else 0.0
    candidate: FloatArray = hero_var.astype(np.float64)
    if allies.size:
        candidate += (1.0 / (pair_prec + 0.25 * stats.synergies.games[:, allies])).sum(axis=1)
    if enemies.size:
        candidate += (1.0 / (pair_prec + 0.25 * stats.matchups.games[:, enemies])).sum(axis=1)
    return candidate + fixed


def suggest(
    context: DraftContext,
    draft: Draft,
    side: Side,
    *,
    limit: int,
    candidates: Iterable[int] = (),
    personal: Mapping[int, PersonalScore] | None = None,
    position: int | None = None,
) -> SuggestionResult:
    """Rank every legal hero by how much `side` picking it raises `side`'s win probability.

    For bans, call with the enemy as `side`: the heroes that would help the enemy most. With a
    `position` (1..5) and positions in the context, each hero's POSITION_FIT term (see
    services/model/positions.py) enters its score, so heroes that do not play it sink.
    """
    model, stats = context.model, context.statistics
    hero_slots = stats.hero_slots
    positions = context.positions
    assignment = tuple(assign(positions, draft.picks(side))) if positions is not None else ()
    if len(draft.picks(side)) >= TEAM_SIZE:
        base = _side_probability(
            model, np.asarray([model.radiant_logit(draft.radiant, draft.dire)]), side
        )[0]
        return SuggestionResult(float(base), [], assignment=assignment)
    legal = context.playable.copy()
    taken = np.asarray(sorted(draft.taken()), dtype=np.intp)
    legal[taken] = False
    wanted = list(candidates)
    if wanted:
        only = np.zeros(hero_slots, dtype=bool)
        only[np.asarray(wanted, dtype=np.intp)] = True
        legal &= only
    base_logit = model.radiant_logit(draft.radiant, draft.dire)
    base_probability = float(_side_probability(model, np.asarray([base_logit]), side)[0])
    logits = model.candidate_logits(draft.radiant, draft.dire, side, base_logit)
    probability = _side_probability(model, logits, side)
    delta = probability - base_probability
    # Interval on the logit scale mapped through the (monotone) calibration: in the side's terms.
    half_logit = Z_95 * np.sqrt(_logit_variance(context, draft, side))
    low = _side_probability(model, logits - half_logit, side)
    high = _side_probability(model, logits + half_logit, side)
    lower: FloatArray = np.minimum(low, high)
    upper: FloatArray = np.maximum(low, high)
    personal_value = np.zeros(hero_slots)
    if personal:
        for hero, personal_score in personal.items():
            if 0 <= hero < hero_slots:
                personal_value[hero] = personal_score.pas
    score = delta + personal_value - SMALL_SAMPLE_PENALTY * (upper - lower) / 2.0
    fit: tuple[FloatArray, npt.NDArray[np.int64]] | None = None
    if position is not None and positions is not None:
        fit = positions.fit(position), positions.position_games(position)
        score = score + fit[0] - positions.off_position_penalty(position)
    indices = np.flatnonzero(legal)
    count = min(limit, indices.size)
    if count == 0:
        return SuggestionResult(base_probability, [], assignment=assignment)
    top = indices[np.argpartition(-score[indices], count - 1)[:count]]
    top = top[np.lexsort((top, -score[top]))]
    allies, enemies = draft.picks(side), draft.picks(side.other)
    heroes = top.tolist()
    explanations = _terms(stats, heroes, allies, enemies, personal, fit=fit)
    rows = zip(
        heroes,
        probability[top].tolist(),
        delta[top].tolist(),
        score[top].tolist(),
        lower[top].tolist(),
        upper[top].tolist(),
        stats.hero_games[top].tolist(),
        explanations,
        strict=True,
    )
    suggestions = [
        Suggestion(
            hero_id=hero,
            win_probability=p,
            win_probability_delta=gain,
            score=rank,
            interval=(low_p, high_p),
            games=games,
            terms=terms,
        )
        for hero, p, gain, rank, low_p, high_p, games, terms in rows
    ]
    personalized = bool(personal) and any(s.hero_id in (personal or {}) for s in suggestions)
    return SuggestionResult(base_probability, suggestions, personalized, assignment)


def _terms(
    stats: BracketStatistics,
    heroes: list[int],
    allies: Sequence[int],
    enemies: Sequence[int],
    personal: Mapping[int, PersonalScore] | None,
    *,
    fit: tuple[FloatArray, npt.NDArray[np.int64]] | None = None,
) -> list[tuple[Term, ...]]:
    """The explanation of each hero, gathered for all of them at once: per-element numpy
    access would cost more than the whole ranking. `fit`: the POSITION_FIT value and games of
    every hero id, when a position was asked for."""
    index = np.asarray(heroes, dtype=np.intp)
    fit_values = fit[0][index].tolist() if fit is not None else None
    fit_games = fit[1][index].tolist() if fit is not None else None
    strengths = (stats.base_rate[index] - 0.5).tolist()
    hero_games = stats.hero_games[index].tolist()
    enemy_list, ally_list = list(enemies), list(allies)
    matchup_values = stats.matchups.score[index][:, enemy_list].tolist()
    matchup_games = stats.matchups.games[index][:, enemy_list].tolist()
    synergy_values = stats.synergies.score[index][:, ally_list].tolist()
    synergy_games = stats.synergies.games[index][:, ally_list].tolist()
    matchup, synergy, strength = TermKind.MATCHUP, TermKind.SYNERGY, TermKind.HERO_STRENGTH
    result = []
    for row, hero in enumerate(heroes):
        terms = [Term(strength, strengths[row], hero_games[row])]
        terms += [
            Term(matchup, value, games, enemy)
            for value, games, enemy in zip(
                matchup_values[row], matchup_games[row], enemy_list, strict=True
            )
        ]
        terms += [
            Term(synergy, value, games, ally)
            for value, games, ally in zip(
                synergy_values[row], synergy_games[row], ally_list, strict=True
            )
        ]
        if personal and hero in personal:
            terms.append(Term(TermKind.PERSONAL, personal[hero].pas, personal[hero].games))
        if fit_values is not None and fit_games is not None:
            terms.append(Term(TermKind.POSITION_FIT, fit_values[row], fit_games[row]))
        result.append(tuple(terms))
    return result


@dataclass(frozen=True)
class PredictionTerm:
    """A term of a win prediction, signed toward Radiant."""

    kind: TermKind
    side: Side
    hero_id: int
    value: float
    games: int
    other_hero_id: int | None = None


@dataclass(frozen=True)
class Prediction:
    """P(Radiant wins) of a draft, its interval and its explanation."""

    radiant_win_probability: float
    interval: tuple[float, float]
    terms: tuple[PredictionTerm, ...]


def predict(context: DraftContext, draft: Draft) -> Prediction:
    """Calibrated P(Radiant wins) for a (partial) draft."""
    model, stats = context.model, context.statistics
    logit = model.radiant_logit(draft.radiant, draft.dire)
    drafted = np.asarray([*draft.radiant, *draft.dire], dtype=np.intp)
    variance = float((1.0 / (model.hero_prior_precision + 0.25 * stats.hero_games[drafted])).sum())
    pair_prec = model.pair_prior_precision
    for team in (draft.radiant, draft.dire):
        for i, a in enumerate(team):
            for b in team[i + 1 :]:
                variance += 1.0 / (pair_prec + 0.25 * stats.synergies.games[a, b])
    for r in draft.radiant:
        for d in draft.dire:
            variance += 1.0 / (pair_prec + 0.25 * stats.matchups.games[r, d])
    half = Z_95 * math.sqrt(variance)
    probabilities = model.probability(np.asarray([logit, logit - half, logit + half]))
    terms: list[PredictionTerm] = []
    for side, team in ((Side.RADIANT, draft.radiant), (Side.DIRE, draft.dire)):
        sign = 1.0 if side is Side.RADIANT else -1.0
        for i, hero in enumerate(team):
            terms.append(
                PredictionTerm(
                    TermKind.HERO_STRENGTH,
                    side,
                    hero,
                    sign * float(stats.base_rate[hero] - 0.5),
                    int(stats.hero_games[hero]),
                )
            )
            for ally in team[i + 1 :]:
                terms.append(
                    PredictionTerm(
                        TermKind.SYNERGY,
                        side,
                        hero,
                        sign * float(stats.synergies.score[hero, ally]),
                        int(stats.synergies.games[hero, ally]),
                        ally,
                    )
                )
    for r in draft.radiant:
        for d in draft.dire:
            terms.append(
                PredictionTerm(
                    TermKind.MATCHUP,
                    Side.RADIANT,
                    r,
                    float(stats.matchups.score[r, d]),
                    int(stats.matchups.games[r, d]),
                    d,
                )
            )
    return Prediction(
        float(probabilities[0]), (float(probabilities[1]), float(probabilities[2])), tuple(terms)
    )
