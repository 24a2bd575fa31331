"""Per-replica fan-out of draft events from Redis streams to local watchers.

One reader task per replica runs `XREAD BLOCK` over the streams of every draft that has at least
one local subscriber, each stream with its own cursor, on one dedicated connection, and copies
each entry into the bounded queue of each subscriber of that draft. A thousand watchers therefore
cost one connection and one blocked command, not a thousand.

Cursors: every subscription remembers the id of the last event it was given and is only given
newer ones, and the reader's cursor for a stream is the lowest cursor of its subscribers. A new
subscription that starts behind the others lowers the stream's cursor: the next XREAD returns
its backlog, which the others skip. So backlog and live events come from the same reads, in
order, with no gap or duplicate across the switch, and nothing needs a separate XRANGE.

Joining: new subscriptions are queued and taken in by the reader between two XREADs, never while
one is outstanding, so a cursor is never lowered under a read in flight. To take them in without
waiting for the blocking XREAD to time out, the hub interrupts it with `CLIENT UNBLOCK` sent on
the ordinary pool (it returns like a timeout, nothing is lost, the connection stays up). An
unblock can race with an XREAD that is sent but not yet blocked; it is then retried for as long
as that read is outstanding.

Overflow: delivery never waits. A subscriber whose queue is full has it cleared and gets one
`Overflowed` marker instead, then later events as usual; it must resynchronise from a snapshot.
A subscription whose after id is older than what the stream still keeps (trimmed) starts with
`Overflowed` for the same reason.

Failures: when Redis is down, or stuck (every Redis call of the reader is bounded by the store's
timeout, XREAD by its block time plus a margin), the reader retries with backoff; subscribers
just wait, and since cursors are kept they continue without loss. A bug in the reader ends every
subscription (their clients reconnect, possibly elsewhere), is reported through `on_health`, and
the reader restarts after a backoff; meanwhile new subscriptions end at once rather than wait for
events that would not come. A subscription ends (its iterator stops; `end_reason` says why) when
its draft's stream no longer exists (expired), checked when it joins and every few seconds, when
the replica begins to shut down (`end_all`), or when the hub stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, Self

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from services.draft.repo import DraftStore, LoggedEvent, decode_entry, text

log = logging.getLogger(__name__)

type EventId = tuple[int, int]

# Why a subscription ended (Subscription.end_reason).
GONE = "gone"  # the draft's stream no longer exists: it expired (or never was)
STOPPING = "stopping"  # this replica is shutting down
FAILED = "failed"  # the reader failed; it restarts, but this subscription is over


def parse_event_id(event_id: str) -> EventId:
    """A stream id "<ms>-<n>" (or "<ms>", meaning n = 0) as a comparable pair."""
    head, _, tail = event_id.partition("-")
    try:
        parsed = (int(head), int(tail or 0))
    except ValueError:
        raise ValueError(f"not a stream id: {event_id!r}") from None
    if parsed[0] < 0 or parsed[1] < 0:
        raise ValueError(f"not a stream id: {event_id!r}")
    return parsed


def format_event_id(event_id: EventId) -> str:
    """The "<ms>-<n>" form of a parsed id."""
    return f"{event_id[0]}-{event_id[1]}"


class Overflowed:
    """Delivered (once per overflow) instead of events that were dropped: the watcher fell behind
    or asked for events that are no longer kept, and must send a snapshot before continuing with
    the events that follow this marker. `after_event_id` is the newest event it did not get."""

    __slots__ = ("after_event_id",)

    def __init__(self, after_event_id: str) -> None:
        self.after_event_id = after_event_id

    def __repr__(self) -> str:
        return f"Overflowed(after_event_id={self.after_event_id!r})"


class Subscription:
    """The events of one draft for one watcher: an async context manager (joining on enter,
    leaving on exit) and an async iterator of LoggedEvent | Overflowed."""

    def __init__(self, hub: DraftHub, draft_id: str, key: str, after: EventId) -> None:
        self.draft_id = draft_id
        self.key = key
        # The id of the newest event handed to this subscription (or skipped by overflowing).
        self.cursor = after
        self._hub = hub
        self._items: deque[LoggedEvent | Overflowed] = deque()
        self._ready = asyncio.Event()
        self._entered = False
        self._ended = False
        self.end_reason: str | None = None
        self.overflows = 0

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a subscription can be entered once")
        self._entered = True
        self._hub._join(self)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._hub._leave(self)
        self._end(STOPPING)

    def __aiter__(self) -> AsyncIterator[LoggedEvent | Overflowed]:
        return self

    async def __anext__(self) -> LoggedEvent | Overflowed:
        if not self._entered:
            raise RuntimeError("iterate a subscription inside `async with`")
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    @property
    def ended(self) -> bool:
        """True once no more events will come (draft gone, hub stopped or context left)."""
        return self._ended

    def _deliver(self, event: LoggedEvent, event_id: EventId) -> None:
        """Queue an event newer than the cursor; never blocks (a full queue is replaced by an
        Overflowed marker)."""
        if event_id <= self.cursor:
            return
        self.cursor = event_id
        if len(self._items) >= self._hub.queue_size:
            self._overflow(event.event_id)
        else:
            self._items.append(event)
        self._ready.set()

    def _overflow(self, after_event_id: str) -> None:
        self._items.clear()
        self._items.append(Overflowed(after_event_id))
        self.overflows += 1
        self._ready.set()

    def _end(self, reason: str) -> None:
        if not self._ended:
            self._ended = True
            self.end_reason = reason
        self._ready.set()


class _Stream:
    """The reader's state for one watched stream."""

    __slots__ = ("cursor", "draft_id", "subscribers")

    def __init__(self, draft_id: str, cursor: EventId) -> None:
        self.draft_id = draft_id
        self.cursor = cursor
        self.subscribers: set[Subscription] = set()


class DraftHub:
    """Fans the events of every locally watched draft out to its subscribers (one per replica)."""

    def __init__(
        self,
        store: DraftStore,
        *,
        queue_size: int = 256,
        block_ms: int = 2000,
        gone_check_seconds: float = 5.0,
        max_backoff_seconds: float = 2.0,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        if queue_size < 1 or block_ms < 1:
            raise ValueError("queue_size and block_ms must be >= 1")
        self.store = store
        self.queue_size = queue_size
        self._block_ms = block_ms
        self._gone_check = gone_check_seconds
        self._max_backoff = max_backoff_seconds
        self._on_health = on_health
        # Every Redis call of the reader but the blocking XREAD waits at most this long.
        self._timeout = store.timeout_seconds
        # Set while the reader recovers from a bug and after end_all: joins end at once.
        self._refusing: str | None = None
        self.restarts = 0
        # Redis calls of the reader that failed or timed out (each is retried after a backoff).
        self.read_failures = 0
        self._streams: dict[str, _Stream] = {}
        # Joined but not taken in by the reader yet; a dict for O(1) leaves, ordered by join.
        self._pending: dict[Subscription, None] = {}
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self._client_id: int | None = None
        # Counts XREADs; `_reading` is the number of the one outstanding, None between reads.
        self._reads = 0
        self._reading: int | None = None
        self._unblocker: asyncio.Task[None] | None = None
        self._last_gone_check = time.monotonic()

    @property
    def watched(self) -> frozenset[str]:
        """Ids of the drafts the reader currently reads (those with a joined subscriber)."""
        return frozenset(stream.draft_id for stream in self._streams.values())

    async def start(self) -> None:
        """Start the reader task (idempotent)."""
        if self._task is None or self._task.done():
            self._refusing = None
            self._task = asyncio.create_task(self._supervise(), name="draft-hub-reader")

    async def stop(self) -> None:
        """Stop reading, end every subscription and close the reader's connection."""
        for task in (self._task, self._unblocker):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:
                    log.exception("draft hub task failed")
        self._task = self._unblocker = None
        await self._disconnect()
        self._end_all(STOPPING)

    def end_all(self) -> None:
        """End every subscription now and refuse new ones: the replica is shutting down, and its
        watchers should reconnect elsewhere at once rather than hold the shutdown up."""
        self._refusing = STOPPING
        self._end_all(STOPPING)

    @property
    def running(self) -> bool:
        """Whether the reader task is alive (False before start, after stop or after a bug)."""
        return self._task is not None and not self._task.done()

    def subscribe(self, draft_id: str, after_event_id: str) -> Subscription:
        """Every event of the draft with an id above `after_event_id` ("0-0" for all), live,
        once `async with` is entered."""
        return Subscription(
            self, draft_id, self.store.events_key(draft_id), parse_event_id(after_event_id)
        )

    def _end_all(self, reason: str) -> None:
        for stream in self._streams.values():
            for subscriber in stream.subscribers:
                subscriber._end(reason)
        for subscriber in self._pending:
            subscriber._end(reason)
        self._streams.clear()
        self._pending.clear()

    # Called by Subscription.

    def _join(self, subscriber: Subscription) -> None:
        if self._refusing is not None or not self.running:
            # Nobody would deliver its events: end it now instead of letting it wait forever.
            subscriber._end(self._refusing or STOPPING)
            return
        self._pending[subscriber] = None
        self._work.set()
        self._interrupt()

    def _leave(self, subscriber: Subscription) -> None:
        if subscriber in self._pending:
            del self._pending[subscriber]
            return
        stream = self._streams.get(subscriber.key)
        if stream is not None:
            stream.subscribers.discard(subscriber)
            if not stream.subscribers:
                # The XREAD in flight may still name it; its entries are then simply ignored.
                del self._streams[subscriber.key]

    # The reader.

    def _interrupt(self) -> None:
        """Make an outstanding blocking XREAD return now, so pending joins are taken in."""
        if self._reading is None or self._client_id is None:
            return  # between reads: the loop takes the pending joins in before the next one
        if self._unblocker is None or self._unblocker.done():
            self._unblocker = asyncio.create_task(self._unblock(self._reading, self._client_id))

    async def _unblock(self, read: int, client_id: int) -> None:
        # CLIENT UNBLOCK answers 0 when the XREAD is sent but not blocked yet (or already
        # answered); retry while that same read is outstanding.
        while self._reading == read:
            try:
                async with asyncio.timeout(self._timeout):
                    if await self.store.redis.client_unblock(client_id):
                        return
            except (RedisError, OSError, TimeoutError) as error:
                log.debug("client unblock failed: %s", error)
                return  # the read ends by itself within block_ms
            await asyncio.sleep(0.001)

    async def _supervise(self) -> None:
        """Run the reader; after a bug, end every subscription, report, back off and restart."""
        backoff = 0.1
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug: fail loudly, and end every watch so that clients reconnect (possibly to
                # another replica) instead of waiting for events that will never come.
                log.exception("draft hub reader failed; ending every subscription, restarting")
                self._refusing = FAILED
                self._end_all(FAILED)
                self._report(False)
                await self._disconnect()
                await asyncio.sleep(backoff * (0.5 + random.random()))  # noqa: S311 - jitter
                backoff = min(backoff * 2, 30.0)
                self.restarts += 1
                self._refusing = None
                self._report(True)

    def _report(self, healthy: bool) -> None:
        if self._on_health is not None:
            try:
                self._on_health(healthy)
            except Exception:
                log.exception("draft hub: reporting health failed")

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._step()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as error:
                # Subscribers keep their cursors and simply wait; nothing is lost meanwhile.
                self.read_failures += 1
                log.warning("draft hub: redis read failed, retrying in %.2fs: %s", backoff, error)
                await self._disconnect()
                await asyncio.sleep(backoff * (0.5 + random.random()))  # noqa: S311 - jitter
                backoff = min(backoff * 2, self._max_backoff)

    async def _step(self) -> None:
        if self._pending:
            await self._take_in(self._pending)
        if not self._streams:
            if not self._pending:
                self._work.clear()
                await self._work.wait()
            return
        if time.monotonic() - self._last_gone_check >= self._gone_check:
            await self._drop_gone()
        if self._pending:
            return  # joined while we awaited: take them in before blocking
        reply = await self._xread()
        if reply:
            self._dispatch(reply)

    async def _take_in(self, pending: dict[Subscription, None]) -> None:
        """Join pending subscriptions: end those whose draft is gone, warn those whose backlog
        was trimmed, and lower stream cursors to the newcomers' cursors."""
        joining = list(pending)
        keys = list(dict.fromkeys(subscriber.key for subscriber in joining))
        async with (
            asyncio.timeout(self._timeout),
            self.store.redis.pipeline(transaction=False) as pipe,
        ):
            for key in keys:
                pipe.xinfo_stream(key)
            infos = await pipe.execute(raise_on_error=False)
        for error in infos:
            if isinstance(error, Exception) and not isinstance(error, ResponseError):
                raise error  # a connection failure: retry the whole join later
        state = dict(zip(keys, infos, strict=True))
        for subscriber in joining:
            if subscriber not in pending:
                continue  # left while we awaited
            del pending[subscriber]
            info = state[subscriber.key]
            if isinstance(info, Exception):  # "no such key": the draft is gone (or never was)
                subscriber._end(GONE)
                continue
            if _trimmed_past(info, subscriber.cursor):
                subscriber._overflow(format_event_id(subscriber.cursor))
            stream = self._streams.get(subscriber.key)
            if stream is None:
                stream = self._streams[subscriber.key] = _Stream(
                    subscriber.draft_id, subscriber.cursor
                )
            else:
                stream.cursor = min(stream.cursor, subscriber.cursor)
            stream.subscribers.add(subscriber)

    async def _drop_gone(self) -> None:
        """End the subscriptions of streams that no longer exist (the draft expired)."""
        keys = list(self._streams)
        async with (
            asyncio.timeout(self._timeout),
            self.store.redis.pipeline(transaction=False) as pipe,
        ):
            for key in keys:
                pipe.exists(key)
            found = await pipe.execute()
        self._last_gone_check = time.monotonic()
        for key, exists in zip(keys, found, strict=True):
            if not exists and key in self._streams:
                for subscriber in self._streams.pop(key).subscribers:
                    subscriber._end(GONE)

    async def _connect(self) -> AbstractConnection:
        if self._connection is None:
            pool = self.store.redis.connection_pool
            connection = pool.connection_class(**pool.connection_kwargs)
            try:
                async with asyncio.timeout(self._timeout):
                    await connection.connect()  # type: ignore[no-untyped-call]  # untyped
                    await connection.send_command("CLIENT", "ID")
                    self._client_id = int(await connection.read_response())
            except BaseException:
                with contextlib.suppress(RedisError, OSError):
                    await connection.disconnect()
                raise
            self._connection = connection
        return self._connection

    async def _disconnect(self) -> None:
        connection, self._connection, self._client_id = self._connection, None, None
        self._reading = None
        if connection is not None:
            try:
                await connection.disconnect()
            except (RedisError, OSError) as error:
                log.debug("draft hub: closing the reader connection: %s", error)

    async def _xread(self) -> Any:
        connection = await self._connect()
        if self._pending:
            return None  # joined while connecting
        streams = list(self._streams.items())
        args: list[str | int] = ["XREAD", "COUNT", self.queue_size, "BLOCK", self._block_ms]
        args += ["STREAMS", *(key for key, _ in streams)]
        args += [format_event_id(stream.cursor) for _, stream in streams]
        self._reads += 1
        # Set before the first await: a join from now on must interrupt this read.
        self._reading = self._reads
        try:
            await connection.send_command(*args)
            # A dead or stuck server must not hang the reader: allow the block plus the store's
            # timeout.
            return await connection.read_response(timeout=self._block_ms / 1000 + self._timeout)
        finally:
            self._reading = None

    def _dispatch(self, reply: Any) -> None:
        """Hand the entries of an XREAD reply (RESP2 list or RESP3 map) to the subscribers."""
        per_key: Iterable[tuple[Any, Any]] = (
            reply.items() if isinstance(reply, dict) else ((item[0], item[1]) for item in reply)
        )
        for raw_key, entries in per_key:
            stream = self._streams.get(text(raw_key))
            if stream is None or not entries:
                continue  # everyone left during the read
            for raw_id, fields in entries:
                event_id = parse_event_id(text(raw_id))
                stream.cursor = event_id
                try:
                    event = decode_entry(raw_id, fields)
                except ValueError as error:  # orjson.JSONDecodeError is a ValueError
                    # Only the store writes these streams, so this is a bug; but crashing would
                    # make the entry a poison pill for every watcher of this replica.
                    log.error(
                        "draft hub: skipping malformed entry %s of %s: %s",
                        text(raw_id),
                        stream.draft_id,
                        error,
                    )
                    continue
                for subscriber in stream.subscribers:
                    subscriber._deliver(event, event_id)


def _trimmed_past(info: dict[str, Any], cursor: EventId) -> bool:
    """Whether events after `cursor` may have been trimmed away. Trimming only removes the
    oldest entries, so if any were removed (entries-added > length) they are older than the first
    kept one; events are missing unless that entry directly follows the cursor or is older."""
    added = int(info.get("entries-added", 0))
    length = int(info.get("length", 0))
    if added <= length:
        return False
    first = info.get("first-entry")
    if not first:
        last = parse_event_id(text(info.get("last-generated-id", "0-0")))
        return last > cursor
    return parse_event_id(text(first[0])) > (cursor[0], cursor[1] + 1)
