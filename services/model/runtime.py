"""The model service's moving parts: the snapshot it serves, how it follows new versions, the
recompute schedule, and personal scores on demand.

A replica holds the current snapshot in memory and swaps it whole when a change notice arrives
(or a poll sees a new pointer). When Redis or the warehouse is down it keeps serving the last good
snapshot; the outage shows in `dependencies` (health/readiness), not as errors to users.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import redis.asyncio as aioredis

from services.common.config import DEFAULT_DEPLOYMENT
from services.common.dota import SkillBracket
from services.common.dota_constants import DotaConstants
from services.common.errors import DependencyUnavailable
from services.common.warehouse.reader import WarehouseReader
from services.model.drafts import PersonalScore
from services.model.pas import UNKNOWN_PATCH_RATE, HeroScore, PlayerMatch, hero_scores
from services.model.recompute import Recomputer
from services.model.repo import SnapshotStore
from services.model.snapshot import ModelNotReady, ModelSnapshot, RunRecord

log = logging.getLogger(__name__)
# Bump when the PAS definition changes (services/model/pas.py).
PAS_FORMAT = "pas2"

HealthReporter = Callable[[str, bool], None]
RETRY_SECONDS = 30.0


@dataclass
class ModelRuntime:
    """Snapshot holder, change follower, scheduler."""

    constants: DotaConstants
    redis: aioredis.Redis | None = None
    source: WarehouseReader | None = None
    recompute_interval_seconds: float = 60.0
    full_recompute_seconds: float = 3600.0
    poll_seconds: float = 30.0
    pas_cache_seconds: int = 600
    # The first part of every Redis key (DEPLOYMENT).
    deployment: str = DEFAULT_DEPLOYMENT
    report_health: HealthReporter = lambda name, ok: None
    # The constants as they are now (a ConstantsWatcher's `current`), for the recomputer: a
    # dotaconstants update reaches the next run without a restart.
    reload_constants: Callable[[], DotaConstants] | None = None
    snapshot: ModelSnapshot | None = None
    store: SnapshotStore = field(init=False)
    recomputer: Recomputer | None = field(init=False, default=None)
    dependencies: dict[str, bool] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _running_job: asyncio.Task[RunRecord] | None = None
    _running_job_id: str = ""

    def __post_init__(self) -> None:
        if self.redis is not None:
            self.attach(self.redis, self.source)

    def attach(self, redis: aioredis.Redis, source: WarehouseReader | None) -> None:
        """Connect to the stores (opened by the server's start hooks)."""
        self.redis, self.source = redis, source
        self.store = SnapshotStore(redis, self.deployment)
        self.recomputer = (
            Recomputer(source, self.store, self.constants, reload_constants=self.reload_constants)
            if source is not None
            else None
        )

    @property
    def _client(self) -> aioredis.Redis:
        assert self.redis is not None, "ModelRuntime.attach was not called"
        return self.redis

    async def start(self) -> None:
        """Load the current snapshot (if any) and start following changes and the schedule."""
        await self.refresh()
        self._tasks.append(asyncio.create_task(self._follow_notices(), name="snapshot-notices"))
        self._tasks.append(asyncio.create_task(self._poll_pointer(), name="snapshot-poll"))
        if self.recomputer is not None and self.recompute_interval_seconds > 0:
            self._tasks.append(asyncio.create_task(self._schedule(), name="recompute-schedule"))

    async def stop(self) -> None:
        """Cancel the background tasks and release the warehouse (chdb: its directory lock)."""
        jobs = [*self._tasks, *([self._running_job] if self._running_job else [])]
        for task in jobs:
            task.cancel()
        for task in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        close = getattr(self.source, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
            self.source = None

    def _mark(self, dependency: str, ok: bool) -> None:
        if self.dependencies.get(dependency) != ok:
            log.log(
                logging.INFO if ok else logging.WARNING,
                "dependency %s is %s",
                dependency,
                "up" if ok else "down; serving the last good snapshot",
            )
        self.dependencies[dependency] = ok
        self.report_health(dependency, ok)

    def require(self) -> ModelSnapshot:
        """The snapshot to answer from, or MODEL_NOT_READY."""
        if self.snapshot is None:
            raise ModelNotReady(
                "no model snapshot exists yet: run `counterpick recompute` or wait for the "
                "scheduled recompute after matches are loaded"
            )
        return self.snapshot

    async def refresh(self) -> bool:
        """Swap in the current snapshot if it is newer than the one held; False on no change."""
        try:
            version = await self.store.current_version()
            if version is None or (self.snapshot and self.snapshot.version >= version):
                self._mark("redis", True)
                return False
            loaded = await self.store.load(version)
        except (aioredis.RedisError, OSError) as error:
            self._mark("redis", False)
            log.debug("snapshot refresh failed: %s", error)
            return False
        self._mark("redis", True)
        # Two refreshes overlap (a change notice and a recompute's own): the one that loaded an
        # older version must not replace the newer one the other swapped in meanwhile.
        if loaded is None or (self.snapshot and self.snapshot.version >= loaded.version):
            return False
        self.snapshot = loaded
        log.info("serving snapshot %d (current patch %s)", loaded.version, loaded.current_patch)
        return True

    async def _follow_notices(self) -> None:
        while True:
            try:
                pubsub = self._client.pubsub()
                await pubsub.subscribe(self.store.changed_channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._mark("redis", False)
                log.debug("change notices interrupted: %s", error)
                await asyncio.sleep(min(self.poll_seconds, 5.0))

    async def _poll_pointer(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            await self.refresh()

    async def _schedule(self) -> None:
        """Incremental runs every interval, a full one first and then every full period; an
        incremental run without new matches costs one watermark query and publishes nothing."""
        last_full: float | None = None
        while True:
            delay = self.recompute_interval_seconds
            try:
                started = time.monotonic()
                full = last_full is None or started - last_full >= self.full_recompute_seconds
                await self.recompute(full=full, skip_unchanged=not full)
                if full:
                    last_full = started
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Typically the warehouse (or etl) is still starting or has no matches yet.
                log.warning("scheduled recompute failed: %s", error)
                delay = min(delay, RETRY_SECONDS)
            await asyncio.sleep(delay)

    async def recompute(self, *, full: bool = False, skip_unchanged: bool = False) -> RunRecord:
        """Run a recompute now and serve its snapshot (see Recomputer.run)."""
        if self.recomputer is None:
            raise DependencyUnavailable("warehouse", "this replica has no warehouse to read")
        try:
            run = await self.recomputer.run(full=full, skip_unchanged=skip_unchanged)
        except (OSError, ConnectionError) as error:
            self._mark("warehouse", False)
            raise DependencyUnavailable("warehouse", f"warehouse unreachable: {error}") from error
        self._mark("warehouse", True)
        await self.refresh()
        return run

    def start_recompute(self) -> tuple[str, bool]:
        """Start a background recompute unless one runs; returns (job id, already running)."""
        if self._running_job is not None and not self._running_job.done():
            return self._running_job_id, True
        self._running_job_id = f"recompute-{int(time.time() * 1000)}"
        self._running_job = asyncio.create_task(self.recompute(full=False), name="recompute")
        self._running_job.add_done_callback(_log_job_failure)
        return self._running_job_id, False

    async def runs(self) -> list[RunRecord]:
        """Recent runs; from the snapshot when Redis is down."""
        try:
            return await self.store.runs()
        except (aioredis.RedisError, OSError):
            return list(self.snapshot.runs) if self.snapshot else []

    async def personal_scores(self, account_id: int, patch: str | None) -> list[HeroScore]:
        """The player's PAS per hero, cached in Redis for a while."""
        snapshot = self.require()
        # PAS_FORMAT names how scores are computed: a deploy that changes it must not serve
        # scores cached by the previous code under the same snapshot.
        cache_key = (
            f"{self.deployment}:pas:{PAS_FORMAT}:v{snapshot.version}:{account_id}:{patch or '*'}"
        )
        with contextlib.suppress(aioredis.RedisError, OSError):
            cached = await self._client.get(cache_key)
            if cached is not None:
                return [_score_from_json(row) for row in json.loads(cached)]
        if self.source is None:
            raise DependencyUnavailable("warehouse", "this replica has no warehouse to read")
        try:
            table = await asyncio.to_thread(self.source.player_hero_records, account_id)
        except Exception as error:
            self._mark("warehouse", False)
            raise DependencyUnavailable("warehouse", f"warehouse unreachable: {error}") from error
        self._mark("warehouse", True)
        matches = _player_matches(snapshot, table, patch)
        scores = hero_scores(matches, snapshot.pas_prior_weight)
        with contextlib.suppress(aioredis.RedisError, OSError):
            await self._client.set(
                cache_key,
                json.dumps([score.__dict__ for score in scores]),
                ex=max(1, self.pas_cache_seconds),
            )
        return scores

    async def personal_map(self, account_id: int, patch: str | None) -> dict[int, PersonalScore]:
        """PAS per hero as suggestions use it."""
        return {
            score.hero_id: PersonalScore(score.pas, score.games)
            for score in await self.personal_scores(account_id, patch)
        }


def _log_job_failure(task: asyncio.Task[RunRecord]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("recompute job failed: %s", task.exception())


def _score_from_json(row: dict[str, object]) -> HeroScore:
    interval = row["interval"]
    assert isinstance(interval, list)
    values = dict(row)
    values["interval"] = (float(interval[0]), float(interval[1]))
    return HeroScore(**values)  # type: ignore[arg-type]


def _player_matches(snapshot: ModelSnapshot, table: object, patch: str | None) -> list[PlayerMatch]:
    """The player's rows with each match's expected win rate: the hero's base rate in the
    match's patch and bracket (ALL when the bracket has no statistics), or UNKNOWN_PATCH_RATE
    when the snapshot has no statistics for the match's patch (see pas.py). Every stored match
    of the player counts, so a score's games are the player's matches on the hero."""
    rows = table.to_pylist() if hasattr(table, "to_pylist") else []
    matches = []
    for row in rows:
        if patch and row["patch"] != patch:
            continue
        hero = int(row["hero_id"])
        expected = UNKNOWN_PATCH_RATE
        entry = snapshot.patches.get(row["patch"])
        if entry is not None:
            bracket = SkillBracket.parse(row["skill_bracket"]) or SkillBracket.UNKNOWN
            statistics = entry.statistics.get(bracket) or entry.statistics[SkillBracket.ALL]
            if 0 <= hero < statistics.hero_slots:
                expected = float(np.clip(statistics.base_rate[hero], 0.01, 0.99))
        matches.append(
            PlayerMatch(
                hero_id=hero, won=bool(row["win"]), start_time=row["start_time"], expected=expected
            )
        )
    return matches
