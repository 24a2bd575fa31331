"""The warehouse's tables: the numbered ClickHouse migrations next to this module, and the Arrow
schemas rows are written in.

The etl service owns the warehouse and applies the migrations (`services/etl/repo.py`); readers
and the test and benchmark tooling build tables of these schemas.
"""

from __future__ import annotations

import pyarrow as pa

from services.common.sql_migrations import Migration, load_migrations

# Arrow schemas of the three tables, in insert order. Arrow batches go into ClickHouse without a
# Python-level row encoder, which is what makes tens of thousands of matches per second possible.
MATCH_SCHEMA = pa.schema(
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
PLAYER_SCHEMA = pa.schema(
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
PICK_BAN_SCHEMA = pa.schema(
    [
        ("match_id", pa.uint64()),
        ("ord", pa.uint8()),
        ("is_pick", pa.bool_()),
        ("side", pa.string()),
        ("hero_id", pa.uint16()),
    ]
)


def migrations() -> list[Migration]:
    """The numbered migrations shipped in services/common/warehouse/migrations, in order."""
    return load_migrations("services.common.warehouse")
