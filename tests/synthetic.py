"""Synthetic matches drawn from a hidden ground-truth draft model, for recovery tests and benches.

Real match data cannot tell whether the statistics pipeline finds what is there, because nobody
knows what is there. Here the truth is planted: every hero has a strength, every unordered
same-team pair a synergy and every ordered cross-team pair an antisymmetric matchup effect, all
on the log-odds scale, plus a Radiant bias:

    logit P(radiant win) = bias + sum s(R) - sum s(D)
                           + sum_{i<j} S(R_i, R_j) - sum_{i<j} S(D_i, D_j)
                           + sum_{r in R, d in D} M(r, d)

Sizes follow public Dota numbers: strengths a few win-rate points (sd 0.15 logit), pair effects
sd 0.1 logit but Laplace-shaped so most are near zero and a few are real counters, and pick
rates that differ by more than 10x between the most and the least popular heroes.

Pair effects are centred so that, averaged over the teammates and opponents a hero actually
meets (weighted by pick rate), they are zero. Without that a hero's strength and the mean of
its pair effects are the same observable and no pipeline could tell them apart; with it the
planted strength is what the hero's base win rate measures and the planted pair effect is what
a pair's deviation from the additive expectation measures.

Everything is vectorised numpy in fixed blocks of matches, each with its own seed, so a million
matches take a couple of seconds, the output is deterministic for a seed, and a smaller request
is a prefix of a larger one (whole blocks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from services.common.dota import Side, SkillBracket
from services.common.dota_constants import load_constants
from services.common.warehouse.schema import MATCH_SCHEMA
from services.etl.matches import CleanMatch, MatchSource, PlayerRow
from services.model.statistics import Counts, FloatArray, IntArray

BoolArray = npt.NDArray[np.bool_]

# Matches per generated block: each block has its own random stream (seed, patch salt, block).
BLOCK = 1 << 16
# Share of matches per stored skill bracket, roughly the public-match mix (unknown = no rank).
BRACKET_SHARES: dict[str, float] = {
    "herald_guardian": 0.12,
    "crusader_archon": 0.25,
    "legend_ancient": 0.30,
    "divine_immortal": 0.18,
    "unknown": 0.15,
}
BRACKET_NAMES: tuple[str, ...] = tuple(BRACKET_SHARES)
# The two medals (tens digit of rank tier) of each ranked bracket.
_BRACKET_MEDALS = {
    "herald_guardian": (1, 2),
    "crusader_archon": (3, 4),
    "legend_ancient": (5, 6),
    "divine_immortal": (7, 8),
}
# Index pairs of the 10 same-team pairs and the 25 cross-team pairs of a 5v5 draft.
_TEAM_I, _TEAM_J = np.triu_indices(5, k=1)
_CROSS_I, _CROSS_J = (axis.ravel() for axis in np.indices((5, 5)))
DEFAULT_FIRST_MATCH_ID = 8_000_000_000
DEFAULT_PERIOD_SECONDS = 14 * 86_400
_FALLBACK_START = 1_780_000_000


@dataclass(frozen=True)
class GroundTruth:
    """The hidden model. Arrays are indexed by Valve hero id (H = max id + 1 slots); slots of
    ids that are not heroes are 0 everywhere."""

    hero_ids: IntArray  # (K,) the real hero ids, ascending
    pick_weight: FloatArray  # (H,) relative pick propensity
    strength: FloatArray  # (H,) log-odds
    synergy: FloatArray  # (H, H) symmetric, zero diagonal: log-odds for the pair's team
    matchup: FloatArray  # (H, H) antisymmetric: log-odds for a's team when a faces b
    radiant_bias: float

    @property
    def hero_slots(self) -> int:
        """H."""
        return int(self.strength.shape[0])

    def radiant_logit(self, radiant: IntArray, dire: IntArray) -> FloatArray:
        """Log-odds of a Radiant win for drafts given as (n, 5) hero id arrays."""
        h = self.hero_slots
        synergy, matchup = self.synergy.ravel(), self.matchup.ravel()
        result: FloatArray = (
            self.radiant_bias
            + self.strength[radiant].sum(axis=1)
            - self.strength[dire].sum(axis=1)
            + synergy[radiant[:, _TEAM_I] * h + radiant[:, _TEAM_J]].sum(axis=1)
            - synergy[dire[:, _TEAM_I] * h + dire[:, _TEAM_J]].sum(axis=1)
            + matchup[radiant[:, _CROSS_I] * h + dire[:, _CROSS_J]].sum(axis=1)
        )
        return result

    def pick_rates(self) -> FloatArray:
        """Normalised pick weights (sum 1 over heroes): the weights the effects are centred by."""
        total = self.pick_weight.sum()
        rates: FloatArray = self.pick_weight / total
        return rates


def plant_truth(
    seed: int,
    *,
    hero_ids: Sequence[int] | None = None,
    strength_sd: float = 0.15,
    pair_sd: float = 0.10,
    popularity_sd: float = 0.6,
    radiant_bias: float = 0.1,
    pair_effects: bool = True,
) -> GroundTruth:
    """A random truth over the real heroes (or `hero_ids`).

    popularity_sd is the log-normal spread of pick weights: 0.6 puts the 5th and 95th percentile
    heroes about 7x apart and the extremes more than 10x. pair_effects=False plants no synergy
    or matchup at all (the null case for the prior-weight fit).
    """
    rng = np.random.default_rng([seed, 0x7E57])
    ids: IntArray = np.asarray(
        sorted(hero_ids if hero_ids is not None else load_constants().heroes), dtype=np.int64
    )
    k, h = ids.size, int(ids.max()) + 1
    weight = np.exp(rng.normal(0.0, popularity_sd, k))
    strength = rng.normal(0.0, strength_sd, k)
    # Laplace: same sd as a normal, but about half the pairs within +-0.05 logit (+-1.25 win-rate
    # points) and a tail of strong counters and combos, as public matchup tables look.
    scale = pair_sd / np.sqrt(2.0)
    raw_synergy = np.triu(rng.laplace(0.0, scale, (k, k)), 1)
    raw_matchup = np.triu(rng.laplace(0.0, scale, (k, k)), 1)
    if not pair_effects:
        raw_synergy[:] = 0.0
        raw_matchup[:] = 0.0
    rates = weight / weight.sum()
    synergy = _centred_symmetric(raw_synergy + raw_synergy.T, rates)
    matchup = _centred_antisymmetric(raw_matchup - raw_matchup.T, rates)
    return GroundTruth(
        hero_ids=ids,
        pick_weight=_embed(ids, weight, h),
        strength=_embed(ids, strength, h),
        synergy=_embed_square(ids, synergy, h),
        matchup=_embed_square(ids, matchup, h),
        radiant_bias=radiant_bias,
    )


def shift_truth(
    truth: GroundTruth,
    seed: int,
    *,
    changed_heroes: int = 12,
    change_sd: float = 0.2,
    drift_sd: float = 0.03,
    redrawn_pairs: float = 0.1,
    pair_sd: float = 0.10,
) -> GroundTruth:
    """The truth of the next patch: a dozen heroes buffed or nerfed (sd 0.2 logit), a small
    drift for everyone, a tenth of the pair effects redrawn, and the meta following the changes
    (a buffed hero gets picked more: weight x exp(2 * change))."""
    rng = np.random.default_rng([seed, 0x5A1F])
    ids, h = truth.hero_ids, truth.hero_slots
    k = ids.size
    delta = rng.normal(0.0, drift_sd, k)
    changed = rng.choice(k, size=min(changed_heroes, k), replace=False)
    delta[changed] += rng.normal(0.0, change_sd, changed.size)
    weight = truth.pick_weight[ids] * np.exp(2.0 * delta)
    rates = weight / weight.sum()
    scale = pair_sd / np.sqrt(2.0)

    def redrawn(old: FloatArray, antisymmetric: bool) -> FloatArray:
        upper = np.triu(old[np.ix_(ids, ids)], 1)
        fresh = np.triu(rng.laplace(0.0, scale, (k, k)), 1)
        mask = np.triu(rng.random((k, k)) < redrawn_pairs, 1)
        upper = np.where(mask, fresh, upper)
        if antisymmetric:
            return _centred_antisymmetric(upper - upper.T, rates)
        return _centred_symmetric(upper + upper.T, rates)

    return replace(
        truth,
        pick_weight=_embed(ids, weight, h),
        strength=_embed(ids, truth.strength[ids] + delta, h),
        synergy=_embed_square(ids, redrawn(truth.synergy, False), h),
        matchup=_embed_square(ids, redrawn(truth.matchup, True), h),
    )


@dataclass(frozen=True)
class SyntheticMatches:
    """Generated 5v5 draft-only matches of one patch, column-wise."""

    patch: str
    match_id: npt.NDArray[np.uint64]
    start_time: npt.NDArray[np.uint32]
    bracket: npt.NDArray[np.int8]  # index into BRACKET_NAMES
    avg_rank_tier: npt.NDArray[np.uint8]  # 0 where the bracket is unknown (stored as NULL)
    radiant: IntArray  # (n, 5) ascending hero ids
    dire: IntArray  # (n, 5) ascending hero ids
    radiant_win: BoolArray

    def __len__(self) -> int:
        return int(self.match_id.shape[0])

    @property
    def next_match_id(self) -> int:
        """The first id after these matches (to append more without collisions)."""
        return int(self.match_id[-1]) + 1 if len(self) else DEFAULT_FIRST_MATCH_ID

    def slice(self, start: int, stop: int) -> SyntheticMatches:
        """Rows start..stop-1 (views, no copy)."""
        return SyntheticMatches(
            self.patch,
            self.match_id[start:stop],
            self.start_time[start:stop],
            self.bracket[start:stop],
            self.avg_rank_tier[start:stop],
            self.radiant[start:stop],
            self.dire[start:stop],
            self.radiant_win[start:stop],
        )

    def to_arrow(self) -> pa.Table:
        """A `MATCH_SCHEMA` table for `insert_draft_table`, built from numpy buffers
        (no per-row Python objects, so a million rows take well under a second)."""
        n = len(self)
        duration = (1_500 + (self.match_id % np.uint64(2_700))).astype(np.uint32)
        rank = pa.array(self.avg_rank_tier, mask=self.avg_rank_tier == 0)
        brackets = pa.array(BRACKET_NAMES).take(pa.array(self.bracket))
        return pa.table(
            [
                pa.array(self.match_id),
                pa.array(self.match_id),
                pa.array(self.start_time),
                pa.array(duration),
                pa.array([self.patch]).take(pa.array(np.zeros(n, dtype=np.int8))),
                pa.array(np.full(n, 22, dtype=np.uint8)),  # all pick
                pa.array(np.full(n, 7, dtype=np.uint8)),  # ranked
                pa.array((111 + self.match_id % np.uint64(40)).astype(np.uint16)),
                pa.array((1 + self.match_id % np.uint64(20)).astype(np.uint16)),
                rank,
                brackets,
                pa.array(self.radiant_win),
                pa.array(["import"]).take(pa.array(np.zeros(n, dtype=np.int8))),
                _list_column(self.radiant),
                _list_column(self.dire),
            ],
            schema=MATCH_SCHEMA,
        )


def generate_matches(
    truth: GroundTruth,
    count: int,
    *,
    patch: str = "7.41",
    seed: int = 0,
    first_match_id: int = DEFAULT_FIRST_MATCH_ID,
    start_time: int | None = None,
    period_seconds: int = DEFAULT_PERIOD_SECONDS,
) -> SyntheticMatches:
    """`count` matches of `patch` drawn from `truth`.

    Drafts: 10 distinct heroes drawn without replacement with probability proportional to pick
    weight (Gumbel top-k via exponential keys), dealt to the sides at random, so neither side is
    favoured. Start times are spread uniformly over `period_seconds` from the patch's release
    (from dotaconstants when the patch is known) and increase with the match id, as on Valve's
    servers.
    """
    if start_time is None:
        known = load_constants().patch_named(patch)
        start_time = int(known.released_at.timestamp()) if known else _FALLBACK_START
    salt = int.from_bytes(patch.encode()[:8].ljust(8, b"\0"), "little")
    blocks = [
        _block(truth, np.random.default_rng([seed, salt, index]))
        for index in range(max(1, (count + BLOCK - 1) // BLOCK))
    ]
    radiant, dire, win, bracket, rank = (
        np.concatenate([block[column] for block in blocks])[:count] for column in range(5)
    )
    offsets = np.sort(
        np.random.default_rng([seed, salt, 0x717E]).integers(0, period_seconds, count)
    )
    return SyntheticMatches(
        patch=patch,
        match_id=np.arange(first_match_id, first_match_id + count, dtype=np.uint64),
        start_time=(start_time + offsets).astype(np.uint32),
        bracket=bracket,
        avg_rank_tier=rank,
        radiant=radiant,
        dire=dire,
        radiant_win=win,
    )


def count_matches(
    batches: Iterable[SyntheticMatches], hero_slots: int
) -> dict[tuple[str, SkillBracket], Counts]:
    """The Counts `read_counts` should return for these matches, counted in numpy.

    An independent reference for the warehouse SQL: same keys (every patch and stored bracket,
    plus ALL per patch), same orientation (versus[a, b] = games of a against b, wins of a's
    team; with symmetric), counted by `Counts.from_drafts`.
    """
    h = hero_slots
    result: dict[tuple[str, SkillBracket], Counts] = {}
    for matches in batches:
        for code, name in enumerate(BRACKET_NAMES):
            chosen = matches.bracket == code
            if not chosen.any():
                continue
            part = Counts.from_drafts(
                matches.radiant[chosen], matches.dire[chosen], matches.radiant_win[chosen], h
            )
            for key in ((matches.patch, SkillBracket(name)), (matches.patch, SkillBracket.ALL)):
                if key in result:
                    result[key].merge(part)
                else:
                    result[key] = part.copy()
    return result


def _block(
    truth: GroundTruth, rng: np.random.Generator
) -> tuple[IntArray, IntArray, BoolArray, npt.NDArray[np.int8], npt.NDArray[np.uint8]]:
    ids = truth.hero_ids
    weight = truth.pick_weight[ids].astype(np.float32)
    # Exponential(1) / weight, smallest 10 = weighted sampling without replacement.
    keys = rng.standard_exponential((BLOCK, ids.size), dtype=np.float32) / weight
    top = np.argpartition(keys, 10, axis=1)[:, :10]
    # argpartition's order inside the top 10 depends on the keys; deal sides by a fresh shuffle.
    top = np.take_along_axis(top, np.argsort(rng.random((BLOCK, 10)), axis=1), axis=1)
    drafted = ids[top]
    radiant, dire = np.sort(drafted[:, :5], axis=1), np.sort(drafted[:, 5:], axis=1)
    probability = 1.0 / (1.0 + np.exp(-truth.radiant_logit(radiant, dire)))
    win = rng.random(BLOCK) < probability
    shares = np.asarray(list(BRACKET_SHARES.values()))
    bracket = rng.choice(len(BRACKET_NAMES), size=BLOCK, p=shares / shares.sum()).astype(np.int8)
    medals = np.asarray(
        [_BRACKET_MEDALS.get(name, (0, 0)) for name in BRACKET_NAMES], dtype=np.int64
    )
    medal = medals[bracket, rng.integers(0, 2, BLOCK)]
    rank = np.where(medal > 0, medal * 10 + rng.integers(1, 6, BLOCK), 0).astype(np.uint8)
    return radiant, dire, win, bracket, rank


def _centred_symmetric(effect: FloatArray, rates: FloatArray) -> FloatArray:
    """Double-centre a symmetric matrix so every row's rate-weighted mean is 0."""
    np.fill_diagonal(effect, 0.0)
    row = effect @ rates
    centred: FloatArray = effect - row[:, None] - row[None, :] + rates @ row
    np.fill_diagonal(centred, 0.0)
    return centred


def _centred_antisymmetric(effect: FloatArray, rates: FloatArray) -> FloatArray:
    """Centre an antisymmetric matrix (stays antisymmetric, rows' rate-weighted means 0:
    sum_b w_b (M_ab - r_a + r_b) = r_a - r_a + w.M.w, and w.M.w = 0 for antisymmetric M)."""
    row = effect @ rates
    centred: FloatArray = effect - row[:, None] + row[None, :]
    return centred


def _embed(ids: IntArray, values: FloatArray, h: int) -> FloatArray:
    full: FloatArray = np.zeros(h)
    full[ids] = values
    return full


def _embed_square(ids: IntArray, values: FloatArray, h: int) -> FloatArray:
    full: FloatArray = np.zeros((h, h))
    full[np.ix_(ids, ids)] = values
    return full


def _list_column(heroes: IntArray) -> pa.ListArray:
    n, width = heroes.shape
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(heroes.ravel().astype(np.uint16)))


def position_matches(
    count: int, seed: int, planted: Mapping[int, int], patch: str, start_time: int
) -> list[CleanMatch]:
    """Random 5v5 matches of `patch` whose players carry positions: the `planted` heroes (hero ->
    position) always in theirs, the others in a random order of what is left."""
    rng = np.random.default_rng(seed)
    heroes = np.asarray(sorted(load_constants().heroes))
    matches = []
    for index in range(count):
        picked = [int(h) for h in rng.choice(heroes, 10, replace=False)]
        players = []
        for side, team, first_slot in (
            (Side.RADIANT, picked[:5], 0),
            (Side.DIRE, picked[5:], 128),
        ):
            free = [p for p in range(1, 6) if p not in {planted.get(h) for h in team}]
            rng.shuffle(free)
            rest = iter(free)
            for offset, hero in enumerate(team):
                position = planted.get(hero) or next(rest)
                players.append(PlayerRow(hero, side, first_slot + offset, position=position))
        matches.append(
            CleanMatch(
                match_id=index + 1,
                radiant_win=bool(rng.random() < 0.5),
                source=MatchSource.IMPORT,
                players=tuple(players),
                start_time=start_time,
                patch=patch,
                avg_rank_tier=55,
            )
        )
    return matches
