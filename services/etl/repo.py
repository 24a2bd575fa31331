"""The etl's side of the ClickHouse warehouse: migrations, match writes, and the id checks of
the idempotent sink.

`chdb:///dir` opens the embedded engine (one owner process per directory); `http(s)://...`
talks to a ClickHouse server. The SQL is the same for both. The tables and the read queries are
shared (`services/common/warehouse`): the etl inherits the reads so that, as the owner of an
embedded warehouse, it can serve them to other processes. Calls are synchronous (the chdb backend
has no async client); async callers run them in a thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from services.common.dota import Side, SkillBracket
from services.common.dota_constants import DotaConstants
from services.common.warehouse.direct import ClickHouseReader
from services.common.warehouse.schema import (
    MATCH_SCHEMA,
    PICK_BAN_SCHEMA,
    PLAYER_SCHEMA,
    migrations,
)
from services.etl.matches import CleanMatch

log = logging.getLogger(__name__)


# The patch a match's start time falls in: the last of the constants' patches (names, release
# unix seconds, both in release order) released at or before it.
_PATCH_INDEX = (
    "arrayCount(t -> t <= toInt64(toUnixTimestamp(assumeNotNull(start_time))), "
    "{starts:Array(Int64)})"
)
_PATCH_AT_START = f"arrayElement({{names:Array(String)}}, {_PATCH_INDEX})"
# A row labelled with a known patch older than the one its start time falls in.
_MISLABELLED = (
    "start_time IS NOT NULL AND indexOf({names:Array(String)}, patch) BETWEEN 1 AND "
    f"{_PATCH_INDEX} - 1"
)


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


class Warehouse(ClickHouseReader):
    """The etl's warehouse: schema, writes, and the shared reads it serves over ReadWarehouse
    (the one process that owns an embedded warehouse also answers everyone's reads)."""

    def migrate(self) -> list[str]:
        """Apply the migrations not applied yet; returns the names applied now."""
        with self._lock:
            self._client.command(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
                "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
                "ENGINE = ReplacingMergeTree ORDER BY version"
            )
            applied = {
                row[0]
                for row in self._client.query(
                    "SELECT version FROM schema_migrations FINAL"
                ).result_rows
            }
            done = []
            for migration in migrations():
                if migration.version in applied:
                    continue
                for statement in _statements(migration.sql):
                    self._client.command(statement)
                self._client.insert(
                    "schema_migrations",
                    [[migration.version, migration.name]],
                    column_names=["version", "name"],
                )
                done.append(migration.name)
                log.info("applied warehouse migration %s", migration.name)
            return done

    def insert_matches(self, matches: Sequence[CleanMatch]) -> None:
        """Write matches with their players and drafts; re-inserting a match is harmless."""
        if not matches:
            return
        radiant = Side.RADIANT
        # One nested comprehension per column, no per-row tuples: several times faster than
        # appending row by row, and it keeps garbage-collector pressure low.
        ms = matches
        player_table = pa.table(
            [
                [m.match_id for m in ms for _ in m.players],
                [p.player_slot for m in ms for p in m.players],
                [p.side.value for m in ms for p in m.players],
                [p.hero_id for m in ms for p in m.players],
                [p.account_id for m in ms for p in m.players],
                [p.position for m in ms for p in m.players],
                [p.lane_role for m in ms for p in m.players],
                [m.radiant_win == (p.side is radiant) for m in ms for p in m.players],
                [p.kills for m in ms for p in m.players],
                [p.deaths for m in ms for p in m.players],
                [p.assists for m in ms for p in m.players],
                [p.gold_per_min for m in ms for p in m.players],
                [p.xp_per_min for m in ms for p in m.players],
                [p.items for m in ms for p in m.players],
                [p.leaver_status for m in ms for p in m.players],
                [m.patch or "" for m in ms for _ in m.players],
                [m.start_time for m in ms for _ in m.players],
            ],
            schema=PLAYER_SCHEMA,
        )
        pick_ban_table = pa.table(
            [
                [m.match_id for m in ms for _ in m.picks_bans],
                [s.order for m in ms for s in m.picks_bans],
                [s.is_pick for m in ms for s in m.picks_bans],
                [s.side.value for m in ms for s in m.picks_bans],
                [s.hero_id for m in ms for s in m.picks_bans],
            ],
            schema=PICK_BAN_SCHEMA,
        )
        match_table = pa.table(
            [
                [m.match_id for m in matches],
                [m.match_seq_num for m in matches],
                [m.start_time for m in matches],
                [m.duration_seconds for m in matches],
                [m.patch or "" for m in matches],
                [m.game_mode for m in matches],
                [m.lobby_type for m in matches],
                [m.cluster for m in matches],
                [m.region for m in matches],
                [m.avg_rank_tier for m in matches],
                [SkillBracket.from_rank_tier(m.avg_rank_tier).value for m in matches],
                [m.radiant_win for m in matches],
                [m.source.value for m in matches],
                [sorted(p.hero_id for p in m.players if p.side is radiant) for m in matches],
                [sorted(p.hero_id for p in m.players if p.side is not radiant) for m in matches],
            ],
            schema=MATCH_SCHEMA,
        )
        with self._lock:
            # Children first: a match row is the marker that the whole match is stored.
            if player_table.num_rows:
                self._client.insert_arrow("match_players", player_table)
            if pick_ban_table.num_rows:
                self._client.insert_arrow("picks_bans", pick_ban_table)
            self._client.insert_arrow("matches", match_table)

    def relabel_patches(self, constants: DotaConstants) -> int:
        """Move every stored match (and its player rows) whose start time falls in a patch
        newer than the one it is labelled with to that patch; returns the matches moved.

        A match stored before the constants knew its patch was labelled with the patch before;
        run after the constants gain a patch (and at start, for an update made while the etl was
        down), so that the next full recount counts it under its own patch. Only moves to a
        newer patch: labels given without a start time, or by an import's default, stay. A
        count finds the work first, so a run with nothing to move costs one read and rewrites
        no part. The mutation is synchronous (`mutations_sync`): when this returns, reads see
        the new labels; loaded_at is untouched, so incremental counts do not see a relabelled
        match as new (the recompute recounts in full on a constants change).
        """
        names = [patch.name for patch in constants.patches]
        # Ceiling: patch_at counts a whole second as in a patch released during it.
        starts = [math.ceil(patch.released_at.timestamp()) for patch in constants.patches]
        parameters = {"names": names, "starts": starts}
        with self._lock:
            moved = int(
                self._client.command(
                    f"SELECT count() FROM matches FINAL WHERE {_MISLABELLED}",  # noqa: S608
                    parameters=parameters,
                )
            )
            if moved == 0:
                return 0
            for table in ("matches", "match_players"):
                self._client.command(
                    f"ALTER TABLE {table} UPDATE patch = {_PATCH_AT_START} WHERE {_MISLABELLED}",
                    parameters=parameters,
                    settings={"mutations_sync": 2},
                )
        log.info("relabelled %d matches with the patch of their start time", moved)
        return moved

    def insert_arrow(self, table_name: str, rows: pa.Table) -> None:
        """Write an Arrow table whose columns are those of `table_name` (for tooling and tests
        that generate rows in bulk, such as the synthetic benchmark's draft-only matches)."""
        with self._lock:
            self._client.insert_arrow(table_name, rows)

    def existing_match_ids(self, match_ids: Iterable[int]) -> set[int]:
        """Which of `match_ids` are already stored."""
        ids = list(set(match_ids))
        if not ids:
            return set()
        with self._lock:
            result = self._client.query(
                "SELECT DISTINCT match_id FROM matches WHERE match_id IN {ids:Array(UInt64)}",
                parameters={"ids": ids},
            )
        return {int(row[0]) for row in result.result_rows}

    def match_ids_with_accounts(self, match_ids: Iterable[int]) -> set[int]:
        """Which of `match_ids` are stored with at least one player's account id."""
        ids = list(set(match_ids))
        if not ids:
            return set()
        with self._lock:
            result = self._client.query(
                "SELECT DISTINCT match_id FROM match_players FINAL "
                "WHERE match_id IN {ids:Array(UInt64)} AND account_id IS NOT NULL",
                parameters={"ids": ids},
            )
        return {int(row[0]) for row in result.result_rows}

    def match_count(self) -> int:
        """Stored matches, each counted once."""
        with self._lock:
            return int(self._client.command("SELECT count() FROM matches FINAL"))

    def checksum(self) -> tuple[int, int]:
        """(count, sum of match ids) over distinct stored matches, for crash-test comparisons."""
        with self._lock:
            row = self._client.query(
                "SELECT count(), sum(match_id) FROM (SELECT match_id FROM matches FINAL)"
            ).result_rows[0]
        return int(row[0]), int(row[1])

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run one statement (for migrations tooling and tests)."""
        with self._lock:
            return self._client.command(sql, parameters=parameters)

    def query_rows(
        self, sql: str, parameters: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Rows of one query."""
        with self._lock:
            return [
                tuple(row) for row in self._client.query(sql, parameters=parameters).result_rows
            ]
