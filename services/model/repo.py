"""Model snapshots in Redis: versioned keys, an atomic pointer switch, expiry of old versions.

Layout (version v):
    counterpick:snapshot:current                 -> v, switched only after v is completely written
    counterpick:snapshot:v{v}:manifest           -> JSON: patches, brackets, runs, weights
    counterpick:snapshot:v{v}:stats:{patch}:{b}  -> npz: counts and prior weights of one bracket
    counterpick:snapshot:v{v}:model:{patch}      -> npz: the patch's decomposed win model
    counters:v{v}:patch_{patch}:skill_{b}:hero_{id} -> JSON: one hero's matchups and synergies,
                                                     for consumers that read Redis directly
A change notice is published on counterpick:snapshot:changed. Keys of a replaced version expire
after OLD_VERSION_TTL_SECONDS so replicas that are still reading it can finish.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from services.common.dota import SkillBracket
from services.model.snapshot import ModelSnapshot, PatchModel, RunRecord
from services.model.statistics import (
    BracketStatistics,
    Relation,
    base_rates,
    pair_table,
)
from services.model.winmodel.metrics import Quality
from services.model.winmodel.served import DraftModel

PREFIX = "counterpick:snapshot"
CURRENT_KEY = f"{PREFIX}:current"
VERSION_COUNTER_KEY = f"{PREFIX}:next_version"
CHANGED_CHANNEL = f"{PREFIX}:changed"
RUNS_KEY = "counterpick:model:runs"
# Replicas swap to a new version within seconds of its notice (or of their next poll, 30 s), so
# a replaced version is needed only briefly; with a run a minute, a longer life would keep dozens
# of complete versions in Redis at once.
OLD_VERSION_TTL_SECONDS = 300
RUNS_KEPT = 200


def _key(version: int, *parts: str) -> str:
    return ":".join((PREFIX, f"v{version}", *parts))


def counters_key(version: int, patch: str, bracket: SkillBracket, hero_id: int) -> str:
    """One hero's counters key for consumers that read Redis directly
    (`counters:v{N}:patch_7.36:skill_all:hero_1`), versioned like every snapshot key."""
    return f"counters:v{version}:patch_{patch}:skill_{bracket.value}:hero_{hero_id}"


def _npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _load_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def encode_statistics(statistics: BracketStatistics) -> bytes:
    """The counts and prior weights; everything else is derived again on load."""
    return _npz(
        hero_games=statistics.hero_games,
        hero_wins=statistics.hero_wins,
        versus_games=statistics.matchups.games,
        versus_wins=statistics.matchups.wins,
        with_games=statistics.synergies.games,
        with_wins=statistics.synergies.wins,
        prior_weights=np.asarray(
            [statistics.matchups.prior_weight, statistics.synergies.prior_weight]
        ),
        matches=np.asarray([statistics.matches]),
    )


def decode_statistics(patch: str, bracket: SkillBracket, data: bytes) -> BracketStatistics:
    """Inverse of encode_statistics."""
    arrays = _load_npz(data)
    rates = base_rates(arrays["hero_games"], arrays["hero_wins"])
    k_versus, k_with = (float(value) for value in arrays["prior_weights"])
    return BracketStatistics(
        patch=patch,
        bracket=bracket,
        matches=int(arrays["matches"][0]),
        hero_games=arrays["hero_games"],
        hero_wins=arrays["hero_wins"],
        base_rate=rates,
        matchups=pair_table(
            Relation.VERSUS, arrays["versus_games"], arrays["versus_wins"], rates, k_versus
        ),
        synergies=pair_table(
            Relation.WITH, arrays["with_games"], arrays["with_wins"], rates, k_with
        ),
    )


def encode_model(model: DraftModel) -> bytes:
    """The model's arrays plus its metadata as a JSON string array."""
    meta = {
        "version": model.version,
        "bias": model.bias,
        "trained_at": model.trained_at,
        "matches_used": model.matches_used,
        "hero_prior_precision": model.hero_prior_precision,
        "pair_prior_precision": model.pair_prior_precision,
        "quality": model.quality.__dict__ if model.quality else None,
    }
    return _npz(
        hero_weight=model.hero_weight,
        synergy=model.synergy,
        matchup=model.matchup,
        calibration_logits=model.calibration_logits,
        calibration_probabilities=model.calibration_probabilities,
        meta=np.asarray(json.dumps(meta)),
    )


def decode_model(data: bytes) -> DraftModel:
    """Inverse of encode_model."""
    arrays = _load_npz(data)
    meta = json.loads(str(arrays["meta"]))
    return DraftModel(
        version=meta["version"],
        bias=meta["bias"],
        hero_weight=arrays["hero_weight"],
        synergy=arrays["synergy"],
        matchup=arrays["matchup"],
        calibration_logits=arrays["calibration_logits"],
        calibration_probabilities=arrays["calibration_probabilities"],
        trained_at=meta["trained_at"],
        matches_used=meta["matches_used"],
        quality=Quality(**meta["quality"]) if meta["quality"] else None,
        hero_prior_precision=meta["hero_prior_precision"],
        pair_prior_precision=meta["pair_prior_precision"],
    )


def _hero_counters(statistics: BracketStatistics, hero: int) -> str:
    """One hero's matchups and synergies (pairs with games), for the per-hero keys."""
    m, s = statistics.matchups, statistics.synergies
    return json.dumps(
        {
            "hero_id": hero,
            "games": int(statistics.hero_games[hero]),
            "win_rate": float(statistics.base_rate[hero]),
            "matchups": [
                {
                    "hero_id": int(other),
                    "games": int(m.games[hero, other]),
                    "wins": int(m.wins[hero, other]),
                    "advantage": round(float(m.score[hero, other]), 6),
                }
                for other in np.flatnonzero(m.games[hero])
            ],
            "synergies": [
                {
                    "hero_id": int(other),
                    "games": int(s.games[hero, other]),
                    "wins": int(s.wins[hero, other]),
                    "synergy": round(float(s.score[hero, other]), 6),
                }
                for other in np.flatnonzero(s.games[hero])
            ],
        },
        separators=(",", ":"),
    )


def run_to_json(run: RunRecord) -> str:
    """A run record as stored in the runs list."""
    return json.dumps(run.__dict__, separators=(",", ":"))


def run_from_json(text: str | bytes) -> RunRecord:
    """Inverse of run_to_json."""
    return RunRecord(**json.loads(text))


class SnapshotStore:
    """Publishes and loads snapshots."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def next_version(self) -> int:
        """A fresh snapshot version number."""
        return int(await self._redis.incr(VERSION_COUNTER_KEY))

    async def current_version(self) -> int | None:
        """The version readers should serve, if any."""
        value = await self._redis.get(CURRENT_KEY)
        return int(value) if value is not None else None

    async def publish(self, snapshot: ModelSnapshot) -> None:
        """Write every key of the snapshot, then switch the pointer and notify replicas."""
        version = snapshot.version
        keys: list[str] = []
        pipe = self._redis.pipeline(transaction=False)
        manifest: dict[str, Any] = {
            "version": version,
            "computed_at": snapshot.computed_at,
            "current_patch": snapshot.current_patch,
            "pas_prior_weight": snapshot.pas_prior_weight,
            "playable": [int(h) for h in np.flatnonzero(snapshot.playable)],
            "hero_slots": int(snapshot.playable.shape[0]),
            "patches": {},
        }
        for name, entry in snapshot.patches.items():
            manifest["patches"][name] = {
                "brackets": {b.value: s.matches for b, s in entry.statistics.items()},
                "shrunk_toward": entry.shrunk_toward,
            }
            model_key = _key(version, "model", name)
            pipe.set(model_key, encode_model(entry.model))
            keys.append(model_key)
            for bracket, statistics in entry.statistics.items():
                stats_key = _key(version, "stats", name, bracket.value)
                pipe.set(stats_key, encode_statistics(statistics))
                keys.append(stats_key)
                for hero in np.flatnonzero(statistics.hero_games):
                    hero_key = counters_key(version, name, bracket, int(hero))
                    pipe.set(hero_key, _hero_counters(statistics, int(hero)))
                    keys.append(hero_key)
        manifest_key = _key(version, "manifest")
        pipe.set(manifest_key, json.dumps(manifest))
        keys.append(manifest_key)
        pipe.sadd(_key(version, "keys"), *keys)
        await pipe.execute()
        previous = await self.current_version()
        # The pointer moves only now that every key of the version exists.
        switch = self._redis.pipeline(transaction=True)
        switch.set(CURRENT_KEY, version)
        switch.publish(CHANGED_CHANNEL, version)
        await switch.execute()
        if previous is not None and previous != version:
            await self._expire_version(previous)

    async def _expire_version(self, version: int) -> None:
        keys_key = _key(version, "keys")
        members = await self._redis.smembers(keys_key)
        pipe = self._redis.pipeline(transaction=False)
        for member in members:
            pipe.expire(member, OLD_VERSION_TTL_SECONDS)
        pipe.expire(keys_key, OLD_VERSION_TTL_SECONDS)
        await pipe.execute()

    async def load(self, version: int | None = None) -> ModelSnapshot | None:
        """The snapshot `version` (default: current), or None when there is none."""
        if version is None:
            version = await self.current_version()
            if version is None:
                return None
        raw_manifest = await self._redis.get(_key(version, "manifest"))
        if raw_manifest is None:
            return None
        manifest = json.loads(raw_manifest)
        playable = np.zeros(int(manifest["hero_slots"]), dtype=bool)
        playable[np.asarray(manifest["playable"], dtype=np.intp)] = True
        patches: dict[str, PatchModel] = {}
        for name, info in manifest["patches"].items():
            brackets = [SkillBracket(b) for b in info["brackets"]]
            blobs = await self._redis.mget(
                [_key(version, "model", name)]
                + [_key(version, "stats", name, b.value) for b in brackets]
            )
            present = [blob for blob in blobs if isinstance(blob, bytes)]
            if len(present) != len(blobs):
                return None  # expired under us: the caller retries with the new current
            patches[name] = PatchModel(
                patch=name,
                statistics={
                    b: decode_statistics(name, b, blob)
                    for b, blob in zip(brackets, present[1:], strict=True)
                },
                model=decode_model(present[0]),
                shrunk_toward=info["shrunk_toward"],
            )
        return ModelSnapshot(
            version=version,
            computed_at=float(manifest["computed_at"]),
            patches=patches,
            current_patch=manifest["current_patch"],
            playable=playable,
            pas_prior_weight=float(manifest["pas_prior_weight"]),
            runs=tuple(await self.runs()),
        )

    async def record_run(self, run: RunRecord) -> None:
        """Add or update a run in the capped list (newest first)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(f"{RUNS_KEY}:by_id", run.run_id, run_to_json(run))
        pipe.lrem(RUNS_KEY, 0, run.run_id)
        pipe.lpush(RUNS_KEY, run.run_id)
        pipe.ltrim(RUNS_KEY, 0, RUNS_KEPT - 1)
        await pipe.execute()

    async def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        ids = await self._redis.lrange(RUNS_KEY, 0, limit - 1)
        if not ids:
            return []
        texts = await self._redis.hmget(f"{RUNS_KEY}:by_id", ids)
        return [run_from_json(text) for text in texts if text is not None]


def now() -> float:
    """Wall-clock seconds (a seam for tests)."""
    return time.time()
