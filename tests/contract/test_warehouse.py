"""The warehouse on the embedded ClickHouse engine: schema, idempotent writes, counts once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common.dota import Side, SkillBracket
from services.common.warehouse import open_reader
from services.common.warehouse.direct import ClickHouseReader
from services.common.warehouse.etl_rpc import EtlReader
from services.common.warehouse.schema import migrations
from services.etl.matches import CleanMatch, MatchSource, PickBanRow, PlayerRow
from services.etl.repo import Warehouse


def synthetic_match(
    match_id: int, *, radiant_win: bool = True, rank: int | None = 54
) -> CleanMatch:
    """A 5v5 match with distinct heroes derived from the id."""
    heroes = [(match_id + k) % 120 + 1 for k in range(10)]
    players = tuple(
        PlayerRow(
            hero_id=hero,
            side=Side.RADIANT if k < 5 else Side.DIRE,
            player_slot=k if k < 5 else 128 + k - 5,
            account_id=None if k else 1234,
            kills=k,
            deaths=1,
            assists=2,
            items=(1, 2, 3),
        )
        for k, hero in enumerate(heroes)
    )
    picks = tuple(
        PickBanRow(order=k, is_pick=True, side=players[k].side, hero_id=heroes[k])
        for k in range(10)
    )
    return CleanMatch(
        match_id=match_id,
        radiant_win=radiant_win,
        source=MatchSource.IMPORT,
        players=players,
        start_time=1_785_348_579,
        duration_seconds=1800,
        patch="7.41",
        game_mode=22,
        lobby_type=7,
        avg_rank_tier=rank,
        picks_bans=picks,
    )


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    store = Warehouse.connect(f"chdb://{tmp_path / 'warehouse'}")
    store.migrate()
    yield store
    store.close()


def test_migrations_are_numbered_and_apply_once(warehouse: Warehouse) -> None:
    versions = [m.version for m in migrations()]
    assert versions == sorted(set(versions))
    assert versions[0] == 1
    assert warehouse.migrate() == []
    tables = {row[0] for row in warehouse.query_rows("SHOW TABLES")}
    assert {"matches", "match_players", "picks_bans", "schema_migrations"} <= tables


def test_reinserting_matches_counts_each_once(warehouse: Warehouse) -> None:
    batch = [synthetic_match(i) for i in range(1, 101)]
    warehouse.insert_matches(batch)
    warehouse.insert_matches(batch[:50])
    warehouse.insert_matches(batch[25:])
    assert warehouse.match_count() == 100
    assert warehouse.checksum() == (100, sum(range(1, 101)))
    players = warehouse.query_rows("SELECT count() FROM match_players FINAL")[0][0]
    picks = warehouse.query_rows("SELECT count() FROM picks_bans FINAL")[0][0]
    assert (players, picks) == (1000, 1000)


def test_rows_keep_what_the_match_said(warehouse: Warehouse) -> None:
    warehouse.insert_matches([synthetic_match(7, radiant_win=False, rank=81)])
    row = warehouse.query_rows(
        "SELECT patch, skill_bracket, radiant_win, radiant_heroes, dire_heroes, duration_seconds "
        "FROM matches FINAL WHERE match_id = 7"
    )[0]
    assert row == ("7.41", "divine_immortal", False, [8, 9, 10, 11, 12], [13, 14, 15, 16, 17], 1800)
    winners = warehouse.query_rows(
        "SELECT side, count() FROM match_players FINAL WHERE match_id = 7 AND win GROUP BY side"
    )
    assert winners == [("dire", 5)]
    anonymous = warehouse.query_rows(
        "SELECT countIf(account_id IS NULL) FROM match_players FINAL WHERE match_id = 7"
    )[0][0]
    assert anonymous == 9


def test_existing_match_ids(warehouse: Warehouse) -> None:
    warehouse.insert_matches([synthetic_match(1), synthetic_match(2)])
    assert warehouse.existing_match_ids([1, 2, 3]) == {1, 2}
    assert warehouse.existing_match_ids([]) == set()


@pytest.mark.parametrize(
    ("rank", "bracket"),
    [
        (None, "unknown"),
        (11, "herald_guardian"),
        (25, "herald_guardian"),
        (35, "crusader_archon"),
        (45, "crusader_archon"),
        (54, "legend_ancient"),
        (65, "legend_ancient"),
        (75, "divine_immortal"),
        (80, "divine_immortal"),
        (5, "unknown"),
        (95, "unknown"),
    ],
)
def test_skill_bracket_from_rank_tier(rank: int | None, bracket: str) -> None:
    assert SkillBracket.from_rank_tier(rank) == bracket


def test_open_reader_reads_the_dsn_else_the_etl(tmp_path: Path) -> None:
    store = Warehouse.connect(f"chdb://{tmp_path / 'wh'}")
    store.migrate()
    store.insert_matches([synthetic_match(1)])
    store.close()
    direct = open_reader(f"chdb://{tmp_path / 'wh'}", "127.0.0.1:1")
    try:
        assert isinstance(direct, ClickHouseReader)
        assert direct.match_drafts().num_rows == 1
    finally:
        direct.close()
    through_etl = open_reader(None, "127.0.0.1:1")
    assert isinstance(through_etl, EtlReader)
    through_etl.close()


def test_second_process_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    first = Warehouse.connect(f"chdb://{tmp_path / 'wh'}")
    try:
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "from services.etl.repo import Warehouse; "
                f"Warehouse.connect('chdb://{tmp_path / 'wh'}')",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert probe.returncode != 0
        assert "lock" in probe.stderr.lower()
    finally:
        first.close()


async def test_a_read_through_the_etl_continues_the_callers_trace(
    tmp_path: Path, span_exporter: InMemorySpanExporter
) -> None:
    from counterpick.etl.v1 import etl_service_pb2_grpc as etl_grpc
    from services.common.config import ServiceSettings
    from services.common.server import GrpcServer, registration
    from services.etl.config import EtlSettings
    from services.etl.server import SERVICE_NAME, EtlServicer

    store = Warehouse.connect(f"chdb://{tmp_path / 'wh'}")
    store.migrate()
    store.insert_matches([synthetic_match(1)])

    class Runtime:
        """Only what ReadWarehouse touches: the open warehouse."""

        warehouse = store

    server = GrpcServer(
        name="etl",
        settings=ServiceSettings(port=0),
        services=[
            registration(
                EtlServicer(EtlSettings(), Runtime()),  # type: ignore[arg-type]
                etl_grpc.add_EtlServiceServicer_to_server,
                SERVICE_NAME,
            )
        ],
    )
    port = await server.start()
    reader = open_reader(None, f"127.0.0.1:{port}")
    try:
        with trace.get_tracer("test").start_as_current_span("recompute") as caller:
            # Callers run the synchronous reader in a thread, as the recompute does.
            assert await asyncio.to_thread(reader.latest_loaded_at) is not None
    finally:
        reader.close()
        await server.stop(0)
        store.close()
    served = [
        span
        for span in span_exporter.get_finished_spans()
        if span.name == f"/{SERVICE_NAME}/ReadWarehouse"
        and span.kind is trace.SpanKind.SERVER
        and span.context is not None
        and span.context.trace_id == caller.get_span_context().trace_id
    ]
    assert len(served) == 1
