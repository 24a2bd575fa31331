"""DraftFeed against a DraftService on a real grpc.aio server (port 0) whose WatchDraft the test
drives: one upstream stream per draft whatever the number of subscribers, each event converted
once, a slow subscriber resynchronised without delaying the others, resume by sequence,
reconnection with resume after a broken stream, and the stream closed after the last
subscriber leaves.

The upstream is a stand-in for the draft service's streaming contract (the real service's
WatchDraft is covered by test_draft_service.py); the feed is what is under test here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import grpc
import pytest

from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from gateway.draft_feed import DraftFeed, FeedError, FeedEvent
from services.common.service_tokens import StaticToken

DRAFT = "feed-draft-1"


class Upstream(pb_grpc.DraftServiceServicer):
    """A draft service whose event log the test appends to."""

    def __init__(self) -> None:
        self.log: list[pb.WatchDraftResponse] = []
        self.sequence = 0
        self.changed = asyncio.Condition()
        self.requests: list[pb.WatchDraftRequest] = []
        self.open_streams = 0
        self.metadata: list[dict[str, str]] = []
        self.break_at: int | None = None

    def draft(self) -> pb.Draft:
        return pb.Draft(draft_id=DRAFT, sequence=self.sequence, patch="7.41")

    async def act(self, hero_id: int, *, suggestions: bool = False) -> None:
        async with self.changed:
            self.sequence += 1
            action = c.DraftAction(
                order=self.sequence - 1,
                kind=c.DRAFT_ACTION_KIND_BAN,
                side=c.TEAM_SIDE_RADIANT,
                hero_id=hero_id,
            )
            self.log.append(
                pb.WatchDraftResponse(
                    sequence=self.sequence,
                    action_applied=pb.DraftActionApplied(action=action, sequence=self.sequence),
                )
            )
            if suggestions:
                self.log.append(
                    pb.WatchDraftResponse(
                        sequence=self.sequence,
                        suggestions_updated=pb.SuggestionsUpdated(win_probability=0.5),
                    )
                )
            self.changed.notify_all()

    async def cut(self) -> None:
        """Break every open stream (as a replica shutting down would)."""
        async with self.changed:
            self.break_at = len(self.log)
            self.changed.notify_all()

    def _moved(self, position: int, cut_seen: int | None) -> bool:
        return len(self.log) > position or self.break_at != cut_seen

    async def GetDraft(self, request: pb.GetDraftRequest, context: Any) -> pb.GetDraftResponse:
        return pb.GetDraftResponse(draft=self.draft())

    async def WatchDraft(
        self, request: pb.WatchDraftRequest, context: Any
    ) -> AsyncIterator[pb.WatchDraftResponse]:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        if request.draft_id != DRAFT:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such draft")
        self.open_streams += 1
        try:
            if request.HasField("resume_after_sequence"):
                after = request.resume_after_sequence
                position = next(
                    (i for i, m in enumerate(self.log) if m.sequence > after), len(self.log)
                )
            else:
                # The live position is taken with the snapshot, before yielding it: the generator
                # resumes after the snapshot is written, and by then the test may have acted on
                # its arrival (under load it did, and those events were never sent).
                position = len(self.log)
                yield pb.WatchDraftResponse(sequence=self.sequence, snapshot=self.draft())
            cut_seen = self.break_at
            while True:
                async with self.changed:
                    await self.changed.wait_for(partial(self._moved, position, cut_seen))
                    if self.break_at != cut_seen:
                        self.break_at = None
                        await context.abort(grpc.StatusCode.UNAVAILABLE, "replica shutting down")
                    pending = self.log[position:]
                    position = len(self.log)
                for message in pending:
                    yield message
        finally:
            self.open_streams -= 1


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    server = grpc.aio.server()
    service = Upstream()  # type: ignore[abstract]
    pb_grpc.add_DraftServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def take(events: AsyncIterator[FeedEvent], count: int) -> list[FeedEvent]:
    out: list[FeedEvent] = []
    async with asyncio.timeout(5):
        while len(out) < count:
            out.append(await anext(events))
    return out


async def wait_until(check: Any, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 - polls state owned by grpc's server tasks
            await asyncio.sleep(0.01)


async def test_one_upstream_stream_per_draft_and_each_event_converted_once(
    upstream: tuple[Upstream, str],
) -> None:
    service, address = upstream
    feed = DraftFeed([address], StaticToken("edge-service-token"), linger_seconds=0.1)
    try:
        async with contextlib_nested(feed, 200) as streams:
            firsts = await asyncio.gather(*(take(s, 1) for s in streams))
            assert {f[0].kind for f in firsts} == {"snapshot"}
            await service.act(11, suggestions=True)
            await service.act(12)
            received = await asyncio.gather(*(take(s, 3) for s in streams))
        assert feed.streams_opened == 1
        assert len(service.requests) == 1
        assert service.metadata[0]["authorization"] == "Bearer edge-service-token"
        reference = received[0]
        assert [e.kind for e in reference] == [
            "action_applied",
            "suggestions_updated",
            "action_applied",
        ]
        assert [e.sequence for e in reference] == [1, 1, 2]
        # The same objects reach every subscriber: converted and serialized once.
        for events in received:
            assert all(a is b for a, b in zip(events, reference, strict=True))
        first = reference[0]
        assert first.json.startswith(b'{"type":"action","draft_id":"feed-draft-1","sequence":1')
    finally:
        await feed.close()


class contextlib_nested:  # noqa: N801 - reads like the contextlib helper it stands for
    """`count` subscriptions to DRAFT, entered together."""

    def __init__(self, feed: DraftFeed, count: int, resume_after: int | None = None) -> None:
        self.managers = [feed.subscribe(DRAFT, resume_after) for _ in range(count)]

    async def __aenter__(self) -> list[AsyncIterator[FeedEvent]]:
        return [await m.__aenter__() for m in self.managers]

    async def __aexit__(self, *exc: object) -> None:
        for m in self.managers:
            await m.__aexit__(None, None, None)


async def test_a_slow_subscriber_is_resynchronised_and_never_delays_the_others(
    upstream: tuple[Upstream, str],
) -> None:
    service, address = upstream
    feed = DraftFeed([address], StaticToken("t"), queue_size=4, linger_seconds=0.1)
    try:
        async with feed.subscribe(DRAFT, None) as fast, feed.subscribe(DRAFT, None) as slow:
            assert (await take(fast, 1))[0].kind == "snapshot"
            for hero in range(1, 21):
                await service.act(hero)
            # The fast one gets all 20 in order while the slow one reads nothing.
            got = await take(fast, 20)
            assert [e.sequence for e in got] == list(range(1, 21))
            assert feed.resyncs >= 1
            # The slow one starts over from a fresh snapshot of the current draft.
            first = (await take(slow, 1))[0]
            assert first.kind == "snapshot"
            assert first.sequence == 20
            assert feed.snapshots_fetched == 1
            await service.act(99)
            nxt = (await take(slow, 1))[0]
            assert (nxt.kind, nxt.sequence) == ("action_applied", 21)
            assert (await take(fast, 1))[0].sequence == 21
    finally:
        await feed.close()


async def test_resume_after_a_sequence_replays_the_kept_events(
    upstream: tuple[Upstream, str],
) -> None:
    service, address = upstream
    feed = DraftFeed([address], StaticToken("t"), linger_seconds=0.5)
    try:
        async with feed.subscribe(DRAFT, None) as first:
            await take(first, 1)
            for hero in range(1, 6):
                await service.act(hero, suggestions=hero == 5)
            await take(first, 6)
            async with feed.subscribe(DRAFT, 3) as resumed:
                replay = await take(resumed, 3)
                assert [(e.kind, e.sequence) for e in replay] == [
                    ("action_applied", 4),
                    ("action_applied", 5),
                    ("suggestions_updated", 5),
                ]
            # Resuming from before anything this feed kept (or from the future) gets a snapshot.
            async with feed.subscribe(DRAFT, 99) as future:
                assert (await take(future, 1))[0].kind == "snapshot"
        assert feed.streams_opened == 1
    finally:
        await feed.close()


async def test_a_broken_upstream_is_reopened_with_resume_and_subscribers_see_no_gap(
    upstream: tuple[Upstream, str],
) -> None:
    service, address = upstream
    feed = DraftFeed([address, address], StaticToken("t"), first_backoff=0.01)
    try:
        async with feed.subscribe(DRAFT, None) as events:
            await take(events, 1)
            await service.act(1)
            await take(events, 1)
            await service.cut()
            await wait_until(lambda: len(service.requests) == 2)
            await service.act(2)
            await service.act(3)
            got = await take(events, 2)
            assert [(e.kind, e.sequence) for e in got] == [
                ("action_applied", 2),
                ("action_applied", 3),
            ]
        assert service.requests[1].resume_after_sequence == 1
    finally:
        await feed.close()


async def test_the_stream_closes_after_the_last_subscriber_leaves(
    upstream: tuple[Upstream, str],
) -> None:
    service, address = upstream
    feed = DraftFeed([address], StaticToken("t"), linger_seconds=0.05)
    try:
        async with feed.subscribe(DRAFT, None) as events:
            await take(events, 1)
            assert service.open_streams == 1
        # Within the linger a new subscriber reuses the stream.
        async with feed.subscribe(DRAFT, None) as events:
            await take(events, 1)
        assert feed.streams_opened == 1
        await wait_until(lambda: service.open_streams == 0 and not feed.watched())
    finally:
        await feed.close()


async def test_an_unknown_draft_fails_its_subscribers(upstream: tuple[Upstream, str]) -> None:
    _, address = upstream
    feed = DraftFeed([address], StaticToken("t"))
    try:
        async with feed.subscribe("no-such-draft", None) as events:
            with pytest.raises(FeedError) as raised:
                await take(events, 1)
        assert raised.value.code == "NOT_FOUND"
    finally:
        await feed.close()


async def test_direct_delivery_while_idle_and_the_iterator_when_it_refuses(
    upstream: tuple[Upstream, str],
) -> None:
    service, address = upstream
    feed = DraftFeed([address], StaticToken("t"))
    delivered: list[FeedEvent] = []
    accepting = True

    def direct(event: FeedEvent) -> bool:
        if accepting:
            delivered.append(event)
        return accepting

    try:
        async with (
            feed.subscribe(DRAFT, None) as plain,
            feed.subscribe(DRAFT, None, direct) as events,
        ):
            # While nobody waits on its iterator, an event is queued for it.
            assert (await take(plain, 1))[0].kind == "snapshot"
            assert (await take(events, 1))[0].kind == "snapshot"
            assert not delivered
            reader = asyncio.create_task(take(events, 2))
            await asyncio.sleep(0.05)  # the iterator is parked, waiting
            await service.act(1, suggestions=True)
            await wait_until(lambda: len(delivered) == 2)
            assert [(e.kind, e.sequence) for e in delivered] == [
                ("action_applied", 1),
                ("suggestions_updated", 1),
            ]
            # A final, unmasked text frame around the JSON (the client side of test_overlay_ws
            # parses it for real).
            assert delivered[0].frame[0] == 0x81
            assert delivered[0].frame.endswith(delivered[0].json)
            assert not reader.done()
            assert [e.sequence for e in await take(plain, 2)] == [1, 1]
            # Refused (the socket is backed up): queued for the iterator, in order.
            accepting = False
            await service.act(2)
            await service.act(3)
            got = await reader
            assert [(e.kind, e.sequence) for e in got] == [
                ("action_applied", 2),
                ("action_applied", 3),
            ]
            assert len(delivered) == 2
    finally:
        await feed.close()
