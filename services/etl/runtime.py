"""The stores, the upstream fetcher and the consumer task of one etl process, built once at start
and closed at stop; the servicer reads them."""

from __future__ import annotations

import asyncio
import logging

from services.common.dota_constants import ConstantsWatcher, DotaConstants, load_constants
from services.common.stores import Stores
from services.etl.config import EtlSettings
from services.etl.dead_letter_topic import DeadLetterTopic
from services.etl.fetch import OpenDotaFetcher
from services.etl.loader import MatchLoader
from services.etl.pipeline import EtlStats, MatchPipeline
from services.etl.repo import Warehouse

log = logging.getLogger(__name__)


class EtlRuntime:
    """The warehouse, the fetcher and the consumer task of one etl process."""

    def __init__(self, settings: EtlSettings, stores: Stores) -> None:
        self._settings = settings
        self._stores = stores
        self.stats = EtlStats()
        self.fetcher = OpenDotaFetcher(settings.opendota_base_url, settings.opendota_api_key)
        self.dead_letters = DeadLetterTopic(
            settings.kafka_bootstrap_servers,
            dead_letter_topic=settings.kafka_topic_dead_letters,
            replay_topic=settings.kafka_topic_dead_letter_replays,
            raw_topic=settings.kafka_topic_match_ids,
        )
        self.warehouse: Warehouse | None = None
        # ImportDumps runs one import at a time.
        self.import_lock = asyncio.Lock()
        self._watcher: ConstantsWatcher | None = None
        self._constants_task: asyncio.Task[None] | None = None
        self.pipeline: MatchPipeline | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Set when the consumer died of an unexpected error: the process must exit non-zero.
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None

    def constants(self) -> DotaConstants:
        """The game constants as the files hold them now (shared by the consumer and imports;
        a dotaconstants update is picked up within RELOAD_CHECK_SECONDS, without a restart)."""
        if self._watcher is None:
            self._watcher = ConstantsWatcher(initial=load_constants())
        return self._watcher.current()

    async def _follow_constants(self, constants: DotaConstants) -> None:
        """Relabel the stored matches at start (for an update made while the etl was down) and
        whenever the constants gain a patch; hand new constants to the consumer. A batch
        labelled with the old constants may be stored while a relabel runs, so a change is
        relabelled twice, one check apart (the second pass is usually one count)."""
        assert self._watcher is not None
        assert self.warehouse is not None
        passes = 1
        while True:
            if passes:
                try:
                    await asyncio.to_thread(self.warehouse.relabel_patches, constants)
                    passes -= 1
                except Exception as error:  # retried at the next check; ingest goes on
                    log.warning("relabelling matches after a patch update failed: %s", error)
            await asyncio.sleep(self._watcher.check_seconds)
            current = self.constants()
            if current is not constants:
                if self.pipeline is not None:
                    self.pipeline.use_constants(current)
                if current.patches != constants.patches:
                    passes = 2
                constants = current

    @property
    def loader(self) -> MatchLoader | None:
        """The consumer's fetch-transform-load steps, for ReprocessMatch; None until started."""
        return self.pipeline.loader if self.pipeline is not None else None

    async def start(self) -> None:
        """Migrate the warehouse, join the consumer group, start consuming."""
        self.warehouse = Warehouse(self._stores.warehouse)
        applied = await asyncio.to_thread(self.warehouse.migrate)
        if applied:
            log.info("warehouse migrated", extra={"fields": {"applied": applied}})
        await self.dead_letters.ensure()
        settings = self._settings
        self.pipeline = MatchPipeline(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topic=settings.kafka_topic_match_ids,
            dead_letter_topic=settings.kafka_topic_dead_letters,
            group_id=settings.kafka_consumer_group,
            warehouse=self.warehouse,
            constants=self.constants(),
            fetcher=self.fetcher,
            fetch_concurrency=settings.etl_fetch_concurrency,
            fetch_backlog=settings.etl_fetch_backlog,
            batch_size=settings.etl_batch_size,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
            stats=self.stats,
        )
        await self.pipeline.start()
        self._task = asyncio.create_task(self.pipeline.run(self._stop), name="etl-consumer")
        self._task.add_done_callback(self._record_failure)
        self._constants_task = asyncio.create_task(
            self._follow_constants(self.constants()), name="etl-constants"
        )

    def _record_failure(self, task: asyncio.Task[None]) -> None:
        """An unexpected consumer failure ends the process (non-zero, see `__main__`) so its
        supervisor restarts it; uncommitted records are replayed by the next member."""
        if task.cancelled() or task.exception() is None:
            return
        self.failure = task.exception()
        log.critical("etl consumer failed; exiting", exc_info=self.failure)
        self.failed.set()

    async def stop(self) -> None:
        """Finish the batch in progress, leave the group, close the fetcher."""
        self._stop.set()
        if self._constants_task is not None:
            self._constants_task.cancel()
            await asyncio.wait({self._constants_task})
        if self._task is not None:
            done, _ = await asyncio.wait(
                {self._task}, timeout=self._settings.shutdown_grace_seconds
            )
            if not done:
                # Still joining the group or inside a batch: nothing was committed for it, so the
                # next member replays it.
                self._task.cancel()
                await asyncio.wait({self._task})
        if self.pipeline is not None:
            await self.pipeline.stop()
        await self.fetcher.close()
