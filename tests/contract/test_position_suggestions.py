"""Positions end to end: matches with planted positions in an embedded warehouse, the recompute
counting them into the snapshot (through Redis), and SuggestPicks over real gRPC ranking by
position fit and answering the side's assignment and open positions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from counterpick.common.v1 import common_pb2 as c
from counterpick.model.v1 import model_service_pb2 as pb
from counterpick.model.v1 import model_service_pb2_grpc as pb_grpc
from services.common.dota_constants import load_constants
from services.etl.matches import CleanMatch
from services.etl.repo import Warehouse
from services.model.config import ModelSettings
from services.model.positions import position_counts
from services.model.repo import CURRENT_KEY
from services.model.server import build_server
from tests.auth_keys import SigningKeys
from tests.synthetic import position_matches

PATCH = "7.41"
START = 1_780_000_000
# Planted against their dotaconstants roles, so only the data can put them there: Crystal Maiden
# (a support) always carries, Anti-Mage (a carry) always hard-supports, Puck always mids.
CARRY, HARD_SUPPORT, MID = 5, 1, 13
PLANTED = {CARRY: 1, HARD_SUPPORT: 5, MID: 2}


def planted_matches(count: int, seed: int) -> list[CleanMatch]:
    """Random 5v5 matches whose players carry positions, PLANTED heroes always in theirs."""
    return position_matches(count, seed, PLANTED, PATCH, START)


@dataclass
class Served:
    stub: pb_grpc.ModelServiceAsyncStub
    matches: list[CleanMatch]


@pytest.fixture
async def served(redis_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    dsn = f"chdb://{tmp_path / 'warehouse'}"
    warehouse = Warehouse.connect(dsn)
    warehouse.migrate()
    matches = planted_matches(3_000, seed=7)
    warehouse.insert_matches(matches)
    # The warehouse read counts every (patch, hero, position) exactly.
    counts = position_counts(warehouse.hero_position_counts(), load_constants().hero_slots)
    expected = np.zeros_like(counts[PATCH])
    for match in matches:
        for player in match.players:
            assert player.position is not None
            expected[player.hero_id, player.position - 1] += 1
    assert np.array_equal(counts[PATCH], expected)
    assert position_counts(warehouse.hero_position_counts("7.40"), 200) == {}
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
    stub = pb_grpc.ModelServiceStub(channel)
    try:
        await stub.Recompute(pb.RecomputeRequest(), metadata=keys.metadata("admin"))
        async with asyncio.timeout(120):
            while True:
                if await redis.get(CURRENT_KEY) is not None:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await stub.GetModelInfo(pb.GetModelInfoRequest())
                        break
                await asyncio.sleep(0.1)
        yield Served(stub, matches)
    finally:
        await channel.close()
        await redis.aclose()
        await server.stop(0)


def _draft(radiant: list[int]) -> c.DraftState:
    return c.DraftState(
        actions=[
            c.DraftAction(
                order=i, kind=c.DRAFT_ACTION_KIND_PICK, side=c.TEAM_SIDE_RADIANT, hero_id=hero
            )
            for i, hero in enumerate(radiant)
        ]
    )


async def test_a_position_ranks_heroes_by_how_they_play_it(served: Served) -> None:
    request = pb.SuggestPicksRequest(
        side=c.TEAM_SIDE_RADIANT,
        position=c.POSITION_CARRY,
        limit=50,
        candidate_hero_ids=[HARD_SUPPORT, CARRY, MID],
    )
    response = await served.stub.SuggestPicks(request)
    order = [s.hero_id for s in response.suggestions]
    assert order[0] == CARRY
    assert order.index(CARRY) < order.index(HARD_SUPPORT)
    fits = {
        s.hero_id: [t for t in s.terms if t.kind == pb.TERM_KIND_POSITION_FIT]
        for s in response.suggestions
    }
    assert all(len(terms) == 1 for terms in fits.values())
    carry_games = sum(
        1 for m in served.matches for p in m.players if p.hero_id == CARRY and p.position == 1
    )
    assert fits[CARRY][0].games == carry_games > 0
    assert fits[CARRY][0].value == pytest.approx(0.0)
    assert fits[HARD_SUPPORT][0].games == 0
    # Never plays 1: a large honest penalty in its explanation (FIT_POINTS * ln of a frequency
    # ratio of about 1/25), and ranked below every hero that does play 1 by the score alone.
    assert fits[HARD_SUPPORT][0].value < -0.05
    by_hero = {s.hero_id: s for s in response.suggestions}
    assert by_hero[HARD_SUPPORT].score < by_hero[CARRY].score - 0.5
    for item in response.suggestions:
        explained = item.win_probability_delta + fits[item.hero_id][0].value
        # The small-sample penalty is at most 0.2; heroes never seen in this position (the
        # planted support and mid here) lose 1.0 more.
        off = 1.0 if fits[item.hero_id][0].games == 0 else 0.0
        assert explained - off - 0.2 <= item.score <= explained - off

    support = await served.stub.SuggestPicks(
        pb.SuggestPicksRequest(
            side=c.TEAM_SIDE_RADIANT,
            position=c.POSITION_HARD_SUPPORT,
            candidate_hero_ids=[HARD_SUPPORT, CARRY],
        )
    )
    assert [s.hero_id for s in support.suggestions] == [HARD_SUPPORT, CARRY]


async def test_without_a_position_the_assignment_and_open_positions(served: Served) -> None:
    response = await served.stub.SuggestPicks(
        pb.SuggestPicksRequest(side=c.TEAM_SIDE_RADIANT, draft=_draft([HARD_SUPPORT, MID, CARRY]))
    )
    assert [(a.hero_id, a.position) for a in response.assignment] == [
        (HARD_SUPPORT, c.POSITION_HARD_SUPPORT),
        (MID, c.POSITION_MID),
        (CARRY, c.POSITION_CARRY),
    ]
    assert all(0.9 < a.frequency <= 1.0 for a in response.assignment)
    assert list(response.open_positions) == [c.POSITION_OFFLANE, c.POSITION_SOFT_SUPPORT]
    assert all(t.kind != pb.TERM_KIND_POSITION_FIT for s in response.suggestions for t in s.terms)
    empty = await served.stub.SuggestPicks(pb.SuggestPicksRequest(side=c.TEAM_SIDE_RADIANT))
    assert list(empty.assignment) == []
    assert list(empty.open_positions) == [1, 2, 3, 4, 5]
