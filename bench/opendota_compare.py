"""bench.opendota_compare: "the matchups of hero X" the OpenDota way and this project's way.

OpenDota answers /heroes/{hero_id}/matchups on request with SQL over its PostgreSQL tables:
`player_matches` (one row per player per match, PRIMARY KEY (match_id, player_slot), an index
on hero_id) joined to itself on match_id across sides, and to `matches` for radiant_win and
start_time, grouped by the other hero (odota/core, routes/spec.ts). This project counts every
pair once per recompute in the warehouse and answers from the dense PairTable in memory.

Both are loaded with the same synthetic matches (tests.synthetic): PostgreSQL via COPY
into tables shaped like OpenDota's (uniquely named in database `test`, dropped afterwards), and
the chdb warehouse -> read_counts -> compute_statistics. For every hero both answers must give
the same games and wins per opposing hero; then the latency of each (warm, p50/p95) is timed.
Run: `uv run python -m bench.opendota_compare [--matches 500000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from services.common.dota import SkillBracket
from services.etl.repo import Warehouse
from services.model.statistics import BracketStatistics, compute_statistics
from services.model.warehouse_counts import read_counts
from tests.synthetic import SyntheticMatches, generate_matches, plant_truth
from tests.warehouse_drafts import insert_draft_table

POSTGRES_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PATCH = "7.41"

# OpenDota's /heroes/{hero_id}/matchups query, table names aside. Its `start_time > ?` is "the
# last year"; here the cut-off is just before the first generated match, so every match counts.
OPENDOTA_MATCHUPS_SQL = """
SELECT
pm2.hero_id,
count(player_matches.match_id) games_played,
sum(case when (player_matches.player_slot < 128) = matches.radiant_win then 1 else 0 end) wins
FROM {matches} matches
JOIN {player_matches} player_matches using(match_id)
JOIN {player_matches} pm2 on player_matches.match_id = pm2.match_id
    AND (player_matches.player_slot < 128) != (pm2.player_slot < 128)
WHERE player_matches.hero_id = $1
AND matches.start_time > $2
GROUP BY pm2.hero_id
ORDER BY games_played DESC
"""


@dataclass(frozen=True)
class Matchup:
    """One opposing hero in an answer."""

    hero_id: int
    games: int
    wins: int
    score: float = 0.0


def project_matchups(stats: BracketStatistics, hero_id: int) -> list[Matchup]:
    """This project's answer: the hero's PairTable row, opponents with games, best first."""
    table = stats.matchups
    games, wins, score = table.games[hero_id], table.wins[hero_id], table.score[hero_id]
    opponents = np.flatnonzero(games)
    order = opponents[np.argsort(-score[opponents], kind="stable")]
    return [Matchup(int(b), int(games[b]), int(wins[b]), float(score[b])) for b in order]


def player_rows(matches: SyntheticMatches) -> pa.Table:
    """OpenDota's player_matches rows: slots 0-4 Radiant, 128-132 Dire."""
    n = len(matches)
    heroes = np.concatenate([matches.radiant, matches.dire], axis=1).ravel()
    slots = np.tile(np.asarray([0, 1, 2, 3, 4, 128, 129, 130, 131, 132], dtype=np.int32), n)
    return pa.table(
        {
            "match_id": np.repeat(matches.match_id.astype(np.int64), 10),
            "player_slot": slots,
            "hero_id": heroes.astype(np.int32),
        }
    )


def csv_bytes(table: pa.Table) -> io.BytesIO:
    """A table as header-less CSV, what COPY ... (FORMAT csv) reads."""
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    buffer.seek(0)
    return buffer


def plan_outline(plan: str, prefix: str) -> str:
    """The node names of an EXPLAIN text plan, outermost first (Sort < HashAggregate < ...),
    without the tables' unique prefix."""
    nodes = []
    for line in plan.replace(f"{prefix}_", "").splitlines():
        text = line.strip().removeprefix("->").strip()
        if "(cost=" in text:
            nodes.append(text.split("  (cost=")[0])
    return " < ".join(nodes)


def percentile(values: list[float], fraction: float) -> float:
    """The value at `fraction` of the sorted values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def load_postgres(
    connection: asyncpg.Connection, matches: SyntheticMatches, prefix: str
) -> tuple[str, str, float]:
    """Create and fill the two tables; (matches table, player_matches table, seconds)."""
    matches_table, players_table = f"{prefix}_matches", f"{prefix}_player_matches"
    started = time.perf_counter()
    await connection.execute(
        f"CREATE TABLE {matches_table} (match_id bigint, radiant_win boolean, start_time integer)"
    )
    await connection.execute(
        f"CREATE TABLE {players_table} (match_id bigint, player_slot integer, hero_id integer)"
    )
    match_rows = pa.table(
        {
            "match_id": matches.match_id.astype(np.int64),
            "radiant_win": matches.radiant_win,
            "start_time": matches.start_time.astype(np.int64),
        }
    )
    await connection.copy_to_table(matches_table, source=csv_bytes(match_rows), format="csv")
    await connection.copy_to_table(
        players_table, source=csv_bytes(player_rows(matches)), format="csv"
    )
    # Keys and indexes as OpenDota declares them, built after the bulk load (faster than
    # maintaining them row by row; the result is the same).
    await connection.execute(f"ALTER TABLE {matches_table} ADD PRIMARY KEY (match_id)")
    await connection.execute(f"CREATE INDEX ON {matches_table} (start_time)")
    await connection.execute(f"ALTER TABLE {players_table} ADD PRIMARY KEY (match_id, player_slot)")
    await connection.execute(f"CREATE INDEX ON {players_table} (hero_id)")
    await connection.execute(f"VACUUM ANALYZE {matches_table}")
    await connection.execute(f"VACUUM ANALYZE {players_table}")
    return matches_table, players_table, time.perf_counter() - started


async def run(count: int, rounds: int, seed: int) -> None:
    """Set up both stores, check the answers agree, time them, print the table."""
    print(f"bench.opendota_compare: {count:,} matches; load average {os.getloadavg()[0]:.2f}")
    truth = plant_truth(seed)
    matches = generate_matches(truth, count, patch=PATCH, seed=seed)
    heroes = [int(hero) for hero in truth.hero_ids]

    directory = Path(tempfile.mkdtemp(prefix="bench-opendota-"))
    started = time.perf_counter()
    warehouse = Warehouse.connect(f"chdb://{directory / 'warehouse'}")
    try:
        warehouse.migrate()
        insert_draft_table(warehouse, matches.to_arrow())
        counts = read_counts(warehouse, truth.hero_slots)
    finally:
        warehouse.close()
        shutil.rmtree(directory, ignore_errors=True)
    stats = compute_statistics(PATCH, SkillBracket.ALL, counts[(PATCH, SkillBracket.ALL)])
    project_setup = time.perf_counter() - started

    prefix = f"bench_od_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        matches_table, players_table, postgres_setup = await load_postgres(
            connection, matches, prefix
        )
        sql = OPENDOTA_MATCHUPS_SQL.format(matches=matches_table, player_matches=players_table)
        statement = await connection.prepare(sql)
        cutoff = int(matches.start_time.min()) - 1
        explained = await connection.fetch(f"EXPLAIN {sql}", heroes[0], cutoff)
        plan = "\n".join(str(row[0]) for row in explained)

        # Same answers: games and wins per opposing hero, for every hero.
        mismatched = []
        for hero in heroes:
            theirs = {
                r["hero_id"]: (r["games_played"], r["wins"])
                for r in await statement.fetch(hero, cutoff)
            }
            ours = {m.hero_id: (m.games, m.wins) for m in project_matchups(stats, hero)}
            if theirs != ours:
                mismatched.append(hero)

        # Latency, warm: the pass above loaded the pages; each round asks for every hero once.
        postgres_ms: list[float] = []
        project_ms: list[float] = []
        for _ in range(rounds):
            for hero in heroes:
                began = time.perf_counter()
                await statement.fetch(hero, cutoff)
                postgres_ms.append((time.perf_counter() - began) * 1e3)
            for hero in heroes:
                began = time.perf_counter()
                project_matchups(stats, hero)
                project_ms.append((time.perf_counter() - began) * 1e3)
        rows = await connection.fetchval(f"SELECT count(*) FROM {players_table}")
        size = await connection.fetchval(
            "SELECT pg_total_relation_size($1) + pg_total_relation_size($2)",
            matches_table,
            players_table,
        )
    finally:
        for table in (f"{prefix}_player_matches", f"{prefix}_matches"):
            await connection.execute(f"DROP TABLE IF EXISTS {table}")
        await connection.close()

    print(f"PostgreSQL plan: {plan_outline(plan, prefix)}")
    print(
        f"set-up: PostgreSQL COPY + keys + analyze {postgres_setup:.1f} s "
        f"({rows:,} player_matches rows, {size / 2**20:,.0f} MiB); "
        f"project insert + SQL counts + statistics {project_setup:.1f} s"
    )
    print(f"\nmatchups of one hero, {len(heroes)} heroes x {rounds} rounds (warm)")
    print(f"{'answer':<34} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9}")
    for name, values in (
        ("OpenDota SQL (PostgreSQL self-join)", postgres_ms),
        ("project PairTable row, sorted", project_ms),
    ):
        print(
            f"{name:<34} {percentile(values, 0.5):>9.3f} {percentile(values, 0.95):>9.3f} "
            f"{statistics.fmean(values):>9.3f}"
        )
    ratio = percentile(postgres_ms, 0.5) / percentile(project_ms, 0.5)
    print(f"ratio of p50s: {ratio:,.0f}x")
    agreement = f"yes, all {len(heroes)} heroes" if not mismatched else f"NO: {mismatched}"
    print(f"same games and wins per opposing hero: {agreement}")
    if mismatched:
        raise SystemExit(1)


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--matches", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over every hero")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    asyncio.run(run(args.matches, args.rounds, args.seed))


if __name__ == "__main__":
    main()
