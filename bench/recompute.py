"""bench.recompute: full and incremental statistics recompute over synthetic matches in chdb.

Matches come from tests.synthetic (a planted truth over the real heroes, two patches:
7.41 and 7.42 with a shifted truth, in alternating chunks), so no data directory is needed. One
embedded warehouse grows through the requested sizes; at each size:

  set-up (not part of the recompute): generate the missing matches, insert them;
  full recompute: read_counts (SQL counts in the warehouse + Arrow -> dense arrays), then
      compute_statistics for every (patch, bracket), as Recomputer does;
  incremental: watermark = latest_loaded_at(), insert --increment new matches, read_counts
      after the watermark, Counts.merge into the previous counts, statistics again; the merged
      counts must equal a full recount.

Each full recompute runs --repeat times and the fastest is reported. At the largest size the
bench also times an alternative to the SQL pair count: the drafts handed out per patch
(Warehouse.match_drafts) and counted with numpy bincount, checked equal to read_counts.

Wall seconds are measured alongside this process's CPU seconds (chdb runs in-process, so they
include the engine's threads): on a shared machine wall time moves with the neighbours' load,
CPU time much less. Target (issue): 10M matches recomputed in <= 60 s on 2 cores.
Run: `uv run python -m bench.recompute [--sizes 1000000,5000000]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from services.common.dota import SkillBracket
from services.etl.repo import Warehouse
from services.model.statistics import BracketStatistics, Counts, compute_statistics
from services.model.warehouse_counts import PatchBracket, read_counts
from tests.synthetic import (
    GroundTruth,
    SyntheticMatches,
    generate_matches,
    plant_truth,
    shift_truth,
)
from tests.warehouse_drafts import insert_draft_table

PATCHES = ("7.41", "7.42")
CHUNK = 500_000
ID_BASE = 8_000_000_000
TARGET_MATCHES = 10_000_000
TARGET_SECONDS = 60.0

CountsByKey = dict[PatchBracket, Counts]


@dataclass
class Timer:
    """Wall and process-CPU seconds of one stage."""

    wall: float = 0.0
    cpu: float = 0.0

    def add(self, other: Timer) -> None:
        """Accumulate another stage."""
        self.wall += other.wall
        self.cpu += other.cpu


def timed[**P, R](function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> tuple[R, Timer]:
    """Call `function`, returning its result and how long it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, Timer(time.perf_counter() - wall, time.process_time() - cpu)


@dataclass
class SizeResult:
    """Everything measured at one warehouse size."""

    matches: int
    inserted: int
    generate: Timer
    insert: Timer
    parts: int
    sql: Timer
    stats: Timer
    keys: int
    hero_sql: Timer
    pair_sql: Timer
    increment_sql: Timer = field(default_factory=Timer)
    increment_merge: Timer = field(default_factory=Timer)
    increment_stats: Timer = field(default_factory=Timer)
    increment_equal: bool = False
    recount: Timer = field(default_factory=Timer)
    peak_rss_mb: float = 0.0

    @property
    def total(self) -> Timer:
        """SQL counts + statistics."""
        result = Timer()
        result.add(self.sql)
        result.add(self.stats)
        return result

    @property
    def increment_total(self) -> Timer:
        """Incremental SQL + merge + statistics."""
        result = Timer()
        for stage in (self.increment_sql, self.increment_merge, self.increment_stats):
            result.add(stage)
        return result


class TimedWarehouse:
    """The warehouse as read_counts sees it, timing the two SQL queries as they pass through,
    so the bench splits read_counts into SQL and array building without re-implementing it."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.hero = Timer()
        self.pair = Timer()

    def hero_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table:
        """Warehouse.hero_counts, timed."""
        table, spent = timed(self.warehouse.hero_counts, patch, loaded_after, loaded_until)
        self.hero.add(spent)
        return table

    def pair_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table:
        """Warehouse.pair_counts, timed."""
        table, spent = timed(self.warehouse.pair_counts, patch, loaded_after, loaded_until)
        self.pair.add(spent)
        return table

    def latest_loaded_at(self) -> datetime | None:
        """Warehouse.latest_loaded_at."""
        return self.warehouse.latest_loaded_at()

    def player_hero_groups(self) -> pa.Table:
        """Warehouse.player_hero_groups."""
        return self.warehouse.player_hero_groups()

    def match_drafts(self, patch: str | None = None) -> pa.Table:
        """Warehouse.match_drafts."""
        return self.warehouse.match_drafts(patch)

    def hero_position_counts(self, patch: str | None = None) -> pa.Table:
        """Warehouse.hero_position_counts."""
        return self.warehouse.hero_position_counts(patch)

    def player_hero_records(self, account_id: int) -> pa.Table:
        """Warehouse.player_hero_records."""
        return self.warehouse.player_hero_records(account_id)

    def close(self) -> None:
        """The bench closes the warehouse itself."""


class Source:
    """Deterministic synthetic matches in chunks, alternating between the two patches."""

    def __init__(self, seed: int) -> None:
        older = plant_truth(seed)
        self.truths: dict[str, GroundTruth] = {
            PATCHES[0]: older,
            PATCHES[1]: shift_truth(older, seed),
        }
        self.hero_slots = older.hero_slots
        self.next_chunk = 0
        self.next_id = ID_BASE
        self.seed = seed

    def take(self, count: int) -> SyntheticMatches:
        """The next `count` matches, of the patch whose turn it is."""
        patch = PATCHES[self.next_chunk % len(PATCHES)]
        matches = generate_matches(
            self.truths[patch],
            count,
            patch=patch,
            seed=self.seed * 1_000 + self.next_chunk,
            first_match_id=self.next_id,
        )
        self.next_chunk += 1
        self.next_id = matches.next_match_id
        return matches


def statistics_of(counts: CountsByKey) -> dict[PatchBracket, BracketStatistics]:
    """compute_statistics for every (patch, bracket), as a recompute run does."""
    return {key: compute_statistics(key[0], key[1], value) for key, value in counts.items()}


def merged(base: CountsByKey, delta: CountsByKey) -> CountsByKey:
    """base + delta, leaving base untouched (Recomputer keeps its counts the same way)."""
    result = {key: value.copy() for key, value in base.items()}
    for key, value in delta.items():
        if key in result:
            result[key].merge(value)
        else:
            result[key] = value.copy()
    return result


def same_counts(left: CountsByKey, right: CountsByKey) -> bool:
    """Every array and match count equal, same keys."""
    fields = ("hero_games", "hero_wins", "versus_games", "versus_wins", "with_games", "with_wins")
    return set(left) == set(right) and all(
        left[key].matches == right[key].matches
        and all(np.array_equal(getattr(left[key], f), getattr(right[key], f)) for f in fields)
        for key in left
    )


def grow(warehouse: Warehouse, source: Source, count: int) -> tuple[Timer, Timer]:
    """Insert `count` more matches in chunks; (generate, insert) time."""
    generate, insert = Timer(), Timer()
    left = count
    while left > 0:
        matches, spent = timed(source.take, min(CHUNK, left))
        table, converted = timed(matches.to_arrow)
        generate.add(spent)
        generate.add(converted)
        _, spent = timed(insert_draft_table, warehouse, table)
        insert.add(spent)
        left -= len(matches)
    return generate, insert


def measure(
    warehouse: Warehouse, source: Source, stored: int, size: int, increment: int, repeat: int
) -> SizeResult:
    """Grow the warehouse to `size`, then time a full and an incremental recompute."""
    generate, insert = grow(warehouse, source, size - stored)
    parts = int(
        warehouse.command(
            "SELECT count() FROM system.parts WHERE table = 'matches' AND active "
            "AND database = currentDatabase()"
        )
    )
    best: tuple[Timer, Timer, TimedWarehouse, CountsByKey] | None = None
    for _ in range(repeat):
        split = TimedWarehouse(warehouse)
        counts, sql = timed(read_counts, split, source.hero_slots)
        _, stats = timed(statistics_of, counts)
        if best is None or sql.wall + stats.wall < best[0].wall + best[1].wall:
            best = (sql, stats, split, counts)
    assert best is not None
    sql, stats, split, counts = best
    total = sum(c.matches for (_, bracket), c in counts.items() if bracket is SkillBracket.ALL)
    assert total == size, (total, size)
    result = SizeResult(
        size,
        size - stored,
        generate,
        insert,
        parts,
        sql,
        stats,
        len(counts),
        split.hero,
        split.pair,
    )
    if increment:
        watermark = warehouse.latest_loaded_at()
        more = source.take(increment)
        insert_draft_table(warehouse, more.to_arrow())
        delta, result.increment_sql = timed(
            read_counts, warehouse, source.hero_slots, loaded_after=watermark
        )
        updated, result.increment_merge = timed(merged, counts, delta)
        _, result.increment_stats = timed(statistics_of, updated)
        recount, result.recount = timed(read_counts, warehouse, source.hero_slots)
        result.increment_equal = same_counts(updated, recount)
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def numpy_counts(warehouse: Warehouse, hero_slots: int, patches: list[str]) -> CountsByKey:
    """The same Counts as read_counts, but the warehouse only hands out the drafts (one patch at
    a time, bounding memory) and the pairs are counted with numpy bincount: the alternative the
    bench weighs the SQL pair count against."""
    result: CountsByKey = {}
    for patch in patches:
        drafts = warehouse.match_drafts(patch)
        radiant = _heroes(drafts.column("radiant_heroes"))
        dire = _heroes(drafts.column("dire_heroes"))
        win = drafts.column("radiant_win").to_numpy(zero_copy_only=False)
        brackets = drafts.column("skill_bracket").to_numpy(zero_copy_only=False)
        total = Counts.empty(hero_slots)
        for name in np.unique(brackets):
            chosen = brackets == name
            part = Counts.from_drafts(radiant[chosen], dire[chosen], win[chosen], hero_slots)
            result[(patch, SkillBracket(name))] = part
            total.merge(part)
        result[(patch, SkillBracket.ALL)] = total
    return result


def _heroes(column: pa.ChunkedArray) -> np.ndarray:
    flat = column.combine_chunks().flatten().to_numpy()
    heroes: np.ndarray = flat.astype(np.int64).reshape(-1, 5)
    return heroes


def fit(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares (fixed s, s per match) of seconds = a + b * matches."""
    if len(sizes) < 2:
        return 0.0, seconds[0] / sizes[0]
    slope, intercept = np.polyfit(np.asarray(sizes, float), np.asarray(seconds, float), 1)
    return float(intercept), float(slope)


def report(results: list[SizeResult], increment: int) -> None:
    """The tables."""
    print("\nset-up (not part of the recompute)")
    print(f"{'matches':>11} {'generate s':>11} {'insert s':>9} {'insert/s':>10} {'parts':>6}")
    for r in results:
        rate = r.inserted / r.insert.wall if r.insert.wall else float("nan")
        print(
            f"{r.matches:>11,} {r.generate.wall:>11.2f} {r.insert.wall:>9.2f} {rate:>10,.0f} "
            f"{r.parts:>6}"
        )
    print("\nfull recompute (read_counts + compute_statistics over every patch x bracket)")
    print(
        f"{'matches':>11} {'keys':>5} {'hero q s':>9} {'pair q s':>9} {'arrays s':>9} "
        f"{'sql s':>7} {'stats s':>8} {'total s':>8} {'cpu s':>7} {'matches/s':>11} "
        f"{'peak RSS MB':>12}"
    )
    for r in results:
        arrays = r.sql.wall - r.hero_sql.wall - r.pair_sql.wall
        print(
            f"{r.matches:>11,} {r.keys:>5} {r.hero_sql.wall:>9.2f} {r.pair_sql.wall:>9.2f} "
            f"{arrays:>9.2f} {r.sql.wall:>7.2f} {r.stats.wall:>8.2f} {r.total.wall:>8.2f} "
            f"{r.total.cpu:>7.2f} {r.matches / r.total.wall:>11,.0f} {r.peak_rss_mb:>12,.0f}"
        )
    print(
        "(sql s = read_counts: hero q + pair q are its two warehouse queries, arrays the "
        "Arrow -> dense Counts step; peak RSS is the process's so far, chdb included)"
    )
    sizes = [r.matches for r in results]
    intercept, slope = fit(sizes, [r.total.wall for r in results])
    cpu_intercept, cpu_slope = fit(sizes, [r.total.cpu for r in results])
    projected = intercept + slope * TARGET_MATCHES
    projected_cpu = cpu_intercept + cpu_slope * TARGET_MATCHES
    measured = next((r for r in results if r.matches == TARGET_MATCHES), None)
    print(
        f"\ngrowth: total s = {intercept:.2f} + {slope * 1e6:.2f} per 1M matches "
        f"(cpu s = {cpu_intercept:.2f} + {cpu_slope * 1e6:.2f} per 1M)"
    )
    if len(results) >= 2:
        first, last = results[0], results[-1]
        exponent = np.log(last.total.wall / first.total.wall) / np.log(last.matches / first.matches)
        print(
            f"ratio {last.matches / first.matches:.1f}x matches -> "
            f"{last.total.wall / first.total.wall:.2f}x time (exponent {exponent:.2f})"
        )
    floor = projected_cpu / 2
    print(
        f"10M extrapolated: {projected:.1f} s wall "
        f"({'meets' if projected <= TARGET_SECONDS else 'MISSES'} the <= {TARGET_SECONDS:.0f} s "
        f"target); {projected_cpu:.1f} s cpu, so {floor:.1f} s wall at best with both cores "
        f"idle ({'meets' if floor <= TARGET_SECONDS else 'MISSES'})"
    )
    if measured:
        print(
            f"measured at 10M: {measured.total.wall:.1f} s wall, {measured.total.cpu:.1f} s cpu "
            f"({'meets' if measured.total.wall <= TARGET_SECONDS else 'MISSES'} the target)"
        )
    if increment:
        print(f"\nincremental update of {increment:,} matches")
        print(
            f"{'before':>11} {'sql s':>7} {'merge s':>8} {'stats s':>8} {'total s':>8} "
            f"{'full recount s':>15} {'equal':>6}"
        )
        for r in results:
            print(
                f"{r.matches:>11,} {r.increment_sql.wall:>7.2f} {r.increment_merge.wall:>8.2f} "
                f"{r.increment_stats.wall:>8.2f} {r.increment_total.wall:>8.2f} "
                f"{r.recount.wall:>15.2f} {'yes' if r.increment_equal else 'NO':>6}"
            )


def main() -> None:
    """Parse arguments, run every size, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        default="1000000,5000000",
        help="comma-separated warehouse sizes in matches, ascending (default 1M,5M)",
    )
    parser.add_argument("--increment", type=int, default=10_000, help="matches per update")
    parser.add_argument(
        "--repeat", type=int, default=2, help="full recomputes per size; the fastest is reported"
    )
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument(
        "--no-alternative",
        dest="alternative",
        action="store_false",
        help="skip timing the numpy alternative to the SQL pair count at the largest size",
    )
    parser.add_argument("--dir", type=Path, default=None, help="warehouse dir (default: temp)")
    args = parser.parse_args()
    sizes = sorted(int(size.replace("_", "")) for size in args.sizes.split(","))
    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench-recompute-"))
    print(
        f"bench.recompute: sizes {', '.join(f'{s:,}' for s in sizes)}; {os.cpu_count()} cpus; "
        f"load average at start {os.getloadavg()[0]:.2f}; warehouse {directory}"
    )
    source = Source(args.seed)
    warehouse = Warehouse.connect(f"chdb://{directory / 'warehouse'}")
    results: list[SizeResult] = []
    alternative_line = ""
    try:
        warehouse.migrate()
        stored = 0
        for size in sizes:
            if size < stored:
                raise SystemExit("--sizes must be ascending and >= the previous size + increment")
            result = measure(warehouse, source, stored, size, args.increment, args.repeat)
            results.append(result)
            stored = size + args.increment
            print(
                f"  {size:,}: total {result.total.wall:.1f} s "
                f"(load average {os.getloadavg()[0]:.2f})",
                flush=True,
            )
        if args.alternative:
            # Last, so its memory does not show in the peak RSS of the main table.
            alternative, spent = timed(numpy_counts, warehouse, source.hero_slots, list(PATCHES))
            recount, counted = timed(read_counts, warehouse, source.hero_slots)
            matches = sum(c.matches for (_, b), c in recount.items() if b is SkillBracket.ALL)
            alternative_line = (
                f"\nalternative at {matches:,} matches: match_drafts per patch + numpy bincount "
                f"{spent.wall:.2f} s wall, {spent.cpu:.2f} s cpu (single-threaded) vs read_counts "
                f"{counted.wall:.2f} s wall, {counted.cpu:.2f} s cpu; same counts: "
                f"{'yes' if same_counts(alternative, recount) else 'NO'}; peak RSS now "
                f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB"
            )
    finally:
        warehouse.close()
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    report(results, args.increment)
    if alternative_line:
        print(alternative_line)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
