"""Model snapshots in Redis: versioned keys, an atomic pointer switch, expiry of old versions.

Layout (version v):
    (every key starts with DEPLOYMENT, "counterpick" by default, in place of `counterpick`)
    counterpick:snapshot:current                 -> v, switched only after v is completely written
    counterpick:snapshot:v{v}:manifest           -> JSON: patches, brackets, runs, weights
    counterpick:snapshot:v{v}:stats:{patch}:{b}  -> npz: counts and prior weights of one bracket
    counterpick:snapshot:v{v}:model:{patch}      -> npz: the patch's decomposed win model
    counterpick:snapshot:v{v}:positions:{patch}  -> npz: hero x position counts and their prior
    counters:v{v}:patch_{patch}:skill_{b}:hero_{id} -> JSON: one hero's matchups and synergies,
                                                     for consumers that read Redis directly
    counterpick:snapshot:v{v}:keys               -> set of every key above, for expiring them
A change notice is published on counterpick:snapshot:changed.

Every key is written with a TTL (PENDING_TTL_SECONDS): a publish that fails or dies half-way
leaves nothing that lives for ever. The pointer switch persists the keys of the new version and
gives those of the replaced one OLD_VERSION_TTL_SECONDS, so replicas still reading it can finish,
all in one transaction. Runs are kept in a list and a hash by id, both capped at RUNS_KEPT.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from services.common.config import DEFAULT_DEPLOYMENT
from services.common.dota import SkillBracket
from services.model.positions import HeroPositions
from services.model.snapshot import ModelSnapshot, PatchModel, RunRecord
from services.model.statistics import (
    BracketStatistics,
    Relation,
    base_rates,
    pair_table,
    shrink_brackets,
)
from services.model.winmodel.metrics import Quality
from services.model.winmodel.served import DraftModel

PREFIX = f"{DEFAULT_DEPLOYMENT}:snapshot"
CURRENT_KEY = f"{PREFIX}:current"
VERSION_COUNTER_KEY = f"{PREFIX}:next_version"
CHANGED_CHANNEL = f"{PREFIX}:changed"
RUNS_KEY = f"{DEFAULT_DEPLOYMENT}:model:runs"
# Replicas swap to a new version within seconds of its notice (or of their next poll, 30 s), so
# a replaced version is needed only briefly; with a run a minute, a longer life would keep dozens
# of complete versions in Redis at once.
OLD_VERSION_TTL_SECONDS = 300
# A version that is not current yet: a publish writes for seconds, so an hour is ample, and
# what a failed publish wrote is gone after it.
PENDING_TTL_SECONDS = 3600
RUNS_KEPT = 200
# Adds or updates one run (ARGV: id, JSON, cap) in the newest-first id list (KEYS[1]) and the
# hash by id (KEYS[2]) and drops what falls off the list from both, atomically; a hash that
# outgrew the list (written before the cap covered it) is pruned to the list's ids.
_RECORD_RUN = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('LPUSH', KEYS[1], ARGV[1])
local cap = tonumber(ARGV[3])
local dropped = redis.call('LRANGE', KEYS[1], cap, -1)
redis.call('LTRIM', KEYS[1], 0, cap - 1)
for _, id in ipairs(dropped) do redis.call('HDEL', KEYS[2], id) end
if redis.call('HLEN', KEYS[2]) > cap then
  local kept = {}
  for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do kept[id] = true end
  for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
    if not kept[id] then redis.call('HDEL', KEYS[2], id) end
  end
end
"""


def counters_key(
    version: int,
    patch: str,
    bracket: SkillBracket,
    hero_id: int,
    deployment: str = DEFAULT_DEPLOYMENT,
) -> str:
    """One hero's counters key for consumers that read Redis directly
    (`counters:v{N}:patch_7.36:skill_all:hero_1`), versioned like every snapshot key; under
    any other DEPLOYMENT than the default it starts with it (`<deployment>:counters:...`)."""
    key = f"counters:v{version}:patch_{patch}:skill_{bracket.value}:hero_{hero_id}"
    return key if deployment == DEFAULT_DEPLOYMENT else f"{deployment}:{key}"


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


def encode_positions(positions: HeroPositions) -> bytes:
    """The counts, the prior and its weight; the frequencies are derived again on load."""
    return _npz(
        counts=positions.counts,
        prior=positions.prior,
        prior_weight=np.asarray([positions.prior_weight]),
    )


def decode_positions(data: bytes) -> HeroPositions:
    """Inverse of encode_positions."""
    arrays = _load_npz(data)
    return HeroPositions(
        counts=arrays["counts"],
        prior=arrays["prior"],
        prior_weight=float(arrays["prior_weight"][0]),
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

    def __init__(self, redis: aioredis.Redis, deployment: str = DEFAULT_DEPLOYMENT) -> None:
        self._redis = redis
        self._record_run: Any = redis.register_script(_RECORD_RUN)
        # Every key under the deployment's prefix (the module constants are the default's).
        self.deployment = deployment
        self._prefix = f"{deployment}:snapshot"
        self.current_key = f"{self._prefix}:current"
        self.changed_channel = f"{self._prefix}:changed"
        self._version_counter_key = f"{self._prefix}:next_version"
        self._runs_key = f"{deployment}:model:runs"

    def _key(self, version: int, *parts: str) -> str:
        return ":".join((self._prefix, f"v{version}", *parts))

    async def next_version(self) -> int:
        """A fresh snapshot version number."""
        return int(await self._redis.incr(self._version_counter_key))

    async def current_version(self) -> int | None:
        """The version readers should serve, if any."""
        value = await self._redis.get(self.current_key)
        return int(value) if value is not None else None

    async def publish(self, snapshot: ModelSnapshot) -> None:
        """Write every key of the snapshot, then switch the pointer and notify replicas."""
        keys = await self._write(snapshot)
        await self._switch(snapshot.version, keys)

    async def _write(self, snapshot: ModelSnapshot) -> list[str]:
        """Every key of the version, each expiring unless the switch persists it; written one
        patch per round trip, so the client never buffers the whole snapshot."""
        version = snapshot.version
        keys: list[str] = []
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
                "positions": entry.positions is not None,
            }
            written: list[str] = []
            pipe = self._redis.pipeline(transaction=False)
            model_key = self._key(version, "model", name)
            pipe.set(model_key, encode_model(entry.model), ex=PENDING_TTL_SECONDS)
            written.append(model_key)
            if entry.positions is not None:
                positions_key = self._key(version, "positions", name)
                pipe.set(positions_key, encode_positions(entry.positions), ex=PENDING_TTL_SECONDS)
                written.append(positions_key)
            for bracket, statistics in entry.statistics.items():
                stats_key = self._key(version, "stats", name, bracket.value)
                pipe.set(stats_key, encode_statistics(statistics), ex=PENDING_TTL_SECONDS)
                written.append(stats_key)
                for hero in np.flatnonzero(statistics.hero_games):
                    hero_key = counters_key(version, name, bracket, int(hero), self.deployment)
                    pipe.set(
                        hero_key, _hero_counters(statistics, int(hero)), ex=PENDING_TTL_SECONDS
                    )
                    written.append(hero_key)
            # The set of keys first, so whoever expires the version finds what was written.
            pipe.sadd(self._key(version, "keys"), *written)
            pipe.expire(self._key(version, "keys"), PENDING_TTL_SECONDS)
            await pipe.execute()
            keys += written
        manifest_key = self._key(version, "manifest")
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(manifest_key, json.dumps(manifest), ex=PENDING_TTL_SECONDS)
        pipe.sadd(self._key(version, "keys"), manifest_key)
        pipe.expire(self._key(version, "keys"), PENDING_TTL_SECONDS)
        await pipe.execute()
        return [*keys, manifest_key]

    async def _switch(self, version: int, keys: list[str]) -> None:
        """Make `version` current: persist its keys, expire the replaced version's, move the
        pointer and notify, in one transaction (retried if another publisher switched first)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self.current_key)
                    raw = await pipe.get(self.current_key)
                    previous = int(raw) if raw is not None else None
                    replaced: set[bytes | str] = set()
                    if previous is not None and previous != version:
                        replaced = await pipe.smembers(self._key(previous, "keys"))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for key in [*keys, self._key(version, "keys")]:
                        pipe.persist(key)
                    if previous is not None and previous != version:
                        for member in replaced:
                            pipe.expire(member, OLD_VERSION_TTL_SECONDS)
                        pipe.expire(self._key(previous, "keys"), OLD_VERSION_TTL_SECONDS)
                    pipe.set(self.current_key, version)
                    pipe.publish(self.changed_channel, version)
                    await pipe.execute()
                    return
                except aioredis.WatchError:
                    continue

    async def load(self, version: int | None = None) -> ModelSnapshot | None:
        """The snapshot `version` (default: current), or None when there is none."""
        if version is None:
            version = await self.current_version()
            if version is None:
                return None
        raw_manifest = await self._redis.get(self._key(version, "manifest"))
        if raw_manifest is None:
            return None
        manifest = json.loads(raw_manifest)
        playable = np.zeros(int(manifest["hero_slots"]), dtype=bool)
        playable[np.asarray(manifest["playable"], dtype=np.intp)] = True
        patches: dict[str, PatchModel] = {}
        for name, info in manifest["patches"].items():
            brackets = [SkillBracket(b) for b in info["brackets"]]
            # Manifests written before positions were kept have no "positions" entry.
            with_positions = bool(info.get("positions"))
            blobs = await self._redis.mget(
                [self._key(version, "model", name)]
                + [self._key(version, "stats", name, b.value) for b in brackets]
                + ([self._key(version, "positions", name)] if with_positions else [])
            )
            present = [blob for blob in blobs if isinstance(blob, bytes)]
            if len(present) != len(blobs):
                return None  # expired under us: the caller retries with the new current
            positions = decode_positions(present.pop()) if with_positions else None
            patches[name] = PatchModel(
                patch=name,
                statistics=shrink_brackets(
                    {
                        b: decode_statistics(name, b, blob)
                        for b, blob in zip(brackets, present[1:], strict=True)
                    }
                ),
                model=decode_model(present[0]),
                shrunk_toward=info["shrunk_toward"],
                positions=positions,
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
        """Add or update a run; only the newest RUNS_KEPT are kept (list and hash alike)."""
        await self._record_run(
            keys=[self._runs_key, f"{self._runs_key}:by_id"],
            args=[run.run_id, run_to_json(run), RUNS_KEPT],
        )

    async def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        ids = await self._redis.lrange(self._runs_key, 0, limit - 1)
        if not ids:
            return []
        texts = await self._redis.hmget(f"{self._runs_key}:by_id", ids)
        return [run_from_json(text) for text in texts if text is not None]


def now() -> float:
    """Wall-clock seconds (a seam for tests)."""
    return time.time()
