"""Patches over real gRPC, with a real Redis and an embedded ClickHouse warehouse: a patch the
constants do not know is refused, a known one without statistics (older or newer than the data)
is answered from the nearest patch with statistics and says which, the current patch follows the
clock and the constants, a dotaconstants update is served without a restart, and matches stored
before their patch was known move to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

from counterpick.common.v1 import common_pb2 as c
from counterpick.model.v1 import model_service_pb2 as pb
from counterpick.model.v1 import model_service_pb2_grpc as pb_grpc
from services.common.config import ServiceSettings
from services.common.dota_constants import ConstantsWatcher
from services.common.server import GrpcServer, registration
from services.etl import transform
from services.etl.matches import MatchSource
from services.etl.repo import Warehouse
from services.model.recompute import additive_model
from services.model.runtime import ModelRuntime
from services.model.server import SERVICE_NAME, ModelServicer
from services.model.statistics import BracketStatistics
from services.model.winmodel.served import DraftModel
from tests.constants_copy import add_patch, copy_constants
from tests.rpc import failure

DAY = 86_400
RADIANT = c.TEAM_SIDE_RADIANT
DATA_PATCH = "7.41"


def additive(patch: str, statistics: BracketStatistics, drafts: object) -> DraftModel:
    """No fit: the statistics' own model, so a recompute takes a moment."""
    return additive_model(patch, statistics)


def store_matches(
    warehouse: Warehouse, watcher: ConstantsWatcher, count: int, first_id: int, start: int
) -> None:
    """Matches labelled the etl's way: with the patch the constants know for their start."""
    rng = np.random.default_rng(first_id)
    constants = watcher.current()
    heroes = np.asarray(sorted(constants.heroes))
    matches = []
    for index in range(count):
        picks = rng.choice(heroes, 10, replace=False).tolist()
        matches.append(
            transform.from_draft(
                first_id + index,
                bool(rng.random() < 0.5),
                picks[:5],
                picks[5:],
                source=MatchSource.IMPORT,
                constants=constants,
                start_time=start + index,
            )
        )
    warehouse.insert_matches(matches)


@dataclass
class Model:
    stub: pb_grpc.ModelServiceAsyncStub
    runtime: ModelRuntime
    warehouse: Warehouse
    watcher: ConstantsWatcher
    directory: Path
    now: list[float]


@pytest.fixture
async def model(redis_url: str, tmp_path: Path) -> AsyncIterator[Model]:
    directory = copy_constants(tmp_path / "constants")
    watcher = ConstantsWatcher(directory, check_seconds=0)
    constants = watcher.current()
    released = constants.patch_named(DATA_PATCH)
    assert released is not None
    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'warehouse'}")
    warehouse.migrate()
    store_matches(warehouse, watcher, 400, 1, int(released.released_at.timestamp()) + DAY)
    now = [datetime.now(UTC).timestamp()]
    redis = aioredis.Redis.from_url(redis_url)
    runtime = ModelRuntime(
        constants=constants,
        redis=redis,
        source=warehouse,
        recompute_interval_seconds=0,
        reload_constants=watcher.current,
    )
    assert runtime.recomputer is not None
    runtime.recomputer.fit_model = additive
    runtime.recomputer.min_patch_matches = 0
    runtime.recomputer.clock = lambda: now[0]
    server = GrpcServer(
        name="model",
        settings=ServiceSettings(port=0),
        services=[
            registration(
                ModelServicer(runtime, watcher, clock=lambda: now[0]),
                pb_grpc.add_ModelServiceServicer_to_server,
                SERVICE_NAME,
            )
        ],
    )
    port = await server.start()
    await runtime.start()
    await runtime.recompute(full=True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Model(pb_grpc.ModelServiceStub(channel), runtime, warehouse, watcher, directory, now)
    finally:
        await channel.close()
        await server.stop(0)
        await runtime.stop()  # closes the warehouse
        await redis.aclose()


def patch_calls(stub: pb_grpc.ModelServiceAsyncStub, patch: str) -> dict[str, Callable[[], object]]:
    """Every RPC that answers for a patch, asked for `patch`."""
    return {
        "PredictWin": lambda: stub.PredictWin(pb.PredictWinRequest(patch=patch)),
        "SuggestPicks": lambda: stub.SuggestPicks(
            pb.SuggestPicksRequest(side=RADIANT, patch=patch)
        ),
        "SuggestBans": lambda: stub.SuggestBans(pb.SuggestBansRequest(side=RADIANT, patch=patch)),
        "GetMatchups": lambda: stub.GetMatchups(pb.GetMatchupsRequest(hero_id=1, patch=patch)),
        "GetSynergies": lambda: stub.GetSynergies(pb.GetSynergiesRequest(hero_id=1, patch=patch)),
        "ListHeroes": lambda: stub.ListHeroes(pb.ListHeroesRequest(patch=patch)),
    }


async def test_a_patch_the_constants_do_not_know_is_invalid(model: Model) -> None:
    for name, call in patch_calls(model.stub, "9.99").items():
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call()  # type: ignore[misc]
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert failure(raised.value).reason == "ERROR_REASON_UNKNOWN_PATCH", name


@pytest.mark.parametrize(
    ("asked", "note"),
    [
        ("7.40", f"no statistics for patch 7.40; used {DATA_PATCH}, the oldest patch with stat"),
        ("6.88", f"no statistics for patch 6.88; used {DATA_PATCH}, the oldest patch with stat"),
        ("7.42", f"no statistics for patch 7.42 yet; used {DATA_PATCH}"),
    ],
)
async def test_a_known_patch_without_statistics_is_answered_and_says_from_which(
    model: Model, asked: str, note: str
) -> None:
    for name, call in patch_calls(model.stub, asked).items():
        response = await call()  # type: ignore[misc]
        assert response.patch.name == DATA_PATCH, name
        if hasattr(response, "fallback_note"):
            assert note in response.fallback_note, name


async def test_the_current_patch_is_the_newest_started_and_borrows_while_it_has_no_data(
    model: Model,
) -> None:
    newest = model.watcher.current().patches[-1]
    released = newest.released_at.timestamp()
    previous = model.watcher.current().patches[-2].name
    assert previous == DATA_PATCH, "the shared constants' newest patch follows the data's"

    model.now[0] = released - DAY
    await model.runtime.recompute(full=True)  # a snapshot computed the day before
    assert model.runtime.require().current_patch == DATA_PATCH
    info = await model.stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.current_patch.name == DATA_PATCH
    assert [patch.name for patch in info.patches] == [DATA_PATCH]
    prediction = await model.stub.PredictWin(pb.PredictWinRequest())
    assert prediction.patch.name == DATA_PATCH
    assert prediction.fallback_note == ""

    model.now[0] = released + DAY
    info = await model.stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.current_patch.name == newest.name
    assert info.snapshot.matches == 400  # the statistics that answer for it: the previous patch's
    assert info.model_version.startswith(f"additive-{DATA_PATCH}")
    prediction = await model.stub.PredictWin(pb.PredictWinRequest())
    assert prediction.patch.name == DATA_PATCH
    assert f"no statistics for patch {newest.name} yet; used {DATA_PATCH}" in (
        prediction.fallback_note
    )
    heroes = await model.stub.ListHeroes(pb.ListHeroesRequest())
    assert heroes.patch.name == DATA_PATCH
    assert heroes.snapshot.matches == 400
    # The day-old snapshot still names the patch before; the one published now names the new.
    await model.runtime.recompute(full=True)
    assert model.runtime.require().current_patch == newest.name


async def test_a_constants_update_is_served_without_a_restart_and_relabels_matches(
    model: Model,
) -> None:
    before = model.watcher.current()
    newest = before.patches[-1]
    # Matches of a patch the constants do not know yet are labelled with the one before it.
    new_release = datetime.fromtimestamp(newest.released_at.timestamp() + 3 * DAY, UTC)
    store_matches(model.warehouse, model.watcher, 300, 10_000, int(new_release.timestamp()) + 60)
    # Matches from before the new patch stay where they are.
    store_matches(model.warehouse, model.watcher, 100, 20_000, int(new_release.timestamp()) - 600)
    model.now[0] = new_release.timestamp() + DAY
    await model.runtime.recompute()
    assert model.runtime.require().matches(newest.name) == 400
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await model.stub.PredictWin(pb.PredictWinRequest(patch="7.99"))
    assert failure(raised.value).reason == "ERROR_REASON_UNKNOWN_PATCH"

    add_patch(model.directory, "7.99", new_release)
    # Served at once: the patch is known, answered from the newest patch with statistics...
    answer = await model.stub.PredictWin(pb.PredictWinRequest(patch="7.99"))
    assert answer.patch.name == newest.name
    assert f"no statistics for patch 7.99 yet; used {newest.name}" in answer.fallback_note
    info = await model.stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.current_patch.name == "7.99"

    # ...and once the etl relabelled the matches stored before 7.99 was known, the next
    # (scheduled, incremental) run recounts in full under the new labels.
    assert model.warehouse.relabel_patches(model.watcher.current()) == 300
    assert model.warehouse.relabel_patches(model.watcher.current()) == 0  # idempotent
    labels = dict(
        model.warehouse.query_rows(
            "SELECT patch, count() FROM match_players FINAL WHERE match_id >= 10000 GROUP BY patch"
        )
    )
    assert labels == {"7.99": 3_000, newest.name: 1_000}
    run = await model.runtime.recompute(skip_unchanged=True)
    assert run.mode == "full"
    snapshot = model.runtime.require()
    assert snapshot.current_patch == "7.99"
    assert snapshot.matches("7.99") == 300
    assert snapshot.matches(newest.name) == 100
    assert snapshot.matches(DATA_PATCH) == 400
    answer = await model.stub.PredictWin(pb.PredictWinRequest())
    assert answer.patch.name == "7.99"
