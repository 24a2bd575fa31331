"""bench.quality: held-out quality of the draft win models on every real data set.

For each data set the matches are time-ordered (start_time, else match_id; UCI has no time and no
match id, so its row_id order stands in) and split: the oldest 80 % train, the newest 20 % test.
Every model sees only the training matches: hyperparameters are chosen on the newest block of
the training part, the additive statistics and pair features are counted on training matches,
and the served blend is calibrated on out-of-fold training predictions. The test part is
touched once, to score. Run from the repo root: `python -m bench.quality`.

On the data sets with avg_rank_tier every test match also gets the PredictWin-equivalent
prediction of its own skill bracket (the served model moved by the bracket's statistics, shrunk
toward ALL, services/model/statistics.py, counted on the training part), reported per bracket
next to the ALL prediction, the variant with pair terms and the unshrunk bracket rates.

The data directory is $COUNTERPICK_DATA_DIR, by default ../shared/data next to the repo.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from bench.baselines import MajorityModel, XGBoostModel, timed_fit
from services.common.dota import Side, SkillBracket
from services.common.dota_constants import load_constants
from services.model.statistics import (
    FULL_POOLING,
    BracketStatistics,
    Counts,
    bracket_model,
    compute_statistics,
    shrink_brackets,
)
from services.model.winmodel.data import BoolArray, Drafts, FloatArray, HeroArray
from services.model.winmodel.metrics import (
    Quality,
    ece_noise_floor,
    evaluate,
    expected_calibration_error,
    log_loss,
)
from services.model.winmodel.models import (
    AdditiveModel,
    CalibratedBlend,
    OneHotLogistic,
    PairwiseLogistic,
    WinModel,
)
from services.model.winmodel.served import DraftModel

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("COUNTERPICK_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
TRAIN_FRACTION = 0.8
ECE_TARGET = 0.01
LATENCY_CALLS = 2_000
StrArray = npt.NDArray[np.str_]
OWN_BRACKET_ROW = "chosen, own bracket"


@dataclass(frozen=True)
class DataSet:
    """Where a draft data set lives and how its columns are named."""

    folder: str
    radiant_column: str
    dire_column: str
    win_column: str
    order_columns: tuple[str, ...]  # first usable one time-orders the matches
    order_note: str


DATA_SETS = (
    DataSet(
        "opendota-public-matches-2026-07",
        "radiant_team",
        "dire_team",
        "radiant_win",
        ("start_time", "match_id"),
        "ordered by start_time (ties by match_id)",
    ),
    DataSet(
        "opendota-public-matches-2024-08",
        "radiant_team",
        "dire_team",
        "radiant_win",
        ("start_time", "match_id"),
        "start_time is empty: ordered by match_id",
    ),
    DataSet(
        "uci-dota2-games-2016",
        "team1_heroes",
        "team2_heroes",
        "team1_win",
        ("row_id",),
        "no time and no match id: ordered by row_id (an approximation of time only)",
    ),
    DataSet(
        "trackdota-pro-matches-2018-2019",
        "radiant_team",
        "dire_team",
        "radiant_win",
        ("start_time", "match_id"),
        "no start_time: ordered by match_id",
    ),
)


def load(data_set: DataSet) -> Drafts:
    """The data set's matches as Drafts, in time order."""
    return load_with_brackets(data_set)[0]


def load_with_brackets(data_set: DataSet) -> tuple[Drafts, StrArray | None]:
    """The data set's matches as Drafts, in time order, and each match's stored skill bracket
    (from avg_rank_tier, as the ETL stores it) where the data set has ranks."""
    path = DATA_DIR / data_set.folder / "matches.csv.gz"
    frame = pl.read_csv(path, infer_schema_length=0)

    def team(column: str) -> np.ndarray:
        heroes = frame[column].str.split(" ").list.eval(pl.element().cast(pl.Int16))
        return heroes.list.to_array(5).to_numpy()

    order_column = next(
        column
        for column in data_set.order_columns
        if column in frame.columns and frame[column].null_count() == 0
    )
    tie_breaker = "match_id" if "match_id" in frame.columns else "row_id"
    order_key = frame[order_column].cast(pl.Int64).to_numpy()
    ties = frame[tie_breaker].cast(pl.Int64).to_numpy()
    # Rank by (order column, tie breaker) so the order key is a strict time order.
    rank = np.lexsort((ties, order_key)).argsort()
    drafts = Drafts.from_arrays(
        team(data_set.radiant_column),
        team(data_set.dire_column),
        frame[data_set.win_column].cast(pl.Int64).to_numpy() == 1,
        rank,
        hero_slots=load_constants().hero_slots,
    )
    brackets: StrArray | None = None
    if "avg_rank_tier" in frame.columns:
        tiers = frame["avg_rank_tier"].cast(pl.Int64, strict=False).to_list()
        stored = np.asarray([SkillBracket.from_rank_tier(tier).value for tier in tiers])
        brackets = stored[np.argsort(rank, kind="stable")]
    return drafts.time_ordered(), brackets


@dataclass(frozen=True)
class Row:
    """One model's line of a table."""

    model: str
    quality: Quality
    train_seconds: float


def _score(model: WinModel, test: Drafts, seconds: float) -> Row:
    probabilities = model.predict(test.radiant, test.dire)
    return Row(model.name, evaluate(probabilities, test.radiant_win), seconds)


def _candidate_latency(blend: CalibratedBlend, test: Drafts) -> float:
    """Mean seconds to score every next Radiant pick of a 4-vs-3 draft, calibrated."""
    served = blend.decompose()
    radiant, dire = test.radiant[0, :4], test.dire[0, :3]
    served.probability(served.candidate_logits(radiant, dire, Side.RADIANT))  # warm up
    started = time.perf_counter()
    for _ in range(LATENCY_CALLS):
        served.probability(served.candidate_logits(radiant, dire, Side.RADIANT))
    return (time.perf_counter() - started) / LATENCY_CALLS


def _table(rows: list[Row]) -> str:
    header = (
        f"{'model':<28} {'accuracy %':>10} {'log-loss':>9} {'AUC':>7} {'ECE':>7} {'Brier':>7} "
        f"{'train s':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        q = row.quality
        lines.append(
            f"{row.model:<28} {100 * q.accuracy:>10.2f} {q.log_loss:>9.5f} {q.roc_auc:>7.4f} "
            f"{q.ece:>7.4f} {q.brier:>7.5f} {row.train_seconds:>8.1f}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    """Whether the chosen model met the targets on one data set."""

    data_set: str
    beats_one_hot_log_loss: bool
    beats_one_hot_accuracy: bool
    beats_additive_log_loss: bool
    beats_additive_accuracy: bool
    ece_ok: bool
    xgboost_better_log_loss: bool
    # The served model with each match's own (shrunk) bracket beats both on log-loss too
    # (None: the data set has no ranks).
    bracketed_beats_log_loss: bool | None = None

    @property
    def all_met(self) -> bool:
        return (
            self.beats_one_hot_log_loss
            and self.beats_one_hot_accuracy
            and self.beats_additive_log_loss
            and self.beats_additive_accuracy
            and self.ece_ok
        )


@dataclass(frozen=True)
class BracketRow:
    """Served predictions of one bracket's test matches, with each way of using the bracket."""

    bracket: str
    matches: int
    train_matches: int
    hero_strength: float  # k of the heroes that differ, pseudo-games (1e12: all the way to ALL)
    hero_share: float  # fitted share of heroes that differ from ALL in the bracket
    all_brackets: float  # log-loss with ALL (what PredictWin answered before brackets shrank)
    shrunk: float  # with the match's own bracket, shrunk toward ALL: what is served
    shrunk_pairs: float  # the same plus the pairs' shrunk bracket differences
    unshrunk: float  # the bracket's own raw hero rates, no shrinkage


def bracket_rows(
    blend: CalibratedBlend,
    train: Drafts,
    test: Drafts,
    train_brackets: StrArray,
    test_brackets: StrArray,
) -> tuple[list[BracketRow], FloatArray]:
    """Per-bracket log-loss of PredictWin-equivalent predictions (the served model moved to the
    match's bracket, services.model.snapshot) vs the ALL model, on statistics of the training
    part only; and the served predictions of every test match with its own bracket."""
    h = train.hero_slots

    def statistics_of(chosen: BoolArray, bracket: SkillBracket) -> BracketStatistics:
        counts = Counts.from_drafts(
            train.radiant[chosen], train.dire[chosen], train.radiant_win[chosen], h
        )
        return compute_statistics("bench", bracket, counts)

    raw = {SkillBracket.ALL: statistics_of(np.ones(len(train), dtype=bool), SkillBracket.ALL)}
    for bracket in SkillBracket.ranked():
        chosen = train_brackets == bracket.value
        if chosen.any():
            raw[bracket] = statistics_of(chosen, bracket)
    shrunk = shrink_brackets(raw)
    overall = shrunk[SkillBracket.ALL]
    served = blend.decompose()
    own_bracket = served.predict(test.radiant, test.dire)
    rows = []
    for bracket in SkillBracket.ranked():
        chosen = test_brackets == bracket.value
        if bracket not in shrunk or not chosen.any():
            continue
        statistics = shrunk[bracket]
        assert statistics.shrinkage is not None
        unshrunk = replace(statistics, base_rate=raw[bracket].base_rate, _models={})
        r, d, won = test.radiant[chosen], test.dire[chosen], test.radiant_win[chosen]

        def loss(
            model: DraftModel, r: HeroArray = r, d: HeroArray = d, won: BoolArray = won
        ) -> float:
            return log_loss(model.predict(r, d), won)

        moved = bracket_model(served, overall, statistics)
        own_bracket[chosen] = moved.predict(r, d)
        rows.append(
            BracketRow(
                bracket.value,
                int(chosen.sum()),
                statistics.matches,
                statistics.shrinkage.hero,
                statistics.shrinkage.hero_share,
                loss(served),
                loss(moved),
                loss(bracket_model(served, overall, statistics, pairs=True)),
                loss(bracket_model(served, overall, unshrunk)),
            )
        )
    return rows, own_bracket


def _bracket_table(rows: list[BracketRow]) -> str:
    header = (
        f"{'bracket (test matches)':<26} {'n':>6} {'train n':>8} {'k hero':>8} {'differ':>6} "
        f"{'ALL':>8} "
        f"{'own,shrunk':>10} {'+pairs':>8} {'own,raw':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        k = "ALL" if row.hero_strength >= FULL_POOLING else f"{row.hero_strength:,.0f}"
        lines.append(
            f"{row.bracket:<26} {row.matches:>6} {row.train_matches:>8} {k:>8} "
            f"{100 * row.hero_share:>5.0f}% "
            f"{row.all_brackets:>8.5f} {row.shrunk:>10.5f} {row.shrunk_pairs:>8.5f} "
            f"{row.unshrunk:>8.5f}"
        )
    if rows:
        n = sum(row.matches for row in rows)

        def mean(values: list[float]) -> float:
            return sum(v * row.matches for v, row in zip(values, rows, strict=True)) / n

        lines.append(
            f"{'ranked, weighted':<26} {n:>6} {'':>8} {'':>8} {'':>6} "
            f"{mean([r.all_brackets for r in rows]):>8.5f} {mean([r.shrunk for r in rows]):>10.5f} "
            f"{mean([r.shrunk_pairs for r in rows]):>8.5f} {mean([r.unshrunk for r in rows]):>8.5f}"
        )
    return "\n".join(lines)


def run(data_set: DataSet, say: Callable[[str], None]) -> Verdict:
    """Fit every model on the older 80 %, score the newest 20 %, print the table."""
    drafts, brackets = load_with_brackets(data_set)
    train, test = drafts.split_by_time(TRAIN_FRACTION)
    one_hot, additive, pairwise = OneHotLogistic(), AdditiveModel(), PairwiseLogistic()
    models: list[WinModel] = [
        MajorityModel(),
        one_hot,
        additive,
        pairwise,
        XGBoostModel(),
        XGBoostModel(with_additive_features=True),
    ]
    rows = [_score(model, test, timed_fit(model, train)) for model in models]
    blend = CalibratedBlend([one_hot, additive, pairwise])
    started = time.perf_counter()
    blend.fit_blend(train)  # the components above are already fitted on `train`
    blend_seconds = time.perf_counter() - started + sum(r.train_seconds for r in rows[1:4])
    chosen = _score(blend, test, blend_seconds)
    rows.append(chosen)
    per_bracket: list[BracketRow] = []
    own_floor = 0.0
    if brackets is not None:
        per_bracket, own = bracket_rows(
            blend, train, test, brackets[: len(train)], brackets[len(train) :]
        )
        rows.append(Row(OWN_BRACKET_ROW, evaluate(own, test.radiant_win), 0.0))
        own_floor = ece_noise_floor(own)

    accuracy_noise = 1.96 * math.sqrt(0.25 / len(test)) * 100
    ece_floor = ece_noise_floor(blend.predict(test.radiant, test.dire))
    say(f"\n=== {data_set.folder}: {len(train):,} train / {len(test):,} test matches")
    say(
        f"    {data_set.order_note}; Radiant wins {100 * train.radiant_win.mean():.1f} % (train) "
        f"/ {100 * test.radiant_win.mean():.1f} % (test)"
    )
    say(
        f"    test noise: accuracy 95 % +/-{accuracy_noise:.2f} pp; ECE of a perfectly "
        f"calibrated model with the chosen model's predictions ~ {ece_floor:.4f}"
    )
    say(_table(rows))
    if per_bracket:
        say(
            "    per bracket, PredictWin with the match's bracket (statistics of the training "
            "part; 'own bracket' above = shrunk, ALL for unranked matches; its perfectly "
            f"calibrated ECE ~ {own_floor:.4f}), log-loss:"
        )
        say(_bracket_table(per_bracket))
    assert blend.blend_weights is not None
    weights = ", ".join(
        f"{component.name} {weight:.3f}"
        for component, weight in zip(blend.components, blend.blend_weights, strict=True)
    )
    out_of_fold = blend.out_of_fold_probabilities()
    say(
        f"    one-hot precision {one_hot.precision:g}; pairwise precisions hero "
        f"{pairwise.hero_precision:g} / ally pair {pairwise.synergy_precision:g} / enemy pair "
        f"{pairwise.matchup_precision:g}; additive k (hero, ally, enemy) "
        f"{_prior_weights(additive)}"
    )
    say(
        f"    chosen = {weights}, intercept {blend.intercept:+.3f} (Platt over out-of-fold "
        f"logits: OOF log-loss {log_loss(out_of_fold, train.radiant_win):.5f}, OOF ECE "
        f"{expected_calibration_error(out_of_fold, train.radiant_win):.4f})"
    )
    say(
        f"    serving: P(win) for all {blend.decompose().hero_slots} candidate ids in "
        f"{_candidate_latency(blend, test) * 1e6:.0f} us"
    )
    by_name = {row.model: row.quality for row in rows}
    base, stats_model = by_name[one_hot.name], by_name[additive.name]
    bracketed = by_name.get(OWN_BRACKET_ROW)
    best_xgboost = min(by_name[n].log_loss for n in by_name if n.startswith("xgboost"))
    return Verdict(
        data_set.folder,
        chosen.quality.log_loss < base.log_loss,
        chosen.quality.accuracy > base.accuracy,
        chosen.quality.log_loss < stats_model.log_loss,
        chosen.quality.accuracy > stats_model.accuracy,
        chosen.quality.ece <= ECE_TARGET,
        best_xgboost < chosen.quality.log_loss,
        None
        if bracketed is None
        else bracketed.log_loss < min(base.log_loss, stats_model.log_loss),
    )


def _prior_weights(additive: AdditiveModel) -> str:
    if additive.statistics is None:
        return "?"
    return ", ".join(f"{k:,.0f}" for k in additive.statistics.prior_weights)


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def main() -> None:
    """Run every data set (or those named) and print the verdicts."""
    parser = argparse.ArgumentParser(prog="python -m bench.quality")
    parser.add_argument(
        "data_sets", nargs="*", help="data set folders to run (default: all four real sets)"
    )
    arguments = parser.parse_args()
    if not all((DATA_DIR / data_set.folder).is_dir() for data_set in DATA_SETS):
        sys.exit(
            f"bench.quality needs the real data sets in {DATA_DIR} "
            "(set COUNTERPICK_DATA_DIR to the shared data directory)"
        )
    chosen_sets = [
        d for d in DATA_SETS if not arguments.data_sets or d.folder in arguments.data_sets
    ]
    started = time.perf_counter()
    verdicts = [run(data_set, lambda line: print(line, flush=True)) for data_set in chosen_sets]
    print(
        "\nChosen (served) model: the calibrated blend of one-hot LR, the additive model and the "
        "pairwise LR — a non-negative sum of decomposable logits, Platt-calibrated on out-of-fold "
        "logits, so it is served as one DecomposedModel."
    )
    print(
        f"{'data set':<34} {'LL<LR':>6} {'acc>LR':>7} {'LL<add':>7} {'acc>add':>8} "
        f"{'ECE<=.01':>9} {'all':>4} {'xgb better LL':>14} {'bracket LL<both':>16}"
    )
    for v in verdicts:
        print(
            f"{v.data_set:<34} {_yes(v.beats_one_hot_log_loss):>6} "
            f"{_yes(v.beats_one_hot_accuracy):>7} {_yes(v.beats_additive_log_loss):>7} "
            f"{_yes(v.beats_additive_accuracy):>8} {_yes(v.ece_ok):>9} {_yes(v.all_met):>4} "
            f"{'yes' if v.xgboost_better_log_loss else 'no':>14} "
            f"{'-' if v.bracketed_beats_log_loss is None else _yes(v.bracketed_beats_log_loss):>16}"
        )
    print(f"\nwhole bench: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
