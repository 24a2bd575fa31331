"""DraftFeed: one WatchDraft stream per watched draft per edge process, fanned out to many
subscribers (the /ws overlay clients, GraphQL subscriptions).

Why: ten thousand overlay viewers of one draft must cost the draft service one stream, and the
edge one protobuf -> JSON conversion per event, not one per viewer. So:

- one upstream WatchDraft per draft, opened as the edge itself (its service token) when the first
  subscriber arrives and closed `linger_seconds` after the last one leaves (a reload of an
  overlay page does not tear the stream down and build it again);
- every upstream message becomes one immutable FeedEvent (the protobuf message, the /ws JSON
  bytes and its WebSocket frame, all built once) put in every subscriber's bounded queue, or
  handed straight to a subscriber's `direct` callback (the /ws overlay writes the frame to its
  socket there) when that subscriber is idle with nothing queued: then no task is woken per
  subscriber and event, which with 10,000 overlays of one draft was most of the edge's CPU;
- a subscriber whose queue is full is not waited for: its queue is dropped and it is
  resynchronised with a fresh snapshot (GetDraft, at most one call per draft and sequence),
  then continues live; nobody else is delayed;
- a subscriber may resume after the last sequence it saw: it gets the kept events after it (the
  draft's sequence steps since the stream's last snapshot, and the latest suggestions), or a
  snapshot when those do not reach back far enough;
- when the upstream stream breaks (a replica shutting down, a network cut) the feed reconnects,
  to the next address given (any replica serves any draft), resuming after the last sequence it
  saw; subscribers notice nothing but a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format

from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from gateway.ws_protocol import ws_text_frame
from services.common.channels import open_channel
from services.common.service_tokens import TokenSource

log = logging.getLogger(__name__)

# The /ws `type` of each WatchDraftResponse event (docs/overlay-protocol.md).
EVENT_TYPES = {
    "snapshot": "snapshot",
    "action_applied": "action",
    "suggestions_updated": "suggestions",
    "completed": "completed",
    "ban_skipped": "ban_skipped",
    "captain_joined": "captain_joined",
}
# Events that are a step of the draft's sequence, replayed on resume.
_STEPS = frozenset({"action_applied", "ban_skipped", "completed"})
# Events after which a subscriber has seen the draft up to their sequence.
_ADVANCING = _STEPS | {"snapshot"}
# Upstream failures that reconnecting will not cure: the subscribers are told and the feed ends.
_FINAL_CODES = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


@dataclass(frozen=True)
class FeedEvent:
    """One WatchDraft message, converted once: the protobuf message and its /ws JSON (bytes, the
    same as text, so that a /ws text frame costs no per-subscriber decode, and as a complete
    WebSocket text frame that can be written as is to every overlay's socket)."""

    sequence: int
    kind: str
    message: pb.WatchDraftResponse
    json: bytes
    text: str
    frame: bytes


class FeedError(Exception):
    """The feed cannot serve the draft (unknown draft, refused, or the draft service is gone
    for longer than the feed retries). `code` is the gRPC status code name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def feed_event(draft_id: str, message: pb.WatchDraftResponse) -> FeedEvent:
    """Convert one WatchDraft message to its FeedEvent (the only place the JSON is built)."""
    kind = message.WhichOneof("event") or "unknown"
    body = getattr(message, kind) if kind != "unknown" else None
    payload: dict[str, Any] = {
        "type": EVENT_TYPES.get(kind, kind),
        "draft_id": draft_id,
        "sequence": message.sequence,
        "data": (
            {}
            if body is None
            else json_format.MessageToDict(body, preserving_proto_field_name=True)
        ),
    }
    text = json.dumps(payload, separators=(",", ":"))
    data = text.encode()
    return FeedEvent(message.sequence, kind, message, data, text, ws_text_frame(data))


# Delivers an event to a subscriber without its iterator (True), or cannot right now (False: the
# event is queued for the iterator instead).
DirectDelivery = Callable[[FeedEvent], bool]


@dataclass(eq=False)
class _Subscriber:
    queue: deque[FeedEvent | FeedError | None]
    direct: DirectDelivery | None = None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the queue overflowed: the next read is a fresh snapshot.
    resync: bool = False
    resyncs: int = 0
    # The iterator is parked waiting for an event (so a direct delivery cannot overtake an
    # event it is still handing out).
    idle: bool = False
    # The sequence of the last snapshot or step this subscriber got.
    last: int | None = None

    def skips(self, event: FeedEvent) -> bool:
        """Whether `event` is already covered by the snapshot this subscriber got."""
        last = self.last
        return (
            last is not None
            and event.sequence <= last
            and event.kind in ("action_applied", "ban_skipped")
        )

    def got(self, event: FeedEvent) -> None:
        if event.kind in _ADVANCING:
            self.last = event.sequence


class _DraftStream:
    """The one upstream WatchDraft of a draft and its subscribers."""

    def __init__(self, feed: DraftFeed, draft_id: str) -> None:
        self.feed = feed
        self.draft_id = draft_id
        self.subscribers: set[_Subscriber] = set()
        # The last snapshot the stream received and the sequence steps since (in order).
        self.base: FeedEvent | None = None
        self.steps: list[FeedEvent] = []
        self.suggestions: FeedEvent | None = None
        self.last_sequence: int | None = None
        self.completed: FeedEvent | None = None
        self.failure: FeedError | None = None
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.linger: asyncio.Task[None] | None = None
        self._fresh: dict[int, asyncio.Task[FeedEvent]] = {}

    @property
    def ended(self) -> bool:
        return self.completed is not None or self.failure is not None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"draft-feed:{self.draft_id}")

    async def stop(self) -> None:
        for task in (self.task, self.linger, *self._fresh.values()):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for task in (self.task, *self._fresh.values()):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -- upstream ------------------------------------------------------------------------------

    async def _run(self) -> None:
        feed = self.feed
        backoff = feed.first_backoff
        failed_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            request = pb.WatchDraftRequest(draft_id=self.draft_id)
            if self.last_sequence is not None:
                request.resume_after_sequence = self.last_sequence
            stub = pb_grpc.DraftServiceStub(feed._next_channel())
            try:
                feed.streams_opened += 1
                call = stub.WatchDraft(request, metadata=await feed._metadata())
                async for message in call:
                    failed_since = None
                    backoff = feed.first_backoff
                    self._on_message(message)
                if self.completed is not None:
                    return
                # Ended OK without `completed`: a replica that said nothing more; reconnect.
            except grpc.aio.AioRpcError as error:
                if error.code() in _FINAL_CODES:
                    self._fail(FeedError(error.code().name, error.details() or ""))
                    return
                log.info(
                    "draft %s: WatchDraft broke (%s), reconnecting", self.draft_id, error.code()
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the token source (auth down), a bad channel
                log.warning("draft %s: WatchDraft could not be opened: %s", self.draft_id, error)
            now = loop.time()
            failed_since = failed_since if failed_since is not None else now
            if now - failed_since > feed.give_up_seconds:
                self._fail(FeedError("UNAVAILABLE", "the draft service cannot be reached"))
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, feed.max_backoff)

    def _on_message(self, message: pb.WatchDraftResponse) -> None:
        event = feed_event(self.draft_id, message)
        kind = event.kind
        if kind == "snapshot":
            self.base, self.steps, self.suggestions = event, [], None
        elif kind in _STEPS:
            self.steps.append(event)
            if len(self.steps) > self.feed.keep_events:
                # Too long a history to replay: a resuming subscriber gets a fresh snapshot.
                self.base = None
                del self.steps[: len(self.steps) - self.feed.keep_events]
        elif kind == "suggestions_updated":
            self.suggestions = event
        if kind != "captain_joined":
            self.last_sequence = event.sequence
        if kind == "completed":
            self.completed = event
        self.ready.set()
        # `completed` always goes through the iterators: it ends them.
        direct_ok = kind != "completed"
        for subscriber in self.subscribers:
            direct = subscriber.direct
            if (
                direct_ok
                and direct is not None
                and subscriber.idle
                and not subscriber.queue
                and not subscriber.resync
            ):
                if subscriber.skips(event):
                    continue
                if direct(event):
                    subscriber.got(event)
                    continue
            self._offer(subscriber, event)

    def _offer(self, subscriber: _Subscriber, item: FeedEvent | FeedError | None) -> None:
        if len(subscriber.queue) >= self.feed.queue_size and isinstance(item, FeedEvent):
            subscriber.queue.clear()
            subscriber.resync = True
            subscriber.resyncs += 1
            self.feed.resyncs += 1
        subscriber.queue.append(item)
        subscriber.wakeup.set()

    def _fail(self, failure: FeedError) -> None:
        self.failure = failure
        self.ready.set()
        for subscriber in self.subscribers:
            subscriber.queue.append(failure)
            subscriber.wakeup.set()

    # -- subscribers ---------------------------------------------------------------------------

    def backlog(self, resume_after: int | None) -> list[FeedEvent] | None:
        """What a new subscriber gets first: the kept events after `resume_after` (then the
        latest suggestions), or the last snapshot with the steps since; None when a fresh
        snapshot is needed (the kept history does not reach back far enough)."""
        if self.base is None and not self.steps:
            return []  # nothing received yet: everything reaches it live
        covered_from = self.base.sequence if self.base is not None else None
        if covered_from is None and self.steps:
            covered_from = self.steps[0].sequence - 1
        if (
            resume_after is not None
            and covered_from is not None
            and self.last_sequence is not None
            and covered_from <= resume_after <= self.last_sequence
        ):
            backlog = [e for e in self.steps if e.sequence > resume_after]
        elif self.base is not None:
            backlog = [self.base, *self.steps]
        else:
            return None
        if self.suggestions is not None:
            at = len(backlog) - (1 if backlog and backlog[-1].kind == "completed" else 0)
            backlog.insert(at, self.suggestions)
        return backlog

    async def fresh_snapshot(self) -> FeedEvent:
        """A snapshot of the draft as it stands (GetDraft as the edge), one call per sequence
        however many subscribers need it."""
        key = self.last_sequence if self.last_sequence is not None else -1
        task = self._fresh.get(key)
        if task is None:
            task = self._fresh[key] = asyncio.create_task(self._get_snapshot())
            for old in [k for k in self._fresh if k != key]:
                if self._fresh[old].done():
                    del self._fresh[old]
        try:
            return await asyncio.shield(task)
        except Exception:
            self._fresh.pop(key, None)
            raise

    async def _get_snapshot(self) -> FeedEvent:
        feed = self.feed
        stub = pb_grpc.DraftServiceStub(feed._next_channel())
        try:
            response = await stub.GetDraft(
                pb.GetDraftRequest(draft_id=self.draft_id),
                metadata=await feed._metadata(),
                timeout=feed.timeout_seconds,
            )
        except grpc.aio.AioRpcError as error:
            raise FeedError(error.code().name, error.details() or "") from error
        feed.snapshots_fetched += 1
        message = pb.WatchDraftResponse(sequence=response.draft.sequence, snapshot=response.draft)
        return feed_event(self.draft_id, message)


def _after_snapshot(event: FeedEvent, snapshot: FeedEvent) -> bool:
    """Whether a queued event still tells a subscriber resynchronised at `snapshot` anything."""
    if event.kind == "completed":
        return True
    if event.kind in ("suggestions_updated", "captain_joined"):
        return event.sequence >= snapshot.sequence
    return event.sequence > snapshot.sequence


class DraftFeed:
    """The edge's shared WatchDraft streams (see the module docstring)."""

    def __init__(
        self,
        draft_addrs: Sequence[str],
        tokens: TokenSource,
        *,
        queue_size: int = 64,
        linger_seconds: float = 5.0,
        keep_events: int = 256,
        timeout_seconds: float = 2.0,
        first_backoff: float = 0.1,
        max_backoff: float = 2.0,
        give_up_seconds: float = 30.0,
        channels: Sequence[grpc.aio.Channel] | None = None,
    ) -> None:
        if not draft_addrs and not channels:
            raise ValueError("DraftFeed needs at least one draft service address")
        self._owned = channels is None
        self._channels = list(channels or [open_channel(a) for a in draft_addrs])
        self._rotation = itertools.cycle(range(len(self._channels)))
        self._tokens = tokens
        self.queue_size = queue_size
        self.linger_seconds = linger_seconds
        self.keep_events = keep_events
        self.timeout_seconds = timeout_seconds
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.give_up_seconds = give_up_seconds
        self._streams: dict[str, _DraftStream] = {}
        self._closed = False
        # Counters for tests and metrics.
        self.streams_opened = 0
        self.snapshots_fetched = 0
        self.resyncs = 0

    def _next_channel(self) -> grpc.aio.Channel:
        return self._channels[next(self._rotation)]

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        return await self._tokens.metadata()

    def watched(self) -> dict[str, int]:
        """Draft id -> number of subscribers, for the drafts with an upstream stream."""
        return {draft_id: len(s.subscribers) for draft_id, s in self._streams.items()}

    async def close(self) -> None:
        """Stop every stream (subscribers' iterators end) and close the channels."""
        self._closed = True
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            for subscriber in stream.subscribers:
                subscriber.queue.append(None)
                subscriber.wakeup.set()
        await asyncio.gather(*(s.stop() for s in streams))
        if self._owned:
            await asyncio.gather(*(c.close() for c in self._channels))

    def subscribe(
        self, draft_id: str, resume_after: int | None, direct: DirectDelivery | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[FeedEvent]]:
        """Join the draft's shared stream: an async iterator of its events, from the kept
        events after `resume_after` (or a snapshot) on; it ends after `completed`, and raises
        FeedError when the draft cannot be served. Leaving the `async with` unsubscribes.

        With `direct`, an event that arrives while the iterator waits with nothing queued is
        given to `direct` instead, in the feed's own call (no task woken); if it returns False
        the event is queued for the iterator as usual. The order of events is kept either way,
        and `completed`, failures and resynchronisations always come through the iterator."""
        return self._subscription(draft_id, resume_after, direct)

    @asynccontextmanager
    async def _subscription(
        self, draft_id: str, resume_after: int | None, direct: DirectDelivery | None
    ) -> AsyncIterator[AsyncIterator[FeedEvent]]:
        if self._closed:
            raise FeedError("UNAVAILABLE", "the feed is closed")
        stream = self._streams.get(draft_id)
        if stream is None or (stream.failure is not None):
            stream = self._streams[draft_id] = _DraftStream(self, draft_id)
            stream.start()
        if stream.linger is not None:
            stream.linger.cancel()
            stream.linger = None
        subscriber = _Subscriber(deque(), direct)
        backlog = stream.backlog(resume_after)
        if backlog is None:
            subscriber.resync = True
        else:
            subscriber.queue.extend(backlog)
        if stream.failure is not None:
            subscriber.queue.append(stream.failure)
        stream.subscribers.add(subscriber)
        try:
            yield self._events(stream, subscriber)
        finally:
            stream.subscribers.discard(subscriber)
            if not stream.subscribers and self._streams.get(draft_id) is stream:
                stream.linger = asyncio.create_task(self._linger(stream))

    async def _linger(self, stream: _DraftStream) -> None:
        await asyncio.sleep(self.linger_seconds)
        if not stream.subscribers and self._streams.get(stream.draft_id) is stream:
            del self._streams[stream.draft_id]
            stream.linger = None
            await stream.stop()

    async def _events(
        self, stream: _DraftStream, subscriber: _Subscriber
    ) -> AsyncIterator[FeedEvent]:
        while True:
            if subscriber.resync:
                subscriber.resync = False
                snapshot = await stream.fresh_snapshot()
                pending = [
                    item
                    for item in subscriber.queue
                    if not isinstance(item, FeedEvent) or _after_snapshot(item, snapshot)
                ]
                subscriber.queue.clear()
                subscriber.queue.extend(pending)
                subscriber.last = snapshot.sequence
                yield snapshot
                if snapshot.message.snapshot.completed and not any(
                    isinstance(i, FeedEvent) and i.kind == "completed" for i in pending
                ):
                    if stream.completed is not None:
                        yield stream.completed
                    return
                continue
            if not subscriber.queue:
                subscriber.wakeup.clear()
                subscriber.idle = True
                try:
                    await subscriber.wakeup.wait()
                finally:
                    subscriber.idle = False
                continue
            item = subscriber.queue.popleft()
            if item is None:
                return
            if isinstance(item, FeedError):
                raise item
            if subscriber.skips(item):
                continue
            subscriber.got(item)
            yield item
            if item.kind == "completed":
                return
