"""The ClickHouse warehouse: one adapter over clickhouse-connect for embedded chdb and a server.

`chdb:///dir` opens the embedded engine (one owner process per directory); `http(s)://...`
talks to a ClickHouse server. The SQL is the same for both. Calls are synchronous (the chdb
backend has no async client); async callers run them in a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import clickhouse_connect
import pyarrow as pa

from services.etl.matches import CleanMatch, Side

log = logging.getLogger(__name__)

# Arrow schemas of the three tables, in insert order. Arrow batches go into ClickHouse without a
# Python-level row encoder, which is what makes tens of thousands of matches per second possible.
_MATCH_SCHEMA = pa.schema(
    [
        ("match_id", pa.uint64()),
        ("match_seq_num", pa.uint64()),
        ("start_time", pa.uint32()),
        ("duration_seconds", pa.uint32()),
        ("patch", pa.string()),
        ("game_mode", pa.uint8()),
        ("lobby_type", pa.uint8()),
        ("cluster", pa.uint16()),
        ("region", pa.uint16()),
        ("avg_rank_tier", pa.uint8()),
        ("skill_bracket", pa.string()),
        ("radiant_win", pa.bool_()),
        ("source", pa.string()),
        ("radiant_heroes", pa.list_(pa.uint16())),
        ("dire_heroes", pa.list_(pa.uint16())),
    ]
)
_PLAYER_SCHEMA = pa.schema(
    [
        ("match_id", pa.uint64()),
        ("player_slot", pa.uint8()),
        ("side", pa.string()),
        ("hero_id", pa.uint16()),
        ("account_id", pa.uint32()),
        ("position", pa.uint8()),
        ("lane_role", pa.uint8()),
        ("win", pa.bool_()),
        ("kills", pa.uint16()),
        ("deaths", pa.uint16()),
        ("assists", pa.uint16()),
        ("gold_per_min", pa.uint16()),
        ("xp_per_min", pa.uint16()),
        ("items", pa.list_(pa.uint16())),
        ("leaver_status", pa.uint8()),
        ("patch", pa.string()),
        ("start_time", pa.uint32()),
    ]
)
_PICK_BAN_SCHEMA = pa.schema(
    [
        ("match_id", pa.uint64()),
        ("ord", pa.uint8()),
        ("is_pick", pa.bool_()),
        ("side", pa.string()),
        ("hero_id", pa.uint16()),
    ]
)


def skill_bracket_of(avg_rank_tier: int | None) -> str:
    """The bracket name stored with a match (tens digit of rank tier = medal 1..8)."""
    if avg_rank_tier is None or not 10 <= avg_rank_tier <= 89:
        return "unknown"
    medal = avg_rank_tier // 10
    return ("herald_guardian", "crusader_archon", "legend_ancient", "divine_immortal")[
        min((medal - 1) // 2, 3)
    ]


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The numbered migrations shipped in services/etl/migrations, in order."""
    found = []
    for entry in resources.files("services.etl").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append(Migration(version, entry.name, entry.read_text()))
    return sorted(found, key=lambda migration: migration.version)


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


class Warehouse:
    """Schema, writes and the few reads etl needs; thread-safe for one process."""

    def __init__(self, client: Any) -> None:
        self._client = client
        # chdb's embedded session is not safe for concurrent queries from several threads.
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, dsn: str) -> Warehouse:
        """Open the warehouse named by `dsn` (chdb:///dir or http(s)://user:pass@host:8123/db)."""
        return cls(clickhouse_connect.get_client(dsn=dsn))

    def close(self) -> None:
        """Release the connection (and, for chdb, the directory lock)."""
        with self._lock:
            self._client.close()

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
            schema=_PLAYER_SCHEMA,
        )
        pick_ban_table = pa.table(
            [
                [m.match_id for m in ms for _ in m.picks_bans],
                [s.order for m in ms for s in m.picks_bans],
                [s.is_pick for m in ms for s in m.picks_bans],
                [s.side.value for m in ms for s in m.picks_bans],
                [s.hero_id for m in ms for s in m.picks_bans],
            ],
            schema=_PICK_BAN_SCHEMA,
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
                [skill_bracket_of(m.avg_rank_tier) for m in matches],
                [m.radiant_win for m in matches],
                [m.source.value for m in matches],
                [sorted(p.hero_id for p in m.players if p.side is radiant) for m in matches],
                [sorted(p.hero_id for p in m.players if p.side is not radiant) for m in matches],
            ],
            schema=_MATCH_SCHEMA,
        )
        with self._lock:
            # Children first: a match row is the marker that the whole match is stored.
            if player_table.num_rows:
                self._client.insert_arrow("match_players", player_table)
            if pick_ban_table.num_rows:
                self._client.insert_arrow("picks_bans", pick_ban_table)
            self._client.insert_arrow("matches", match_table)

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
