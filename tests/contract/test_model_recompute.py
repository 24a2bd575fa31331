"""Recompute against a real warehouse: incremental equals a full recount, the etl read RPC gives
the same counts as a direct read, and personal scores find a planted player's edge."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis.asyncio as aioredis

from counterpick.common.v1 import common_pb2
from counterpick.model.v1 import model_service_pb2 as pb
from services.common.config import ServiceSettings
from services.common.dota import Side, SkillBracket
from services.common.dota_constants import load_constants
from services.common.server import GrpcServer, registration
from services.common.service_tokens import StaticToken
from services.common.tokens import STEAM_ID64_BASE, Caller, TokenVerifier, set_current_caller
from services.common.warehouse.etl_rpc import EtlReader
from services.common.warehouse.reader import WarehouseReader
from services.etl.matches import CleanMatch, MatchSource, PlayerRow
from services.etl.repo import Warehouse
from services.model.recompute import Recomputer, additive_model
from services.model.repo import SnapshotStore
from services.model.runtime import ModelRuntime
from services.model.server import ModelServicer
from services.model.snapshot import ModelSnapshot
from services.model.statistics import BracketStatistics, Counts
from services.model.warehouse_counts import PatchBracket, read_counts
from services.model.winmodel.served import DraftModel
from tests.auth_keys import SigningKeys
from tests.contract.test_model_service import draft_table
from tests.warehouse_drafts import insert_draft_table

PLANTED_ACCOUNT = 777
PLANTED_HERO = 10
START = 1_780_000_000


def player_matches(count: int, first_id: int, seed: int) -> list[CleanMatch]:
    """Matches with account ids: in every tenth the planted account plays PLANTED_HERO on Radiant
    and wins 75 % of them; everyone else's results are coin flips."""
    rng = np.random.default_rng(seed)
    heroes = [h for h in sorted(load_constants().heroes) if h != PLANTED_HERO]
    matches = []
    for index in range(count):
        planted = index % 10 == 0
        others = rng.choice(heroes, 10, replace=False).tolist()
        radiant = [PLANTED_HERO, *others[:4]] if planted else others[:5]
        dire = others[5:]
        win = bool(rng.random() < (0.75 if planted else 0.5))
        players = tuple(
            PlayerRow(
                hero_id=hero,
                side=side,
                player_slot=slot,
                account_id=PLANTED_ACCOUNT
                if planted and hero == PLANTED_HERO
                else 1000 + 10 * (index % 40) + slot % 5 + (5 if side is Side.DIRE else 0),
            )
            for team, side, base in ((radiant, Side.RADIANT, 0), (dire, Side.DIRE, 128))
            for slot, hero in enumerate(team, start=base)
        )
        matches.append(
            CleanMatch(
                match_id=first_id + index,
                radiant_win=win,
                source=MatchSource.IMPORT,
                players=players,
                start_time=START + index * 60,
                patch="7.40",
                game_mode=22,
                lobby_type=7,
                avg_rank_tier=55,
            )
        )
    return matches


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    store = Warehouse.connect(f"chdb://{tmp_path / 'warehouse'}")
    store.migrate()
    return store


async def test_incremental_recompute_equals_a_full_recount(
    warehouse: Warehouse, redis_url: str
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        original = draft_table(5_000, "7.40", 1, seed=1)
        insert_draft_table(warehouse, original)
        recomputer = Recomputer(warehouse, SnapshotStore(redis), load_constants())
        first = await recomputer.run(full=True)
        assert first.mode == "full"
        insert_draft_table(warehouse, draft_table(2_000, "7.40", 50_000, seed=2))
        # Undated matches (no patch) belong to no patch's statistics.
        insert_draft_table(warehouse, draft_table(300, "", 90_000, seed=3))
        # Re-delivered old matches (at-least-once) must not be counted twice incrementally.
        insert_draft_table(warehouse, original.slice(0, 100))
        second = await recomputer.run()
        assert second.mode == "incremental"
        assert second.matches_used == 7_000
        full = read_counts(warehouse, recomputer.hero_slots)
        assert {patch for patch, _ in full} == {"7.40"}
        for key, counts in full.items():
            kept = recomputer.counts[key]
            assert kept.matches == counts.matches, key
            assert np.array_equal(kept.versus_games, counts.versus_games), key
            assert np.array_equal(kept.with_wins, counts.with_wins), key
            assert np.array_equal(kept.hero_wins, counts.hero_wins), key
        runs = await SnapshotStore(redis).runs()
        assert [run.run_id for run in runs[:2]] == [second.run_id, first.run_id]
        assert runs[0].coverage["7.40"]["all"] == 7_000
    finally:
        await redis.aclose()
        warehouse.close()


class ArrivingMatches:
    """A warehouse reader during which matches keep arriving: each hero count first stores a
    batch (after the run read its watermark) and then, once counted, another (before the pair
    count), as the etl does while a recompute reads."""

    def __init__(self, reader: WarehouseReader, warehouse: Warehouse, first_id: int) -> None:
        self._reader = reader
        self._warehouse = warehouse
        self.next_id = first_id
        self.arrived = 0

    def _arrive(self, count: int) -> None:
        insert_draft_table(self._warehouse, draft_table(count, "7.40", self.next_id, seed=count))
        self.next_id += count
        self.arrived += count

    def hero_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table:
        self._arrive(150)
        counted = self._reader.hero_counts(patch, loaded_after, loaded_until)
        self._arrive(250)
        return counted

    def pair_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table:
        return self._reader.pair_counts(patch, loaded_after, loaded_until)

    def match_drafts(self, patch: str | None = None) -> pa.Table:
        return self._reader.match_drafts(patch)

    def hero_position_counts(self, patch: str | None = None) -> pa.Table:
        return self._reader.hero_position_counts(patch)

    def player_hero_records(self, account_id: int) -> pa.Table:
        return self._reader.player_hero_records(account_id)

    def player_hero_groups(self) -> pa.Table:
        return self._reader.player_hero_groups()

    def latest_loaded_at(self) -> datetime | None:
        return self._reader.latest_loaded_at()

    def close(self) -> None:
        self._reader.close()


# Keys the etl servers of these tests verify with, and the model's service token they accept.
_KEYS = SigningKeys.create(Path(tempfile.mkdtemp(prefix="counterpick-keys-")))


def model_reader(address: str) -> EtlReader:
    """An EtlReader that reads as the model service does (its service token)."""
    return EtlReader(address, tokens=StaticToken(_KEYS.token("service", user_id="service:model")))


@asynccontextmanager
async def etl_read_server(warehouse: Warehouse) -> AsyncIterator[str]:
    """The address of a real etl ReadWarehouse server over `warehouse`, stopped on exit."""
    from counterpick.etl.v1 import etl_service_pb2_grpc as etl_grpc
    from services.etl.config import EtlSettings
    from services.etl.server import EtlServicer

    class Runtime:
        """Only what ReadWarehouse touches: the open warehouse."""

        def __init__(self, store: Warehouse) -> None:
            self.warehouse = store

    servicer = EtlServicer(EtlSettings(), Runtime(warehouse))  # type: ignore[arg-type]
    server = GrpcServer(
        name="etl",
        settings=ServiceSettings(port=0),
        services=[
            registration(
                servicer, etl_grpc.add_EtlServiceServicer_to_server, "counterpick.etl.v1.EtlService"
            )
        ],
        # Etl admits only admin and service callers, per-player reads only the model's identity.
        verifier=TokenVerifier(
            issuer="counterpick-auth",
            audience="counterpick",
            fetch_keys=_KEYS.source,
            deny_list=None,  # no revocations in these tests
        ),
    )
    port = await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@asynccontextmanager
async def etl_reader(warehouse: Warehouse) -> AsyncIterator[EtlReader]:
    """An EtlReader on a real etl ReadWarehouse server over `warehouse`."""
    async with etl_read_server(warehouse) as address:
        reader = model_reader(address)
        try:
            yield reader
        finally:
            await asyncio.to_thread(reader.close)


def assert_same_counts(kept: dict[PatchBracket, Counts], full: dict[PatchBracket, Counts]) -> None:
    """Equal counts in every (patch, bracket), heroes and pairs alike."""
    assert set(kept) == set(full)
    for key, counts in full.items():
        mine = kept[key]
        assert mine.matches == counts.matches, key
        for name in ("hero_games", "hero_wins", "versus_games", "versus_wins", "with_games"):
            assert np.array_equal(getattr(mine, name), getattr(counts, name)), (key, name)
        assert np.array_equal(mine.with_wins, counts.with_wins), key


@pytest.mark.parametrize("through", ["direct", "etl"])
async def test_matches_arriving_during_a_run_count_once_in_the_next(
    warehouse: Warehouse, redis_url: str, through: str
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    insert_draft_table(warehouse, draft_table(3_000, "7.40", 1, seed=11))
    try:
        async with etl_reader(warehouse) as over_etl:
            reader: WarehouseReader = warehouse if through == "direct" else over_etl
            arriving = ArrivingMatches(reader, warehouse, first_id=100_000)
            recomputer = Recomputer(arriving, SnapshotStore(redis), load_constants())
            recomputer.fit_model = lambda patch, stats, drafts: additive_model(patch, stats)

            first = await recomputer.run(full=True)
            # The full recount stops at its watermark: the 400 stored meanwhile are not in it.
            assert (first.matches_used, arriving.arrived) == (3_000, 400)
            assert_same_counts(
                recomputer.counts,
                read_counts(warehouse, recomputer.hero_slots, None, None, recomputer.watermark),
            )
            everything = read_counts(warehouse, recomputer.hero_slots)
            assert everything[("7.40", SkillBracket.ALL)].matches == 3_400

            second = await recomputer.run()
            assert second.mode == "incremental"
            # Exactly the 400 of the previous run; the 400 stored during this one wait.
            assert (second.matches_used, arriving.arrived) == (3_400, 800)
            assert recomputer.watermark is not None
            assert_same_counts(
                recomputer.counts,
                read_counts(warehouse, recomputer.hero_slots, None, None, recomputer.watermark),
            )

            recomputer.source = reader  # no more arrivals
            third = await recomputer.run()
            assert third.matches_used == 3_800
            # Every match once: the incremental counts equal a full recount of everything.
            assert_same_counts(recomputer.counts, read_counts(warehouse, recomputer.hero_slots))
    finally:
        await redis.aclose()
        warehouse.close()


async def test_the_etl_read_rpc_gives_what_a_direct_read_gives(warehouse: Warehouse) -> None:
    insert_draft_table(warehouse, draft_table(3_000, "7.40", 1, seed=4))
    warehouse.insert_matches(player_matches(300, 90_000, seed=4))
    async with etl_read_server(warehouse) as address:
        reader = model_reader(address)
        try:
            assert (await _thread(reader.hero_counts)).equals(warehouse.hero_counts())
            assert (await _thread(reader.pair_counts, "7.40")).equals(warehouse.pair_counts("7.40"))
            assert (await _thread(reader.match_drafts)).num_rows == 3_300
            assert (await _thread(reader.player_hero_groups)).num_rows == (
                warehouse.player_hero_groups().num_rows
            )
            records = await _thread(reader.player_hero_records, PLANTED_ACCOUNT)
            assert records.num_rows == 30
            assert await _thread(reader.latest_loaded_at) == warehouse.latest_loaded_at()
        finally:
            reader.close()
    warehouse.close()
    dead = model_reader(address)
    with pytest.raises(ConnectionError):
        dead.hero_counts()
    dead.close()


async def test_personal_scores_find_the_planted_players_edge(
    warehouse: Warehouse, redis_url: str
) -> None:
    insert_draft_table(warehouse, draft_table(20_000, "7.40", 1, seed=5))
    warehouse.insert_matches(player_matches(3_000, 90_000, seed=5))
    redis = aioredis.Redis.from_url(redis_url)
    runtime = ModelRuntime(
        constants=load_constants(), redis=redis, source=warehouse, recompute_interval_seconds=0
    )
    try:
        await runtime.start()
        await runtime.recompute(full=True)
        snapshot = runtime.require()
        assert 1 < snapshot.pas_prior_weight < 100_000  # fitted on the stored players
        servicer = ModelServicer(runtime, load_constants())
        # Called in-process, past the interceptor: bind the caller it would have verified.
        set_current_caller(
            Caller("u-planted", frozenset({"user"}), "jti", 0, STEAM_ID64_BASE + PLANTED_ACCOUNT)
        )
        response = await servicer.GetPersonalScores(
            pb.GetPersonalScoresRequest(account_id=PLANTED_ACCOUNT), None
        )
        best = response.scores[0]
        assert best.hero_id == PLANTED_HERO
        assert best.games == 300
        # Expected: the hero's base rate in the matches' own bracket (legend_ancient), which
        # includes the player's own games.
        bracket_rate = snapshot.context("7.40", SkillBracket.LEGEND_ANCIENT).statistics.base_rate
        assert best.expected_win_rate == pytest.approx(bracket_rate[PLANTED_HERO])
        assert 0.05 < best.pas < best.win_rate - best.expected_win_rate
        assert best.pas_interval.lower > 0
        assert best.last_played_at.seconds == START + 2_990 * 60
        set_current_caller(Caller("svc", frozenset({"service"}), "jti", 0))
        nobody = await servicer.GetPersonalScores(
            pb.GetPersonalScoresRequest(account_id=123456), None
        )
        set_current_caller(
            Caller("u-planted", frozenset({"user"}), "jti", 0, STEAM_ID64_BASE + PLANTED_ACCOUNT)
        )
        assert list(nobody.scores) == []
        picks = await servicer.SuggestPicks(
            pb.SuggestPicksRequest(
                side=common_pb2.TEAM_SIDE_RADIANT,
                patch="7.40",
                account_id=PLANTED_ACCOUNT,
                candidate_hero_ids=[PLANTED_HERO],
            ),
            None,
        )
        assert picks.personalized
        personal = [t for t in picks.suggestions[0].terms if t.kind == pb.TERM_KIND_PERSONAL]
        assert personal[0].value == pytest.approx(best.pas)
        assert snapshot.context("7.40", SkillBracket.ALL).statistics.matches == 23_000
    finally:
        await runtime.stop()
        await redis.aclose()


async def _thread[T](function: Callable[..., T], *args: object) -> T:
    return await asyncio.to_thread(function, *args)


class CountingReader:
    """A warehouse reader that records which reads a run makes."""

    def __init__(self, reader: WarehouseReader) -> None:
        self._reader = reader
        self.calls: list[str] = []

    def hero_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table:
        self.calls.append("hero_counts")
        return self._reader.hero_counts(patch, loaded_after, loaded_until)

    def pair_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table:
        self.calls.append("pair_counts")
        return self._reader.pair_counts(patch, loaded_after, loaded_until)

    def match_drafts(self, patch: str | None = None) -> pa.Table:
        self.calls.append(f"match_drafts {patch}")
        return self._reader.match_drafts(patch)

    def hero_position_counts(self, patch: str | None = None) -> pa.Table:
        self.calls.append("hero_position_counts")
        return self._reader.hero_position_counts(patch)

    def player_hero_records(self, account_id: int) -> pa.Table:
        self.calls.append("player_hero_records")
        return self._reader.player_hero_records(account_id)

    def player_hero_groups(self) -> pa.Table:
        self.calls.append("player_hero_groups")
        return self._reader.player_hero_groups()

    def latest_loaded_at(self) -> datetime | None:
        self.calls.append("latest_loaded_at")
        return self._reader.latest_loaded_at()

    def close(self) -> None:
        self._reader.close()


async def test_incremental_runs_cost_what_the_new_matches_touch(
    warehouse: Warehouse, redis_url: str
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    insert_draft_table(warehouse, draft_table(2_000, "7.39", 1, seed=21))
    insert_draft_table(warehouse, draft_table(3_000, "7.40", 10_000, seed=22))
    reader = CountingReader(warehouse)
    fits: list[str] = []

    def fit(patch: str, statistics: BracketStatistics, drafts: pa.Table) -> DraftModel:
        fits.append(patch)
        return replace(additive_model(patch, statistics), version=f"fitted-{patch}-{len(fits)}")

    store = SnapshotStore(redis)
    # A clock before 7.42 started (2026-11-18): the current patch is then the newest started one
    # with data, 7.41, as the last step checks.
    before_742 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    recomputer = Recomputer(
        reader,
        store,
        load_constants(),
        fit_model=fit,
        min_patch_matches=0,
        clock=lambda: before_742,
    )
    try:
        first = await recomputer.run(full=True)
        assert sorted(fits) == ["7.39", "7.40"]
        assert "player_hero_groups" in reader.calls
        before = recomputer.snapshot
        assert before is not None

        # Nothing new: one watermark query, nothing recorded, nothing published.
        reader.calls.clear()
        idle = await recomputer.run(skip_unchanged=True)
        assert (idle.status, idle.mode, idle.snapshot_version) == (
            "unchanged",
            "incremental",
            first.snapshot_version,
        )
        assert reader.calls == ["latest_loaded_at"]
        assert await store.current_version() == first.snapshot_version
        assert [run.run_id for run in await store.runs()] == [first.run_id]

        # New matches of 7.40 only: counted and published, no refit, 7.39 taken over as it was.
        insert_draft_table(warehouse, draft_table(500, "7.40", 50_000, seed=23))
        reader.calls.clear()
        fresh = await recomputer.run(skip_unchanged=True)
        assert (fresh.status, fresh.matches_used) == ("succeeded", 5_500)
        assert reader.calls == ["latest_loaded_at", "hero_counts", "pair_counts"]
        assert len(fits) == 2
        after = await store.load()
        assert after is not None
        assert after.version == fresh.snapshot_version
        assert after.matches("7.40") == 3_500
        assert after.patches["7.40"].model.version == before.patches["7.40"].model.version
        assert recomputer.snapshot is not None
        assert recomputer.snapshot.patches["7.39"] is before.patches["7.39"]
        assert after.pas_prior_weight == pytest.approx(before.pas_prior_weight)

        # A patch first seen by an incremental run gets its model fitted then.
        insert_draft_table(warehouse, draft_table(300, "7.41", 60_000, seed=24))
        await recomputer.run(skip_unchanged=True)
        assert fits[2:] == ["7.41"]
        assert recomputer.snapshot is not None
        assert recomputer.snapshot.current_patch == "7.41"
    finally:
        await redis.aclose()
        warehouse.close()


async def test_the_schedule_serves_a_stored_match_within_its_interval(
    warehouse: Warehouse, redis_url: str
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    insert_draft_table(warehouse, draft_table(2_000, "7.40", 1, seed=31))
    runtime = ModelRuntime(
        constants=load_constants(),
        redis=redis,
        source=warehouse,
        recompute_interval_seconds=0.2,
        full_recompute_seconds=3600,
    )
    try:
        await runtime.start()
        first = await _served(runtime, 2_000)
        insert_draft_table(warehouse, draft_table(100, "7.40", 20_000, seed=32))
        second = await _served(runtime, 2_100)
        assert second.version > first.version
        runs = await runtime.store.runs()
        # One full run, then one incremental for the new matches; idle runs are not recorded.
        assert [run.mode for run in runs] == ["incremental", "full"]
        assert all(run.status == "succeeded" for run in runs)
    finally:
        await runtime.stop()
        await redis.aclose()


async def _served(runtime: ModelRuntime, matches: int) -> ModelSnapshot:
    """The snapshot the runtime serves once it counts `matches` in 7.40 (60 s at most: a loaded
    machine may take a while for the first full run)."""
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        snapshot = runtime.snapshot
        if snapshot is not None and snapshot.matches("7.40") == matches:
            return snapshot
        await asyncio.sleep(0.1)
    served = runtime.snapshot.matches("7.40") if runtime.snapshot else None
    raise AssertionError(f"{matches} matches not served within 60 s (serving {served})")
