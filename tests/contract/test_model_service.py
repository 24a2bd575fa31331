"""The model service over real gRPC, with a real Redis and an embedded ClickHouse warehouse.

Matches are generated here (a small planted model), loaded into the warehouse, recomputed through
the Recompute RPC, and every RPC is exercised, bad inputs included. Then Redis and the warehouse
are taken away and the replica must keep answering from its last good snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pytest
import redis.asyncio as aioredis

from counterpick.common.v1 import common_pb2 as c
from counterpick.model.v1 import model_service_pb2 as pb
from counterpick.model.v1 import model_service_pb2_grpc as pb_grpc
from services.common import health
from services.common.dota_constants import load_constants
from services.common.warehouse.schema import MATCH_SCHEMA
from services.etl.repo import Warehouse
from services.model.config import ModelSettings
from services.model.repo import CURRENT_KEY, OLD_VERSION_TTL_SECONDS
from services.model.server import SERVICE_NAME, build_server
from tests.auth_keys import SigningKeys
from tests.conftest import free_port
from tests.rpc import fails, failure
from tests.warehouse_drafts import insert_draft_table

RADIANT, DIRE = c.TEAM_SIDE_RADIANT, c.TEAM_SIDE_DIRE
PICK, BAN = c.DRAFT_ACTION_KIND_PICK, c.DRAFT_ACTION_KIND_BAN
OLD_PATCH, NEW_PATCH = "7.40", "7.41"


def draft_table(count: int, patch: str, first_id: int, seed: int) -> pa.Table:
    """Random drafts whose outcome follows planted hero strengths (hero 1 strong, 2 weak)."""
    rng = np.random.default_rng(seed)
    heroes = np.asarray(sorted(load_constants().heroes))
    strength = np.zeros(int(heroes.max()) + 1)
    strength[1], strength[2] = 0.6, -0.6
    picks = np.stack([rng.choice(heroes, 10, replace=False) for _ in range(count)])
    radiant, dire = np.sort(picks[:, :5], axis=1), np.sort(picks[:, 5:], axis=1)
    logit = strength[radiant].sum(axis=1) - strength[dire].sum(axis=1)
    radiant_win = rng.random(count) < 1 / (1 + np.exp(-logit))
    ranks = rng.choice([15, 35, 55, 75], count)
    brackets = np.asarray(
        ["herald_guardian", "crusader_archon", "legend_ancient", "divine_immortal"]
    )[(ranks // 10 - 1) // 2]
    columns = {
        "match_id": np.arange(first_id, first_id + count, dtype=np.uint64),
        "match_seq_num": np.arange(first_id, first_id + count, dtype=np.uint64),
        "start_time": np.full(count, 1_780_000_000, dtype=np.uint32),
        "duration_seconds": np.full(count, 2400, dtype=np.uint32),
        "patch": [patch] * count,
        "game_mode": np.full(count, 22, dtype=np.uint8),
        "lobby_type": np.full(count, 7, dtype=np.uint8),
        "cluster": np.full(count, 111, dtype=np.uint16),
        "region": np.full(count, 3, dtype=np.uint16),
        "avg_rank_tier": ranks.astype(np.uint8),
        "skill_bracket": brackets.tolist(),
        "radiant_win": radiant_win,
        "source": ["import"] * count,
        "radiant_heroes": radiant.tolist(),
        "dire_heroes": dire.tolist(),
    }
    return pa.table(columns, schema=MATCH_SCHEMA)


@dataclass
class Mesh:
    stub: pb_grpc.ModelServiceAsyncStub
    channel: grpc.aio.Channel
    redis: aioredis.Redis
    warehouse_dsn: str
    keys: SigningKeys


@pytest.fixture
async def mesh(redis_url: str, tmp_path: Path) -> AsyncIterator[Mesh]:
    dsn = f"chdb://{tmp_path / 'warehouse'}"
    warehouse = Warehouse.connect(dsn)
    warehouse.migrate()
    insert_draft_table(warehouse, draft_table(24_000, OLD_PATCH, 1, seed=1))
    insert_draft_table(warehouse, draft_table(3_000, NEW_PATCH, 100_000, seed=2))
    warehouse.close()
    settings = ModelSettings.model_validate(
        {
            "port": 0,
            "redis_url": redis_url,
            "model_warehouse_dsn": dsn,
            "model_recompute_interval_seconds": 0,
        }
    )
    keys = SigningKeys.create(tmp_path / "keys")
    server = build_server(settings, key_source=keys.source)
    port = await server.start()
    redis = aioredis.Redis.from_url(redis_url)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Mesh(pb_grpc.ModelServiceStub(channel), channel, redis, dsn, keys)
    finally:
        await channel.close()
        await redis.aclose()
        await server.stop(0)


async def recompute(mesh: Mesh) -> pb.GetModelInfoResponse:
    before = await mesh.redis.get(CURRENT_KEY)
    await mesh.stub.Recompute(pb.RecomputeRequest(), metadata=mesh.keys.metadata("admin"))
    async with asyncio.timeout(60):
        while True:
            current = await mesh.redis.get(CURRENT_KEY)
            if current != before:
                # The replica swaps snapshots on the change notice, a moment after the pointer.
                with contextlib.suppress(grpc.aio.AioRpcError):
                    info = await mesh.stub.GetModelInfo(pb.GetModelInfoRequest())
                    if info.snapshot.version == int(current or 0):
                        return info
            await asyncio.sleep(0.1)


def action(order: int, kind: int, side: int, hero: int) -> c.DraftAction:
    return c.DraftAction(
        order=order,
        kind=c.DraftActionKind.ValueType(kind),
        side=c.TeamSide.ValueType(side),
        hero_id=hero,
    )


def draft(*steps: tuple[int, int, int]) -> c.DraftState:
    return c.DraftState(actions=[action(i, k, s, h) for i, (k, s, h) in enumerate(steps)])


async def test_before_the_first_recompute_the_model_is_not_ready_but_heroes_list(
    mesh: Mesh,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await mesh.stub.GetModelInfo(pb.GetModelInfoRequest())
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failure(raised.value).reason == "ERROR_REASON_MODEL_NOT_READY"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await mesh.stub.SuggestPicks(pb.SuggestPicksRequest(side=RADIANT))
    assert failure(raised.value).reason == "ERROR_REASON_MODEL_NOT_READY"
    heroes = await mesh.stub.ListHeroes(pb.ListHeroesRequest())
    assert len(heroes.heroes) == len(load_constants().heroes)
    assert heroes.heroes[0].hero.localized_name == "Anti-Mage"
    assert not heroes.heroes[0].HasField("stats")


async def test_recompute_publishes_patches_and_the_young_patch_says_it_borrowed(
    mesh: Mesh,
) -> None:
    info = await recompute(mesh)
    assert [patch.name for patch in info.patches] == [OLD_PATCH, NEW_PATCH]
    # The current patch is the newest one started (7.42 since 2026-11-18), not the newest with
    # matches; while it has none it answers from the patch before it.
    assert info.current_patch.name == load_constants().current_patch().name
    assert info.snapshot.matches > 3_000  # the young patch borrowed the older patch's counts
    picks = await mesh.stub.SuggestPicks(pb.SuggestPicksRequest(side=RADIANT))
    assert f"shrunk toward {OLD_PATCH}" in picks.fallback_note
    # A patch newer than the data (patch day, or a fresh install seeded with the previous patch)
    # is answered from the newest patch with statistics, and the answer says so.
    newer = await mesh.stub.SuggestPicks(pb.SuggestPicksRequest(side=RADIANT, patch="7.42"))
    assert newer.patch.name == NEW_PATCH
    assert f"no statistics for patch 7.42 yet; used {NEW_PATCH}" in newer.fallback_note
    # A known patch older than the data is answered from the oldest patch with statistics.
    older = await mesh.stub.SuggestPicks(pb.SuggestPicksRequest(side=RADIANT, patch="7.00"))
    assert older.patch.name == OLD_PATCH
    assert f"no statistics for patch 7.00; used {OLD_PATCH}" in older.fallback_note
    assert len(newer.suggestions) == 10
    run = info.recent_runs[0]
    assert (run.status, run.mode, run.snapshot_version) == ("succeeded", "full", 1)
    assert run.matches_used == 27_000
    # The watermark: the fixture's inserts, moments ago.
    assert run.HasField("loaded_until")
    assert 0 <= time.time() - run.loaded_until.ToSeconds() < 600
    covered = {(c.patch, c.bracket): c.matches for c in run.coverage}
    assert covered[(OLD_PATCH, c.SKILL_BRACKET_ALL)] == 24_000
    old = await mesh.stub.SuggestPicks(pb.SuggestPicksRequest(side=RADIANT, patch=OLD_PATCH))
    assert old.fallback_note == ""
    # The planted strong hero is the best first pick; the weak one is not suggested at the top.
    assert old.suggestions[0].hero_id == 1
    assert 2 not in [s.hero_id for s in old.suggestions]
    heroes = await mesh.stub.ListHeroes(pb.ListHeroesRequest(patch=OLD_PATCH))
    strong = next(h for h in heroes.heroes if h.hero.id == 1)
    assert strong.stats.win_rate > 0.55
    interval = strong.stats.win_rate_interval
    assert interval.lower < strong.stats.win_rate < interval.upper < interval.lower + 0.1


async def test_suggestions_are_legal_ranked_and_explained(mesh: Mesh) -> None:
    await recompute(mesh)
    state = draft((BAN, RADIANT, 3), (PICK, RADIANT, 4), (PICK, DIRE, 5), (PICK, DIRE, 6))
    response = await mesh.stub.SuggestPicks(
        pb.SuggestPicksRequest(draft=state, side=RADIANT, patch=OLD_PATCH, limit=15)
    )
    heroes = [s.hero_id for s in response.suggestions]
    assert len(heroes) == 15
    assert not {3, 4, 5, 6} & set(heroes)
    scores = [s.score for s in response.suggestions]
    assert scores == sorted(scores, reverse=True)
    first = response.suggestions[0]
    kinds = [
        (t.kind, t.other_hero_id if t.HasField("other_hero_id") else None) for t in first.terms
    ]
    assert kinds == [
        (pb.TERM_KIND_HERO_STRENGTH, None),
        (pb.TERM_KIND_MATCHUP, 5),
        (pb.TERM_KIND_MATCHUP, 6),
        (pb.TERM_KIND_SYNERGY, 4),
    ]
    assert first.win_probability_interval.lower <= first.win_probability
    assert first.win_probability <= first.win_probability_interval.upper
    assert first.win_probability_delta == pytest.approx(
        first.win_probability - response.base_win_probability
    )
    only = await mesh.stub.SuggestPicks(
        pb.SuggestPicksRequest(draft=state, side=RADIANT, candidate_hero_ids=[7, 8, 4])
    )
    assert sorted(s.hero_id for s in only.suggestions) == [7, 8]
    bans = await mesh.stub.SuggestBans(
        pb.SuggestBansRequest(draft=state, side=DIRE, limit=5, patch=OLD_PATCH)
    )
    assert len(bans.suggestions) == 5
    assert bans.enemy_base_win_probability == pytest.approx(response.base_win_probability)
    lineup = [1, 3, 4, 5, 6, 2, 7, 8, 9, 10]  # the strong hero on Radiant, the weak on Dire
    full = draft(*[(PICK, RADIANT if i < 5 else DIRE, h) for i, h in enumerate(lineup)])
    done = await mesh.stub.SuggestPicks(pb.SuggestPicksRequest(draft=full, side=RADIANT))
    assert list(done.suggestions) == []
    prediction = await mesh.stub.PredictWin(pb.PredictWinRequest(draft=full, patch=OLD_PATCH))
    assert prediction.radiant_win_probability > 0.6
    # 24k matches: the fitted blend serves, with its held-out quality; the 3k-match young patch
    # falls back to the statistics' additive model.
    assert prediction.model_version.startswith(f"blend-{OLD_PATCH}-")
    assert prediction.quality.evaluation_matches == 4_800
    # Only heroes 1 and 2 carry a planted effect, so most test drafts hold no signal: the
    # model must beat a coin on log-loss and rank better than chance, nothing more.
    assert prediction.quality.log_loss < 0.6931
    assert prediction.quality.roc_auc > 0.5
    young = await mesh.stub.PredictWin(pb.PredictWinRequest(draft=full))
    assert young.model_version.startswith("additive-")
    interval = prediction.radiant_win_probability_interval
    assert interval.lower < prediction.radiant_win_probability < interval.upper
    kinds_count = {kind: 0 for kind in (1, 2, 3)}
    for term in prediction.terms:
        kinds_count[term.kind] += 1
    assert kinds_count == {
        pb.TERM_KIND_HERO_STRENGTH: 10,
        pb.TERM_KIND_MATCHUP: 25,
        pb.TERM_KIND_SYNERGY: 20,
    }


async def test_matchups_and_synergies_page_through_every_hero(mesh: Mesh) -> None:
    await recompute(mesh)
    first = await mesh.stub.GetMatchups(
        pb.GetMatchupsRequest(hero_id=1, patch=OLD_PATCH, page=c.PageRequest(page_size=50))
    )
    assert first.page.total_size == len(load_constants().heroes) - 1
    seen = [m.other_hero_id for m in first.matchups]
    token = first.page.next_page_token
    while token:
        page = await mesh.stub.GetMatchups(
            pb.GetMatchupsRequest(
                hero_id=1, patch=OLD_PATCH, page=c.PageRequest(page_size=50, page_token=token)
            )
        )
        seen += [m.other_hero_id for m in page.matchups]
        token = page.page.next_page_token
    assert sorted(seen) == sorted(set(load_constants().heroes) - {1})
    advantages = [m.advantage for m in first.matchups]
    assert advantages == sorted(advantages, reverse=True)
    row = first.matchups[0]
    assert row.shrunk_win_rate == pytest.approx(
        (row.wins + row.prior_weight * row.expected_win_rate) / (row.games + row.prior_weight)
    )
    assert row.advantage_interval.lower <= row.advantage <= row.advantage_interval.upper
    synergies = await mesh.stub.GetSynergies(
        pb.GetSynergiesRequest(hero_id=1, patch=OLD_PATCH, sort=pb.PAIR_SORT_GAMES_DESC)
    )
    games = [s.games for s in synergies.synergies]
    assert games == sorted(games, reverse=True)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await mesh.stub.GetMatchups(
            pb.GetMatchupsRequest(
                hero_id=2, page=c.PageRequest(page_token=first.page.next_page_token)
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


BAD_REQUESTS = [
    ("unknown hero", draft((PICK, RADIANT, 999)), RADIANT, "", "ERROR_REASON_UNKNOWN_HERO"),
    (
        "duplicate hero",
        draft((BAN, RADIANT, 1), (PICK, DIRE, 1)),
        RADIANT,
        "",
        "ERROR_REASON_DUPLICATE_HERO",
    ),
    (
        "six picks",
        draft(*[(PICK, RADIANT, h) for h in range(1, 7)]),
        RADIANT,
        "",
        "ERROR_REASON_TOO_MANY_PICKS",
    ),
    ("unknown patch", draft(), RADIANT, "9.99", "ERROR_REASON_UNKNOWN_PATCH"),
    ("side unspecified", draft(), c.TEAM_SIDE_UNSPECIFIED, "", "ERROR_REASON_INVALID_ARGUMENT"),
    (
        "kind unspecified",
        c.DraftState(actions=[action(0, 0, RADIANT, 1)]),
        RADIANT,
        "",
        "ERROR_REASON_INVALID_ARGUMENT",
    ),
    (
        "out of order",
        c.DraftState(actions=[action(1, PICK, RADIANT, 1)]),
        RADIANT,
        "",
        "ERROR_REASON_INVALID_ARGUMENT",
    ),
]


async def test_bad_requests_are_invalid_argument_with_a_reason(mesh: Mesh) -> None:
    await recompute(mesh)
    for name, state, side, patch, reason in BAD_REQUESTS:
        for call in (
            mesh.stub.SuggestPicks(pb.SuggestPicksRequest(draft=state, side=side, patch=patch)),
            mesh.stub.SuggestBans(pb.SuggestBansRequest(draft=state, side=side, patch=patch)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert failure(raised.value).reason == reason, name
            assert raised.value.details(), name
    for request in (
        pb.GetMatchupsRequest(hero_id=0),
        pb.GetMatchupsRequest(hero_id=1, min_games=-1),
        pb.GetMatchupsRequest(hero_id=1, page=c.PageRequest(page_token="garbage")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await mesh.stub.GetMatchups(request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await mesh.stub.SuggestPicks(pb.SuggestPicksRequest(side=RADIANT, limit=-1))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await mesh.stub.PredictWin(pb.PredictWinRequest(draft=draft((PICK, RADIANT, 999))))
    assert (failure(raised.value).reason, failure(raised.value).metadata) == (
        "ERROR_REASON_UNKNOWN_HERO",
        {"field": "draft.actions[0].hero_id", "hero_id": "999"},
    )


async def test_personal_data_and_recompute_need_the_right_caller(mesh: Mesh) -> None:
    await recompute(mesh)
    request = pb.GetPersonalScoresRequest(account_id=42)
    anonymous = await fails(mesh.stub.GetPersonalScores(request))
    assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED
    assert anonymous.reason == "ERROR_REASON_UNAUTHENTICATED"
    stranger = await fails(
        mesh.stub.GetPersonalScores(request, metadata=mesh.keys.metadata("user", account_id=7))
    )
    assert stranger.code == grpc.StatusCode.PERMISSION_DENIED
    own = await mesh.stub.GetPersonalScores(
        request, metadata=mesh.keys.metadata("user", account_id=42)
    )
    assert list(own.scores) == []  # no stored matches of that player: empty, not NOT_FOUND
    as_admin = await mesh.stub.GetPersonalScores(request, metadata=mesh.keys.metadata("admin"))
    assert as_admin.account_id == 42
    picks = await fails(mesh.stub.SuggestPicks(pb.SuggestPicksRequest(side=RADIANT, account_id=42)))
    assert picks.code == grpc.StatusCode.UNAUTHENTICATED
    user_recompute = await fails(
        mesh.stub.Recompute(pb.RecomputeRequest(), metadata=mesh.keys.metadata("user"))
    )
    assert user_recompute.code == grpc.StatusCode.PERMISSION_DENIED
    anonymous_recompute = await fails(mesh.stub.Recompute(pb.RecomputeRequest()))
    assert anonymous_recompute.code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_new_snapshot_switches_the_pointer_and_old_keys_expire(mesh: Mesh) -> None:
    first = await recompute(mesh)
    old_keys = [key async for key in mesh.redis.scan_iter(f"counters:v{first.snapshot.version}:*")]
    assert f"counters:v{first.snapshot.version}:patch_{OLD_PATCH}:skill_all:hero_1".encode() in (
        old_keys
    )
    assert [await mesh.redis.ttl(key) for key in old_keys[:20]] == [-1] * 20
    second = await recompute(mesh)
    assert second.snapshot.version > first.snapshot.version
    assert int(await mesh.redis.get(CURRENT_KEY) or 0) == second.snapshot.version
    ttls = [await mesh.redis.ttl(key) for key in old_keys[:20]]
    assert all(0 < ttl <= OLD_VERSION_TTL_SECONDS for ttl in ttls)


async def test_serves_the_last_snapshot_while_redis_and_the_warehouse_are_down(
    redis_url: str, tmp_path: Path
) -> None:
    dsn = f"chdb://{tmp_path / 'warehouse'}"
    warehouse = Warehouse.connect(dsn)
    warehouse.migrate()
    insert_draft_table(warehouse, draft_table(22_000, OLD_PATCH, 1, seed=3))
    warehouse.close()
    # Publish a snapshot with a healthy replica.
    keys = SigningKeys.create(tmp_path / "keys")
    healthy = build_server(
        ModelSettings.model_validate(
            {
                "port": 0,
                "redis_url": redis_url,
                "model_warehouse_dsn": dsn,
                "model_recompute_interval_seconds": 0,
            }
        ),
        key_source=keys.source,
    )
    port = await healthy.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        mesh = Mesh(
            pb_grpc.ModelServiceStub(channel),
            channel,
            aioredis.Redis.from_url(redis_url),
            dsn,
            keys,
        )
        await recompute(mesh)
        await mesh.redis.aclose()
    await healthy.stop(0)
    # A second replica through a Redis proxy we can cut, reading the warehouse through an etl
    # address where nothing listens (the warehouse is "down" for it from the start).
    proxy = await TcpProxy.start(redis_url)
    replica = build_server(
        ModelSettings.model_validate(
            {
                "port": 0,
                "redis_url": proxy.url,
                "etl_addr": f"127.0.0.1:{free_port()}",
                "model_recompute_interval_seconds": 0,
                "model_snapshot_poll_seconds": 0.2,
            }
        ),
        key_source=keys.source,
    )
    port = await replica.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ModelServiceStub(channel)
            before = await stub.SuggestPicks(pb.SuggestPicksRequest(side=RADIANT, limit=5))
            await proxy.cut()
            async with asyncio.timeout(10):
                while True:
                    if await health.check_health(channel, f"{SERVICE_NAME}/redis") == "NOT_SERVING":
                        break
                    await asyncio.sleep(0.1)
            assert await health.check_health(channel, SERVICE_NAME) == "SERVING"
            during = await stub.SuggestPicks(pb.SuggestPicksRequest(side=RADIANT, limit=5))
            assert [s.hero_id for s in during.suggestions] == [
                s.hero_id for s in before.suggestions
            ]
            prediction = await stub.PredictWin(
                pb.PredictWinRequest(draft=draft((PICK, RADIANT, 1)))
            )
            assert 0 < prediction.radiant_win_probability < 1
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetPersonalScores(
                    pb.GetPersonalScoresRequest(account_id=42),
                    metadata=keys.metadata("user", account_id=42),
                )
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert await health.check_health(channel, f"{SERVICE_NAME}/warehouse") == "NOT_SERVING"
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Recompute(pb.RecomputeRequest(), metadata=keys.metadata("admin"))
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert failure(raised.value).metadata["dependency"] == "redis"
            still = await stub.GetModelInfo(pb.GetModelInfoRequest())
            assert still.snapshot.version >= 1
    finally:
        await replica.stop(0)
        await proxy.close()


class TcpProxy:
    """A loopback TCP proxy to Redis whose connections can be cut, to take Redis away from one
    client without touching the shared server."""

    def __init__(self, target: tuple[str, int], db: str) -> None:
        self._target = target
        self._db = db
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._cut = False
        self.url = ""

    @classmethod
    async def start(cls, redis_url: str) -> TcpProxy:
        from urllib.parse import urlparse

        parsed = urlparse(redis_url)
        proxy = cls((parsed.hostname or "127.0.0.1", parsed.port or 6379), parsed.path)
        proxy._server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
        port = proxy._server.sockets[0].getsockname()[1]
        proxy.url = f"redis://127.0.0.1:{port}{proxy._db}"
        return proxy

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self._cut = True
        for writer in self._writers:
            writer.close()

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
