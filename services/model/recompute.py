"""A recompute run: counts from the warehouse -> statistics -> win models -> a published snapshot.

Full runs recount everything and refit the win models; incremental runs count only the matches
stored since the previous run's watermark, add them to the counts kept in memory and rebuild the
statistics of the patches they touch, so the cost follows the new matches, not the history, and
can run every minute. Every run that reads counts is recorded (start, end, matches, coverage,
quality, status); a scheduled incremental run that finds no new match records nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from services.common.dota import SkillBracket
from services.common.dota_constants import DotaConstants
from services.common.warehouse.reader import WarehouseReader
from services.model.pas import fit_pas_prior_weight
from services.model.positions import IntArray, hero_positions, position_counts, role_prior
from services.model.snapshot import ModelSnapshot, PatchModel, RunRecord
from services.model.statistics import (
    BracketStatistics,
    Counts,
    FloatArray,
    compute_statistics,
    logit,
    shrink_brackets,
)
from services.model.warehouse_counts import PatchBracket, read_counts
from services.model.winmodel.data import Drafts
from services.model.winmodel.metrics import evaluate
from services.model.winmodel.models import PairwiseLogistic, default_blend
from services.model.winmodel.served import DraftModel

log = logging.getLogger(__name__)

# A patch with fewer matches borrows the previous patch's counts, scaled so that together they
# weigh this many matches: a day-old patch answers from mostly old data and says so.
MIN_PATCH_MATCHES = 20_000
CALIBRATION_POINTS = 121
# Version prefix of the statistics-derived model (additive_model).
ADDITIVE_PREFIX = "additive-"

ModelFitter = Callable[[str, BracketStatistics, pa.Table], DraftModel]
Progress = Callable[[str, float], None]


class Publisher(Protocol):
    """Where snapshots and run records go (SnapshotStore)."""

    async def next_version(self) -> int: ...

    async def publish(self, snapshot: ModelSnapshot) -> None: ...

    async def record_run(self, run: RunRecord) -> None: ...

    async def runs(self, limit: int = 20) -> list[RunRecord]: ...


def additive_model(patch: str, statistics: BracketStatistics) -> DraftModel:
    """The statistics read as a win model: logit strength of each hero, plus the log-odds synergy
    of each allied pair and the log-odds advantage of each cross-team pair.

    Needs no training pass over matches, so it is the fallback wherever no fitted model exists.
    """
    rates = np.clip(statistics.base_rate, 0.01, 0.99)
    hero_weight: FloatArray = logit(rates)
    synergy: FloatArray = statistics.synergies.log_odds.copy()
    np.fill_diagonal(synergy, 0.0)
    matchup_raw = statistics.matchups.log_odds
    matchup: FloatArray = (matchup_raw - matchup_raw.T) / 2.0  # exactly antisymmetric
    grid: FloatArray = np.linspace(-6.0, 6.0, CALIBRATION_POINTS)
    return DraftModel(
        version=f"{ADDITIVE_PREFIX}{patch}-{statistics.matches}",
        bias=0.0,
        hero_weight=hero_weight,
        synergy=synergy,
        matchup=matchup,
        calibration_logits=grid,
        calibration_probabilities=1.0 / (1.0 + np.exp(-grid)),
        trained_at=time.time(),
        matches_used=statistics.matches,
        # A shrunk rate's posterior precision on the logit scale is about (games + k) / 4, so
        # the prior contributes k / 4: the uncertainty of the terms is the statistics' own.
        hero_prior_precision=1.0,
        pair_prior_precision=0.25
        * min(statistics.matchups.prior_weight, statistics.synergies.prior_weight),
    )


# Below this many matches a patch's own fit is too noisy: the statistics' additive model serves.
MIN_FIT_MATCHES = 5_000
# The fit uses the newest matches of a patch up to this many: the blend's quality gains flatten
# long before, and fit time grows with it (about 15 s at 100k on 2 cores).
MAX_FIT_MATCHES = 100_000
HELD_OUT_FRACTION = 0.2


def fitted_model(patch: str, statistics: BracketStatistics, drafts: pa.Table) -> DraftModel:
    """The served win model of a patch: the calibrated blend (one-hot LR, additive, pairwise LR;
    see services/model/winmodel/models.py) fitted on the older 80 % of the patch's newest matches
    and evaluated on the newest 20 %; the additive model when the patch has too few matches."""
    if drafts.num_rows < MIN_FIT_MATCHES:
        return additive_model(patch, statistics)
    newest = drafts.slice(max(0, drafts.num_rows - MAX_FIT_MATCHES))
    # Every row is a complete 5v5 draft (match_drafts filters), so the flat values reshape.
    radiant = _heroes(newest.column("radiant_heroes"))
    dire = _heroes(newest.column("dire_heroes"))
    starts = newest.column("start_time").to_numpy(zero_copy_only=False)
    ids = newest.column("match_id").to_numpy().astype(np.int64)
    # Time order: start time where known, else the match id (ids grow with time).
    order = np.where(np.isnan(starts.astype(np.float64)), ids, starts.astype(np.float64))
    drafts_all = Drafts.from_arrays(
        radiant,
        dire,
        newest.column("radiant_win").to_numpy(zero_copy_only=False),
        order,
        hero_slots=statistics.hero_slots,
    )
    older, newer = drafts_all.split_by_time(1 - HELD_OUT_FRACTION)
    blend = default_blend()
    blend.fit(older)
    served = blend.decompose()
    held_out = evaluate(served.predict(newer.radiant, newer.dire), newer.radiant_win)
    pairwise = next(c for c in blend.components if isinstance(c, PairwiseLogistic))
    return replace(
        served,
        version=f"blend-{patch}-{len(older)}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}",
        trained_at=time.time(),
        matches_used=len(older),
        quality=replace(
            held_out,
            evaluated_on=f"holdout: newest {HELD_OUT_FRACTION:.0%} of patch {patch} "
            f"({len(newer)} matches), model fitted on the {len(older)} before them",
            evaluation_matches=len(newer),
        ),
        hero_prior_precision=float(pairwise.hero_precision or 1.0),
        pair_prior_precision=float(
            min(pairwise.synergy_precision or 25.0, pairwise.matchup_precision or 25.0)
        ),
    )


def _heroes(column: pa.ChunkedArray) -> np.ndarray:
    """(n, 5) hero ids from a list<uint16> column, without a Python object per match."""
    flat = pa.concat_arrays([chunk.flatten() for chunk in column.chunks])
    heroes: np.ndarray = flat.to_numpy(zero_copy_only=False).astype(np.int16).reshape(-1, 5)
    return heroes


@dataclass
class Recomputer:
    """Owns the counts and the last published snapshot between runs, so incremental runs add to
    the counts and rebuild only what the new matches changed."""

    source: WarehouseReader
    publisher: Publisher
    constants: DotaConstants
    fit_model: ModelFitter = fitted_model
    min_patch_matches: int = MIN_PATCH_MATCHES
    # The constants as they are now (a ConstantsWatcher's `current`): a run that sees them
    # changed (a new patch or hero) recounts in full, under the new patch labels and hero slots.
    reload_constants: Callable[[], DotaConstants] | None = None
    # Unix seconds now: the current patch is the newest one started by then.
    clock: Callable[[], float] = time.time
    counts: dict[PatchBracket, Counts] = field(default_factory=dict)
    watermark: datetime | None = None
    snapshot: ModelSnapshot | None = None
    # Hero x position counts per patch, read on full runs (incremental runs keep them).
    position_counts: dict[str, IntArray] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def hero_slots(self) -> int:
        """One more than the highest hero id."""
        return self.constants.hero_slots

    async def run(
        self,
        *,
        full: bool = False,
        patch: str | None = None,
        progress: Progress | None = None,
        skip_unchanged: bool = False,
    ) -> RunRecord:
        """One run; full when asked or when there is nothing yet to add to.

        A full run recounts every match, refits the win models and the personal-score prior.
        An incremental run adds the matches stored since the previous run to the counts and
        rebuilds the statistics of the patches they touch, keeping the fitted models and prior
        (refitting takes seconds per patch; the next full run does it). With `skip_unchanged`,
        an incremental run that finds no new match ends after the watermark query: it records
        and publishes nothing and says "unchanged".
        """
        async with self._lock:
            if self.reload_constants is not None:
                constants = self.reload_constants()
                if constants is not self.constants:
                    self.constants, full = constants, True
            full = full or not self.counts or self.watermark is None or self.snapshot is None
            progress = progress or _quiet
            progress("counting in the warehouse", 0.05)
            # Read once and bound every count of the run by it: matches stored while the run
            # reads are left to the next run, never counted by one query and not the other.
            watermark = await asyncio.to_thread(self.source.latest_loaded_at)
            if not full and skip_unchanged and watermark == self.watermark:
                progress("done", 1.0)
                return self._unchanged()
            return await self._run(full, watermark, progress)

    def _unchanged(self) -> RunRecord:
        now = time.time()
        return RunRecord(
            run_id=uuid.uuid4().hex[:12],
            started_at=now,
            finished_at=now,
            status="unchanged",
            mode="incremental",
            matches_used=_matches(self.counts),
            coverage={},
            snapshot_version=self.snapshot.version if self.snapshot else None,
        )

    async def _run(self, full: bool, watermark: datetime | None, progress: Progress) -> RunRecord:
        run = RunRecord(
            run_id=uuid.uuid4().hex[:12],
            started_at=time.time(),
            finished_at=None,
            status="running",
            mode="full" if full else "incremental",
            matches_used=0,
            coverage={},
            loaded_until=watermark.timestamp() if watermark is not None else None,
        )
        await self.publisher.record_run(run)
        try:
            changed: set[str] | None = None  # None: every patch is rebuilt
            if watermark is None:
                counts = {}  # nothing stored yet; _build says so
            elif full:
                counts = await asyncio.to_thread(
                    read_counts, self.source, self.hero_slots, None, None, watermark
                )
            else:
                counts = {key: value.copy() for key, value in self.counts.items()}
                changed = set()
                if watermark != self.watermark:
                    delta = await asyncio.to_thread(
                        read_counts, self.source, self.hero_slots, None, self.watermark, watermark
                    )
                    for key, value in delta.items():
                        changed.add(key[0])
                        if key in counts:
                            counts[key].merge(value)
                        else:
                            counts[key] = value
            progress("statistics", 0.4)
            previous = None if full else self.snapshot
            snapshot = await asyncio.to_thread(self._build, counts, progress, previous, changed)
            positions = self.position_counts
            if full:
                rows = await asyncio.to_thread(self.source.hero_position_counts)
                positions = position_counts(rows, self.hero_slots)
            snapshot = self._with_positions(snapshot, positions)
            if previous is None:
                groups = await asyncio.to_thread(self.source.player_hero_groups)
                snapshot = replace(
                    snapshot, pas_prior_weight=pas_prior_weight(groups, snapshot.patches)
                )
            else:
                snapshot = replace(snapshot, pas_prior_weight=previous.pas_prior_weight)
            version = await self.publisher.next_version()
            snapshot = replace(snapshot, version=version)
            progress("publishing", 0.9)
            await self.publisher.publish(snapshot)
            self.counts, self.watermark, self.snapshot = counts, watermark, snapshot
            self.position_counts = positions
            coverage = {
                name: {b.value: s.matches for b, s in entry.statistics.items()}
                for name, entry in snapshot.patches.items()
            }
            current = snapshot.context(snapshot.current_patch, SkillBracket.ALL).model.quality
            run = replace(
                run,
                finished_at=time.time(),
                status="succeeded",
                matches_used=_matches(counts),
                coverage=coverage,
                snapshot_version=version,
                quality=dict(current.__dict__) if current else {},
            )
            progress("done", 1.0)
        except Exception as error:
            run = replace(run, finished_at=time.time(), status="failed", error=str(error))
            await self.publisher.record_run(run)
            raise
        await self.publisher.record_run(run)
        return run

    def _build(
        self,
        counts: dict[PatchBracket, Counts],
        progress: Progress,
        previous: ModelSnapshot | None = None,
        changed: set[str] | None = None,
    ) -> ModelSnapshot:
        """The snapshot of `counts`. With a `previous` snapshot (an incremental run) a patch
        outside `changed`, that borrows from none in it, is taken over as it was, and a rebuilt
        patch keeps its fitted model; without one every patch is built and fitted."""
        order = self.constants.patch_positions()
        names = sorted({patch for patch, _ in counts}, key=lambda name: order.get(name, -1))
        if not names:
            raise ValueError("the warehouse holds no complete matches to compute statistics from")
        patches: dict[str, PatchModel] = {}
        before: str | None = None
        for index, name in enumerate(names):
            own = {b: c for (p, b), c in counts.items() if p == name}
            shrunk_toward = None
            total = own[SkillBracket.ALL].matches
            if before is not None and total < self.min_patch_matches:
                own = _borrow(
                    own,
                    {b: c for (p, b), c in counts.items() if p == before},
                    self.min_patch_matches,
                )
                shrunk_toward = before
            kept = previous.patches.get(name) if previous is not None else None
            touched = changed is None or name in changed or shrunk_toward in changed
            if kept is not None and not touched and kept.shrunk_toward == shrunk_toward:
                patches[name] = kept
            else:
                statistics = shrink_brackets(
                    {b: compute_statistics(name, b, c) for b, c in own.items()}
                )
                patches[name] = PatchModel(
                    name, statistics, self._model(name, statistics, kept), shrunk_toward
                )
            before = name
            progress(f"patch {name}", 0.4 + 0.5 * (index + 1) / len(names))
        playable = np.zeros(self.hero_slots, dtype=bool)
        playable[np.asarray(list(self.constants.heroes), dtype=np.intp)] = True
        return ModelSnapshot(
            version=0,
            computed_at=time.time(),
            patches=patches,
            current_patch=current_patch(self.constants, names, self.clock()),
            playable=playable,
            pas_prior_weight=PAS_PRIOR_WEIGHT,
        )

    def _with_positions(
        self, snapshot: ModelSnapshot, counts: dict[str, IntArray]
    ) -> ModelSnapshot:
        """Every patch with its hero x position frequencies: its own counts shrunk toward the
        dotaconstants roles prior, the prior alone where the patch has no parsed matches. A
        patch taken over from the previous snapshot keeps its own."""
        prior = role_prior(self.constants)
        patches = {
            name: entry
            if entry.positions is not None
            else replace(entry, positions=hero_positions(prior, counts.get(name)))
            for name, entry in snapshot.patches.items()
        }
        return replace(snapshot, patches=patches)

    def _model(
        self, name: str, statistics: dict[SkillBracket, BracketStatistics], kept: PatchModel | None
    ) -> DraftModel:
        """The win model of a rebuilt patch: a fit on a full run or for a patch new to the
        snapshot; otherwise the kept one, except that a statistics-derived additive model is
        derived again (it costs nothing and should follow the new counts)."""
        overall = statistics[SkillBracket.ALL]
        if kept is None:
            return self.fit_model(name, overall, self.source.match_drafts(name))
        if kept.model.version.startswith(ADDITIVE_PREFIX):
            return additive_model(name, overall)
        return kept.model


def current_patch(constants: DotaConstants, with_statistics: list[str], now: float) -> str:
    """The current patch: the newest one started at `now` per the constants, even while it has
    no statistics (requests for it then borrow from the patch before it, and say so); a patch
    with statistics newer than that (a clock behind the data) has started too."""
    order = constants.patch_positions()
    started = constants.current_patch(now).name
    newest = max(with_statistics, key=lambda name: order.get(name, -1), default=started)
    return max(started, newest, key=lambda name: order.get(name, -1))


def _matches(counts: dict[PatchBracket, Counts]) -> int:
    return sum(c.matches for (_, b), c in counts.items() if b is SkillBracket.ALL)


# Prior weight of a personal score when no stored match names its player (so no PAS can be
# asked for yet): about a month of play on one hero. Replaced by the fitted value otherwise.
PAS_PRIOR_WEIGHT = 30.0
# Below this many (player, hero) groups with games the fit is not trusted.
MIN_PAS_GROUPS = 50


def pas_prior_weight(groups: pa.Table, patches: dict[str, PatchModel]) -> float:
    """k of the personal score, fitted by empirical Bayes over every (player, hero): each
    group's wins and games against its expected win rate, the games-weighted mean of the hero's
    base rate in the patch and bracket of each match."""
    frame = pl.from_arrow(groups)
    assert isinstance(frame, pl.DataFrame)
    if frame.is_empty():
        return PAS_PRIOR_WEIGHT
    expected = np.empty(frame.height)
    rows = zip(
        frame["hero_id"].to_list(),
        frame["patch"].to_list(),
        frame["skill_bracket"].to_list(),
        strict=True,
    )
    for index, (hero, patch, bracket_name) in enumerate(rows):
        entry = patches.get(patch)
        if entry is None:
            expected[index] = np.nan
            continue
        bracket = SkillBracket.parse(bracket_name)
        statistics = (
            entry.statistics.get(bracket or SkillBracket.ALL) or entry.statistics[SkillBracket.ALL]
        )
        expected[index] = statistics.base_rate[hero] if hero < statistics.hero_slots else np.nan
    frame = frame.with_columns(pl.Series("expected", expected)).drop_nans("expected")
    per_player_hero = frame.group_by("account_id", "hero_id").agg(
        pl.col("wins").sum(),
        pl.col("games").sum(),
        ((pl.col("expected") * pl.col("games")).sum() / pl.col("games").sum()).alias("expected"),
    )
    if per_player_hero.height < MIN_PAS_GROUPS:
        return PAS_PRIOR_WEIGHT
    return fit_pas_prior_weight(
        list(
            zip(
                per_player_hero["wins"].cast(pl.Float64).to_list(),
                per_player_hero["games"].cast(pl.Float64).to_list(),
                per_player_hero["expected"].clip(0.01, 0.99).to_list(),
                strict=True,
            )
        )
    )


def _borrow(
    own: dict[SkillBracket, Counts], older: dict[SkillBracket, Counts], target: int
) -> dict[SkillBracket, Counts]:
    """Own counts plus the older patch's, scaled to make up `target` matches in ALL."""
    have = own[SkillBracket.ALL].matches
    older_total = older.get(SkillBracket.ALL)
    if older_total is None or older_total.matches == 0:
        return own
    scale = min(1.0, (target - have) / older_total.matches)
    result: dict[SkillBracket, Counts] = {}
    for bracket in set(own) | set(older):
        mine = own.get(bracket)
        merged = mine.copy() if mine is not None else None
        theirs = older.get(bracket)
        if theirs is not None:
            scaled = _scaled(theirs, scale)
            if merged is None:
                merged = scaled
            else:
                merged.merge(scaled)
        assert merged is not None
        result[bracket] = merged
    return result


def _scaled(counts: Counts, scale: float) -> Counts:
    def s(array: np.ndarray) -> np.ndarray:
        return np.rint(array * scale).astype(np.int64)

    return Counts(
        s(counts.hero_games),
        s(counts.hero_wins),
        s(counts.versus_games),
        s(counts.versus_wins),
        s(counts.with_games),
        s(counts.with_wins),
        round(counts.matches * scale),
    )


def _quiet(stage: str, fraction: float) -> None:
    log.debug("recompute %s (%.0f%%)", stage, fraction * 100)
