"""The draft store against a real Redis: compare-and-set commits, event ids and replay, deadlines,
expiry and what an outage looks like to callers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.common.dota import Side, SkillBracket
from services.common.dota_constants import load_constants
from services.common.errors import DependencyUnavailable
from services.draft.drafts import Drafts, NewDraft
from services.draft.errors import VersionMismatch
from services.draft.modes import ActionKind, DraftMode
from services.draft.repo import DraftExists, DraftStore, StoredDraft, epoch_ms, text
from services.draft.rooms import Actor, CreatorSeat
from services.draft.rules import Action
from tests.conftest import free_port

PREFIX = "counterpick:test:draft"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: aioredis.Redis) -> DraftStore:
    return DraftStore(redis, prefix=PREFIX)


def in_(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def doc(step: int) -> dict[str, Any]:
    return {"state": {"step": step}, "room": {"seats": ["radiant", "dire"]}}


async def test_create_load_commit_round_trip(store: DraftStore) -> None:
    await store.create("d1", doc(0), expires_at=in_(600), deadline=in_(30), events=[(0, {"k": 0})])
    loaded = await store.load("d1")
    assert loaded is not None
    assert (loaded.document, loaded.revision) == (doc(0), 1)

    assert await store.commit(
        "d1",
        expected_revision=1,
        document=doc(1),
        events=[(1, {"k": 1}), (1, {"k": "1b"})],
        expires_at=in_(600),
        deadline=in_(30),
    )
    loaded = await store.load("d1")
    assert loaded is not None
    assert (loaded.document, loaded.revision) == (doc(1), 2)
    # A commit against the old revision changes nothing.
    assert not await store.commit(
        "d1",
        expected_revision=1,
        document=doc(9),
        events=[(9, {"k": 9})],
        expires_at=in_(600),
        deadline=None,
    )
    assert await store.load("d1") == loaded
    assert await store.last_event_id("d1") == "1-1"

    with pytest.raises(DraftExists):
        await store.create("d1", doc(5), expires_at=in_(600), deadline=None)
    assert await store.load("d1") == loaded
    assert await store.load("unknown") is None


async def test_concurrent_commits_with_one_revision_admit_exactly_one(store: DraftStore) -> None:
    await store.create("race", doc(0), expires_at=in_(600), deadline=None)
    outcomes = await asyncio.gather(
        *(
            store.commit(
                "race",
                expected_revision=1,
                document=doc(n),
                events=[(1, {"writer": n})],
                expires_at=in_(600),
                deadline=None,
            )
            for n in range(20)
        )
    )
    assert outcomes.count(True) == 1
    winner = outcomes.index(True)
    loaded = await store.load("race")
    assert loaded is not None
    assert (loaded.document, loaded.revision) == (doc(winner), 2)
    events = await store.events_after("race", 0)
    assert events is not None
    assert [event.payload for event in events] == [{"writer": winner}]


async def test_commit_on_a_missing_or_expired_draft_is_refused(
    store: DraftStore, redis: aioredis.Redis
) -> None:
    assert not await store.commit(
        "ghost", expected_revision=1, document=doc(1), events=[], expires_at=in_(60), deadline=None
    )
    await store.create("brief", doc(0), expires_at=in_(0.05), deadline=None)
    await asyncio.sleep(0.15)
    assert await store.load("brief") is None
    assert not await store.commit(
        "brief", expected_revision=1, document=doc(1), events=[], expires_at=in_(60), deadline=None
    )
    # The refused commits wrote nothing: no document, stream or deadline appeared.
    assert await redis.keys(f"{PREFIX}:*") == []


async def test_events_get_sequence_ids_in_order(store: DraftStore) -> None:
    await store.create(
        "ids", doc(0), expires_at=in_(600), deadline=None, events=[(0, {"n": 0}), (0, {"n": 1})]
    )
    assert await store.commit(
        "ids",
        expected_revision=1,
        document=doc(1),
        events=[(1, {"n": 2}), (3, {"n": 3}), (3, {"n": 4})],
        expires_at=in_(600),
        deadline=None,
    )
    events = await store.events_after("ids", -1)
    assert events is not None
    assert [(e.event_id, e.sequence, e.payload["n"]) for e in events] == [
        ("0-1", 0, 0),  # 0-0 is not a valid entry id, so sequence 0 starts at 0-1
        ("0-2", 0, 1),
        ("1-0", 1, 2),
        ("3-0", 3, 3),
        ("3-1", 3, 4),
    ]
    # Sequences that go backwards are a caller bug, refused before anything is written.
    with pytest.raises(ValueError, match="behind the stream"):
        await store.commit(
            "ids",
            expected_revision=2,
            document=doc(2),
            events=[(2, {"n": 5})],
            expires_at=in_(600),
            deadline=None,
        )
    with pytest.raises(ValueError, match="non-decreasing"):
        await store.commit(
            "ids",
            expected_revision=2,
            document=doc(2),
            events=[(5, {}), (4, {})],
            expires_at=in_(600),
            deadline=None,
        )
    loaded = await store.load("ids")
    assert loaded is not None
    assert loaded.revision == 2
    assert await store.last_event_id("ids") == "3-1"


async def test_append_refuses_stale_sequences(store: DraftStore) -> None:
    await store.create("app", doc(0), expires_at=in_(600), deadline=None, events=[(2, {"a": 1})])
    appended = await store.append("app", 2, {"suggest": [1, 2]})
    assert appended is not None
    assert (appended.event_id, appended.sequence) == ("2-1", 2)
    later = await store.append("app", 4, {"suggest": [3]})
    assert later is not None
    assert later.event_id == "4-0"
    assert await store.append("app", 3, {"suggest": [9]}) is None  # a newer action happened
    assert await store.append("gone", 0, {}) is None
    assert await store.last_event_id("app") == "4-0"


async def test_append_keeps_the_ttl(store: DraftStore, redis: aioredis.Redis) -> None:
    await store.create("ttl", doc(0), expires_at=in_(100), deadline=None)
    assert await store.append("ttl", 0, {}) is not None
    assert 90_000 < await redis.pttl(store.events_key("ttl")) <= 100_000


async def test_events_after_replays_exactly_the_newer_events(store: DraftStore) -> None:
    await store.create("log", doc(0), expires_at=in_(600), deadline=None)
    assert await store.events_after("log", -1) == []
    revision = 1
    for sequence in range(1, 6):
        assert await store.commit(
            "log",
            expected_revision=revision,
            document=doc(sequence),
            events=[(sequence, {"s": sequence}), (sequence, {"s": sequence, "extra": True})],
            expires_at=in_(600),
            deadline=None,
        )
        revision += 1
    events = await store.events_after("log", 3)
    assert events is not None
    assert [e.event_id for e in events] == ["4-0", "4-1", "5-0", "5-1"]
    assert await store.events_after("log", 5) == []
    assert await store.events_after("gone", 0) is None


async def first_entry_id(redis: aioredis.Redis, key: str) -> str:
    entries = await redis.xrange(key, count=1)
    assert entries
    return text(entries[0][0])


async def test_events_after_is_none_once_trimmed(redis: aioredis.Redis) -> None:
    # MAXLEN ~ trims whole stream nodes (100 entries by default), so write several nodes' worth.
    store = DraftStore(redis, prefix=PREFIX, max_events=10)
    events = [(sequence, {"s": sequence}) for sequence in range(1, 401)]
    await store.create("trim", doc(0), expires_at=in_(600), deadline=None, events=events)
    assert await redis.xlen(store.events_key("trim")) < 400
    assert await store.events_after("trim", 0) is None
    kept = await store.events_after("trim", 395)
    assert kept is not None
    assert [e.sequence for e in kept] == [396, 397, 398, 399, 400]
    first_kept = await first_entry_id(redis, store.events_key("trim"))
    # From the first kept entry on nothing is missing; one before it something is.
    boundary = int(first_kept.split("-")[0])
    full = await store.events_after("trim", boundary - 1)
    assert full is not None
    assert full[0].event_id == first_kept
    assert await store.events_after("trim", boundary - 2) is None


async def test_events_after_from_sequence_zero_after_trimming(redis: aioredis.Redis) -> None:
    store = DraftStore(redis, prefix=PREFIX, max_events=10)
    await store.create("zero", doc(0), expires_at=in_(600), deadline=None)
    revision = 1
    # Sequence 0 carries everything: ids 0-1 .. 0-300, the oldest of them trimmed.
    for chunk in range(3):
        events = [(0, {"n": chunk * 100 + n}) for n in range(100)]
        assert await store.commit(
            "zero",
            expected_revision=revision,
            document=doc(0),
            events=events,
            expires_at=in_(600),
            deadline=None,
        )
        revision += 1
    assert await redis.xlen(store.events_key("zero")) < 300
    assert await store.events_after("zero", -1) is None
    assert await store.events_after("zero", 0) == []


async def test_ttls_follow_expires_at(store: DraftStore, redis: aioredis.Redis) -> None:
    await store.create("ttl", doc(0), expires_at=in_(100), deadline=None, events=[(0, {})])
    for key in (store.document_key("ttl"), store.events_key("ttl")):
        assert 95_000 < await redis.pttl(key) <= 100_000
    expires = in_(1000)
    assert await store.commit(
        "ttl", expected_revision=1, document=doc(1), events=[], expires_at=expires, deadline=None
    )
    for key in (store.document_key("ttl"), store.events_key("ttl")):
        assert await redis.pexpiretime(key) == epoch_ms(expires)


async def test_due_lists_passed_deadlines_until_cleared(
    store: DraftStore, redis: aioredis.Redis
) -> None:
    now = datetime.now(UTC)
    await store.create("late", doc(0), expires_at=in_(600), deadline=now - timedelta(seconds=1))
    await store.create("later", doc(0), expires_at=in_(600), deadline=now + timedelta(seconds=1))
    await store.create("none", doc(0), expires_at=in_(600), deadline=None)
    assert await store.due(now) == ["late"]
    assert await store.due(now + timedelta(seconds=2)) == ["late", "later"]
    assert await store.due(now + timedelta(seconds=2), limit=1) == ["late"]

    assert await store.commit(
        "late", expected_revision=1, document=doc(1), events=[], expires_at=in_(600), deadline=None
    )
    assert await store.due(now + timedelta(seconds=2)) == ["later"]
    # A draft that expired with a pending deadline is dropped from the index, not returned.
    await store.create("dies", doc(0), expires_at=in_(0.05), deadline=now - timedelta(seconds=5))
    await asyncio.sleep(0.15)
    assert await store.due(now + timedelta(seconds=2)) == ["later"]
    assert await redis.zrange(store.deadlines_key, 0, -1) == [b"later"]


async def test_naive_datetimes_are_refused(store: DraftStore) -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        await store.create("naive", doc(0), expires_at=datetime.now(), deadline=None)


async def test_redis_down_is_dependency_unavailable() -> None:
    # No client retries, so each call fails at once instead of at the store's timeout.
    client = aioredis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    store = DraftStore(client, prefix=PREFIX)
    calls: list[Any] = [
        store.ping(),
        store.load("d"),
        store.create("d", doc(0), expires_at=in_(60), deadline=None),
        store.commit(
            "d", expected_revision=1, document=doc(1), events=[], expires_at=in_(60), deadline=None
        ),
        store.append("d", 1, {}),
        store.events_after("d", 0),
        store.last_event_id("d"),
        store.due(datetime.now(UTC)),
    ]
    try:
        for call in calls:
            with pytest.raises(DependencyUnavailable) as caught:
                await call
            assert caught.value.dependency == "redis"
    finally:
        await client.aclose()


class RacingStore(DraftStore):
    """Holds every load until `racers` loads are in, so they all read the same draft: a race
    whose outcome does not depend on scheduling."""

    def __init__(self, redis: aioredis.Redis, racers: int) -> None:
        super().__init__(redis, prefix=PREFIX)
        self.barrier = asyncio.Barrier(racers)
        self.racing = False

    async def load(self, draft_id: str) -> StoredDraft | None:
        loaded = await super().load(draft_id)
        if self.racing:
            self.racing = self.barrier.n_waiting + 1 < self.barrier.parties
            await self.barrier.wait()
        return loaded


async def test_racing_bans_at_a_double_step_ban_one_hero(redis: aioredis.Redis) -> None:
    # Captains Mode 7.40+ opens F F: Radiant bans at steps 0 and 1. Ten bans of one captain
    # without expected_sequence (a double click) that all read step 0 ban one hero, not two;
    # the others learn they lost the race.
    store = RacingStore(redis, racers=10)
    drafts = Drafts(store, load_constants())
    alice = Actor("alice", account_id=1001)
    new = NewDraft(
        mode=DraftMode.CAPTAINS_MODE,
        patch="7.41",
        bracket=SkillBracket.ALL,
        our_side=Side.RADIANT,
        account_id=1001,
        first_pick=Side.RADIANT,
        seat=CreatorSeat.BOTH,
        timers=None,
    )
    document, _ = await drafts.create(alice, new)
    heroes = sorted(load_constants().heroes)
    store.racing = True
    outcomes = await asyncio.gather(
        *(
            drafts.submit(alice, document.draft_id, Action(ActionKind.BAN, Side.RADIANT, hero))
            for hero in heroes[:10]
        ),
        return_exceptions=True,
    )
    assert sum(1 for o in outcomes if not isinstance(o, BaseException)) == 1
    assert all(isinstance(o, VersionMismatch) for o in outcomes if isinstance(o, BaseException))
    stored, _ = await drafts.get(document.draft_id)
    assert stored.state.sequence == 1
