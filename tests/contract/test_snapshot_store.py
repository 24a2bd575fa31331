"""What the model's snapshot store leaves in Redis: nothing permanent from a failed publish, the
current version permanent, replaced versions expiring, and a capped run history."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import cast

import numpy as np
import pytest
import redis.asyncio as aioredis

from services.common.dota import SkillBracket
from services.model.recompute import additive_model
from services.model.repo import (
    CURRENT_KEY,
    OLD_VERSION_TTL_SECONDS,
    PENDING_TTL_SECONDS,
    RUNS_KEPT,
    RUNS_KEY,
    SnapshotStore,
)
from services.model.snapshot import ModelSnapshot, PatchModel, RunRecord
from services.model.statistics import Counts, compute_statistics

HEROES = np.arange(1, 31)
SLOTS = 31


def patch_model(patch: str, seed: int) -> PatchModel:
    """Statistics of random counts over 30 heroes, with their additive model."""
    rng = np.random.default_rng(seed)
    counts = Counts.empty(SLOTS)
    games = rng.integers(400, 600, HEROES.size)
    counts.add_heroes(HEROES, games, rng.binomial(games, 0.5))
    a, b = (axis.ravel() for axis in np.meshgrid(HEROES, HEROES))
    pair_games = rng.integers(20, 40, a.size)
    counts.add_versus(a, b, pair_games, rng.binomial(pair_games, 0.5))
    same = a < b
    counts.add_with(a[same], b[same], pair_games[same], rng.binomial(pair_games[same], 0.5))
    counts.matches = int(games.sum()) // 10
    statistics = {SkillBracket.ALL: compute_statistics(patch, SkillBracket.ALL, counts)}
    return PatchModel(patch, statistics, additive_model(patch, statistics[SkillBracket.ALL]))


def snapshot(version: int, *patches: PatchModel) -> ModelSnapshot:
    playable = np.zeros(SLOTS, dtype=bool)
    playable[HEROES] = True
    return ModelSnapshot(
        version=version,
        computed_at=time.time(),
        patches={entry.patch: entry for entry in patches},
        current_patch=patches[-1].patch,
        playable=playable,
        pas_prior_weight=30.0,
    )


async def ttls(redis: aioredis.Redis, version: int) -> dict[bytes, int]:
    """TTL of every key of one snapshot version."""
    keys = [
        key
        for pattern in (f"counterpick:snapshot:v{version}:*", f"counters:v{version}:*")
        async for key in redis.scan_iter(pattern)
    ]
    return {key: await redis.ttl(key) for key in keys}


async def test_a_failed_publish_leaves_nothing_permanent(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    store = SnapshotStore(redis)
    try:
        await store.publish(snapshot(1, patch_model("7.40", 1)))
        assert set((await ttls(redis, 1)).values()) == {-1}  # current: permanent

        good = patch_model("7.40", 2)
        # A model whose metadata JSON cannot encode: the publish fails after the first patch's
        # keys are written, as a Redis outage or a crash half-way would leave it.
        broken = replace(patch_model("7.41", 3), model=replace(good.model, version=cast(str, b"")))
        with pytest.raises(TypeError):
            await store.publish(snapshot(2, good, broken))
        written = await ttls(redis, 2)
        assert any(b"patch_7.40" in key for key in written)  # it did write, then failed
        assert all(0 < ttl <= PENDING_TTL_SECONDS for ttl in written.values()), written
        assert await store.current_version() == 1
        assert set((await ttls(redis, 1)).values()) == {-1}

        await store.publish(snapshot(3, patch_model("7.40", 4)))
        assert await redis.get(CURRENT_KEY) == b"3"
        assert set((await ttls(redis, 3)).values()) == {-1}
        replaced = await ttls(redis, 1)
        assert replaced
        assert all(0 < ttl <= OLD_VERSION_TTL_SECONDS for ttl in replaced.values())
        # Nothing in the database lives for ever but the current version and its pointer.
        permanent = {
            key
            async for key in redis.scan_iter("*")
            if await redis.ttl(key) == -1 and b":v3:" not in key
        }
        assert permanent == {CURRENT_KEY.encode()}
        loaded = await store.load()
        assert loaded is not None
        assert loaded.version == 3
    finally:
        await redis.aclose()


def run(number: int) -> RunRecord:
    return RunRecord(
        run_id=f"run-{number}",
        started_at=float(number),
        finished_at=float(number),
        status="succeeded",
        mode="incremental",
        matches_used=number,
        coverage={},
    )


async def test_the_run_history_keeps_only_the_newest(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    store = SnapshotStore(redis)
    try:
        # Entries left by a version that capped only the list are pruned on the next record.
        await redis.hset(f"{RUNS_KEY}:by_id", mapping={f"stray-{n}": "{}" for n in range(300)})
        for number in range(RUNS_KEPT + 25):
            await store.record_run(run(number))
        await store.record_run(replace(run(RUNS_KEPT + 24), status="failed"))  # an update
        assert await redis.llen(RUNS_KEY) == RUNS_KEPT
        assert await redis.hlen(f"{RUNS_KEY}:by_id") == RUNS_KEPT
        newest = await store.runs(limit=RUNS_KEPT)
        assert [r.run_id for r in newest] == [f"run-{n}" for n in range(RUNS_KEPT + 24, 24, -1)]
        assert newest[0].status == "failed"
        assert not await redis.hexists(f"{RUNS_KEY}:by_id", "run-24")
    finally:
        await redis.aclose()
